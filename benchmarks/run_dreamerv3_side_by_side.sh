#!/usr/bin/env bash
# Update speed side by side, in one run on one machine: the official JAX DreamerV3 (danijar/dreamerv3) at its
# size1m and size12m configs against reverie's Dreamer at the same parameter count, both on dm_control
# cartpole-swingup state vectors, batch 16 x 64, imagination horizon 15, fp32. Prints seconds per update and the
# ratio official / reverie (above 1: reverie is faster).
#
#   benchmarks/run_dreamerv3_side_by_side.sh [SIZES] [UPDATES]   # SIZES default "size1m size12m", UPDATES 6
#
# Size pairs (parameters of world model + actor + critic): the official size1m (0.64M) against reverie's preset
# `s` with deter 320, hidden 64, 32 x 4 latents, units 64 (0.644M); size12m (9.72M) against reverie's `s`
# (9.73M). The official RSSM has a block-diagonal GRU (8 blocks), reverie a dense one, so equal parameters
# mean equal widths only roughly; the parameter count is what is held equal. The official actor learns by
# REINFORCE for continuous actions too (its imag_loss: logp(sg(action)) * sg(advantage), imagined features under
# stop-gradient), so reverie runs with behavior.actor_grad=reinforce: the same estimator, the same work (reverie's
# default for continuous actions, backpropagation through the dynamics, costs a backward pass through imagination).
#
# Environment:
#   DV3_PYTHON   interpreter of the official code's own virtualenv (default ../venvs/dv3/bin/python beside this
#                repository), made with
#                  python -m venv VENV && VENV/bin/pip install -r dv3_requirements.txt   (jax 0.4.33 CPU)
#   DV3_SRC      a checkout of danijar/dreamerv3 at e3f02248693a79dc8b0ebd62c93683888ddaccfe
#                (default ../peers/dreamerv3 beside this repository); never a dependency of reverie
#   DV3_TIMER    the timing harness that imports the official code unchanged and times its agent.train calls
#                (default ../shared/peers/dreamerv3_timed.py beside this repository)
#   PYTHON       interpreter that has reverie installed (default: python)
#   OUT_DIR      where the JSON results and logs go (default: a new temporary folder)
#   THREADS      OMP_NUM_THREADS for reverie (default 2; XLA uses every core on its own)
#   PRECISION    fp32 (default) or bf16, for both systems (the official code's own default is bf16)
#
# Each system drops its first 2 updates as warm-up; the official code's XLA compile time is reported apart.
# Check `top` first: timings move a lot when anything else runs on the machine.
set -euo pipefail

SIZES=${1:-"size1m size12m"}
UPDATES=${2:-6}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DV3_PYTHON=${DV3_PYTHON:-$HERE/../../venvs/dv3/bin/python}
DV3_SRC=${DV3_SRC:-$HERE/../../peers/dreamerv3}
DV3_TIMER=${DV3_TIMER:-$HERE/../../shared/peers/dreamerv3_timed.py}
PYTHON=${PYTHON:-python}
OUT_DIR=${OUT_DIR:-$(mktemp -d -t dv3_side_by_side.XXXXXX)}
export OMP_NUM_THREADS=${THREADS:-2}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}   # as the reverie command sets it: spinning threads collapse under load
export MUJOCO_GL=${MUJOCO_GL:-egl}
PRECISION=${PRECISION:-fp32}
[[ "$PRECISION" == fp32 || "$PRECISION" == bf16 ]] || { echo "PRECISION must be fp32 or bf16, got '$PRECISION'" >&2; exit 2; }

if ! [[ "$UPDATES" =~ ^[1-9][0-9]*$ ]]; then
    echo "UPDATES must be a positive whole number, got '$UPDATES'" >&2; exit 2
fi
if ! DV3_SRC=$DV3_SRC "$DV3_PYTHON" -c "import sys; sys.path.insert(0, '$DV3_SRC'); import jax, embodied, dreamerv3" \
        2>/dev/null; then
    echo "the official DreamerV3 does not import with DV3_PYTHON=$DV3_PYTHON and DV3_SRC=$DV3_SRC; see this" \
         "script's header" >&2
    exit 2
fi
[[ -f "$DV3_TIMER" ]] || { echo "no timing harness at DV3_TIMER=$DV3_TIMER" >&2; exit 2; }
mkdir -p "$OUT_DIR"

echo "# dreamerv3 side by side  $(date '+%Y-%m-%d %H:%M')  $(nproc --all) cpus " \
     "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-)"
echo "# native bf16: $(grep -m1 '^flags' /proc/cpuinfo | grep -o -E 'amx_bf16|avx512_bf16' | tr '\n' ' ' || true)"
echo "# reverie OMP_NUM_THREADS=$OMP_NUM_THREADS  updates=$UPDATES  out=$OUT_DIR  load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# busiest processes before the run (anything but this run skews the figures):"
ps -eo pcpu,etime,args --sort=-pcpu | head -6 | cut -c1-120 | sed 's/^/#   /'

for SIZE in $SIZES; do
    case $SIZE in
        size1m) OVERRIDES=(--override model.rssm.deter=320 --override model.rssm.hidden=64
                           --override model.rssm.classes=4 --override model.units=64 --override behavior.units=64) ;;
        size12m) OVERRIDES=() ;;
        *) echo "unknown size '$SIZE': size1m or size12m" >&2; exit 2 ;;
    esac
    echo
    echo "## official $SIZE"
    (cd "$OUT_DIR" && DV3_SRC=$DV3_SRC "$DV3_PYTHON" "$DV3_TIMER" --mode direct --size "$SIZE" --precision "$PRECISION" \
        --updates "$UPDATES" --warmup 2 --prefill 1088 --no-flops --out "official_$SIZE.jsonl" \
        > "official_$SIZE.log" 2>&1) || {
        echo "the official run failed; the last lines of $OUT_DIR/official_$SIZE.log:" >&2
        tail -20 "$OUT_DIR/official_$SIZE.log" >&2; exit 1; }
    "$PYTHON" - "$OUT_DIR/official_$SIZE.jsonl" "$OUT_DIR/official_$SIZE.json" <<'EOF'
import json, sys
r = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
out = {"name": f"official {r['size']}", "label": f"official {r['size']}", "seconds_per_update": r["sec_per_update"],
       "load1": {"mean": r["load1_end"]}, "params": r["params_total"], "compile_s": r["build_and_compile_s"]}
json.dump(out, open(sys.argv[2], "w"))
print(f"official {r['size']}: {r['sec_per_update']['mean']:.3f} s/update mean (median "
      f"{r['sec_per_update']['median']:.3f}, min {r['sec_per_update']['min']:.3f}), {r['params_total'] / 1e6:.3f}M "
      f"params, build + XLA compile {r['build_and_compile_s']:.0f} s")
EOF
    echo
    echo "## reverie against $SIZE"
    CMD=("$PYTHON" "$HERE/bench_dreamer_update.py" --preset s --env dmc:cartpole-swingup --precision "$PRECISION"
         --updates "$UPDATES" --warmup 2 --override behavior.actor_grad=reinforce "${OVERRIDES[@]}" --versus "$OUT_DIR/official_$SIZE.json"
         --json "$OUT_DIR/reverie_$SIZE.json")
    echo "\$ OMP_NUM_THREADS=$OMP_NUM_THREADS $(printf '%q ' "${CMD[@]}")"
    "${CMD[@]}"
done
