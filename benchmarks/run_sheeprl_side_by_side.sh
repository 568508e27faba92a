#!/usr/bin/env bash
# Update speed side by side, in one run on one machine: sheeprl's DreamerV3 preset S against reverie's Dreamer
# preset s in fp32 and in bf16, both on gymnasium CartPole-v1 vectors, batch 16 x 64, imagination horizon 15,
# OMP_NUM_THREADS=2 (sheeprl ignores its own num_threads on CPU). Prints seconds per update and the ratios.
#
#   benchmarks/run_sheeprl_side_by_side.sh [UPDATES]      # timed updates per system, default 10
#
# Environment:
#   SHEEPRL_PYTHON  interpreter of sheeprl's own virtualenv (default ../venvs/sheeprl/bin/python beside
#                   this repository), made with
#                     python -m venv --system-site-packages VENV
#                     VENV/bin/pip install -c constraints.txt sheeprl==0.8.4   # constraints: torch==2.13.0 ...
#   PYTHON          interpreter that has reverie installed (default: python)
#   OUT_DIR         where the timings, JSON results and sheeprl's logs go (default: a new temporary folder)
#   FLOPS           1 (default) counts the FLOPs of one extra, untimed update of each system; 0 skips it
#   THREADS         OMP_NUM_THREADS for both (default 2, the setting of the earlier results in docs/notes/speed.md)
#   PRECISIONS      reverie precisions to time (default "fp32 bf16"; bf16 is slow on CPUs without native bf16)
#
# Each system drops its first update(s) as warm-up: sheeprl 1 (it cannot run more without more environment
# steps), reverie 2. Check `top` first: timings move a lot when anything else runs on the machine.
set -euo pipefail

UPDATES=${1:-10}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SHEEPRL_PYTHON=${SHEEPRL_PYTHON:-$HERE/../../venvs/sheeprl/bin/python}
PYTHON=${PYTHON:-python}
OUT_DIR=${OUT_DIR:-$(mktemp -d -t side_by_side.XXXXXX)}
FLOPS=${FLOPS:-1}
PRECISIONS=${PRECISIONS:-fp32 bf16}
export OMP_NUM_THREADS=${THREADS:-2}

if ! [[ "$UPDATES" =~ ^[1-9][0-9]*$ ]]; then
    echo "UPDATES must be a positive whole number, got '$UPDATES'" >&2; exit 2
fi
if ! "$SHEEPRL_PYTHON" -c "import sheeprl" 2>/dev/null; then
    echo "sheeprl does not import with SHEEPRL_PYTHON=$SHEEPRL_PYTHON; install it in its own virtualenv (see the" \
         "header of this script) or point SHEEPRL_PYTHON at one" >&2
    exit 2
fi
mkdir -p "$OUT_DIR/sheeprl"

echo "# side by side  $(date '+%Y-%m-%d %H:%M')  $(nproc --all) cpus  $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-)"
echo "# OMP_NUM_THREADS=$OMP_NUM_THREADS  updates=$UPDATES  out=$OUT_DIR  load: $(cut -d' ' -f1-3 /proc/loadavg)"
BF16=$(grep -m1 '^flags' /proc/cpuinfo | grep -o -E 'amx_bf16|avx512_bf16' | tr '\n' ' ' || true)
echo "# native bf16 matmul: ${BF16:-none (no avx512_bf16 / amx_bf16: bf16 is emulated and slower than fp32 here)}"
echo "# busiest processes before the run (anything but this run skews the figures):"
ps -eo pcpu,etime,args --sort=-pcpu | head -6 | cut -c1-120 | sed 's/^/#   /'

# sheeprl trains from iteration 64 (learning_starts=64 and sequences of 64 steps), then does one update per policy
# step (replay_ratio=1): total_steps = 63 + the number of updates wanted.
SHEEPRL_UPDATES=$((1 + UPDATES + (FLOPS == 1 ? 1 : 0)))
TOTAL_STEPS=$((63 + SHEEPRL_UPDATES))
SHEEPRL_ARGS=(exp=dreamer_v3 env=gym env.id=CartPole-v1 algo=dreamer_v3_S fabric.accelerator=cpu
    'algo.cnn_keys.encoder=[]' 'algo.cnn_keys.decoder=[]' 'algo.mlp_keys.encoder=[vector]'
    'algo.mlp_keys.decoder=[vector]' algo.per_rank_batch_size=16 algo.per_rank_sequence_length=64
    env.num_envs=1 env.sync_env=True env.capture_video=False algo.run_test=False algo.learning_starts=64
    algo.replay_ratio=1 "algo.total_steps=$TOTAL_STEPS" buffer.size=10000 checkpoint.every=100000 seed=42)
FLOP_AT=$((FLOPS == 1 ? 2 : 0))    # sheeprl: update 1 is the warm-up, update 2 is counted, the rest are timed

echo
echo "## sheeprl ($SHEEPRL_UPDATES updates: 1 warm-up$([[ $FLOPS == 1 ]] && echo ', 1 FLOP count'), $UPDATES timed)"
echo "\$ cd $OUT_DIR/sheeprl && OMP_NUM_THREADS=$OMP_NUM_THREADS TIMING_OUT=timing.jsonl TIMING_FLOPS=$FLOP_AT" \
     "$SHEEPRL_PYTHON $HERE/sheeprl_timed.py $(printf '%q ' "${SHEEPRL_ARGS[@]}")"
(cd "$OUT_DIR/sheeprl" && TIMING_OUT=timing.jsonl TIMING_FLOPS=$FLOP_AT \
    "$SHEEPRL_PYTHON" "$HERE/sheeprl_timed.py" "${SHEEPRL_ARGS[@]}" > run.log 2>&1) || {
    echo "sheeprl failed; the last lines of $OUT_DIR/sheeprl/run.log:" >&2; tail -20 "$OUT_DIR/sheeprl/run.log" >&2
    exit 1
}
"$PYTHON" "$HERE/sheeprl_timed.py" --summary "$OUT_DIR/sheeprl/timing.jsonl" --skip 1 --json "$OUT_DIR/sheeprl.json"

FLOP_FLAG=()
[[ $FLOPS == 1 ]] && FLOP_FLAG=(--flops)
for PRECISION in $PRECISIONS; do
    echo
    echo "## reverie $PRECISION"
    CMD=("$PYTHON" "$HERE/bench_dreamer_update.py" --precision "$PRECISION" --updates "$UPDATES" --warmup 2 --phases
         "${FLOP_FLAG[@]}" --versus "$OUT_DIR/sheeprl.json" --json "$OUT_DIR/reverie_$PRECISION.json")
    echo "\$ OMP_NUM_THREADS=$OMP_NUM_THREADS $(printf '%q ' "${CMD[@]}")"
    "${CMD[@]}"
done

echo
echo "## summary (x = updates per second relative to sheeprl; the goal is at least 2x)"
REPORTS=()
for PRECISION in $PRECISIONS; do REPORTS+=("$OUT_DIR/reverie_$PRECISION.json"); done
"$PYTHON" "$HERE/bench_dreamer_update.py" --report "$OUT_DIR/sheeprl.json" "${REPORTS[@]}"
echo "# load at the end: $(cut -d' ' -f1-3 /proc/loadavg); results in $OUT_DIR"
