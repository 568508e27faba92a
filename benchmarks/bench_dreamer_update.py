"""Seconds per Dreamer update (world model + actor + critic) at DreamerV3 size S, on CPU.

The setting is the one sheeprl's DreamerV3 is timed at (docs/notes/speed.md):
preset ``s`` (GRU deter 512, hidden 512, 512-unit MLPs with 2 layers, 32x32
categorical latents, 255-bin two-hot reward and critic), gymnasium CartPole-v1
state vectors, batch 16 sequences x 64 steps, imagination horizon 15. One
update is one call of ``reverie.agents.dreamer.Dreamer.update(batch)``: the world
model's loss, backward and Adam step, then imagination from every posterior
state, the actor's and critic's losses, backward and Adam steps, and the slow
critic's EMA.

The replay batch is real: a stream of uniformly random CartPole actions
(``--seed``) cut into 16 sequences of 64 steps, with the episode starts and
terminals it contains, in the layout ``reverie.replay`` samples (obs keys
``[B, T, ...]``, ``action [B, T, A]`` one-hot leading into each step, ``reward``,
``is_first``, ``is_last``, ``is_terminal`` ``[B, T]``). Every timed update uses it.

    OMP_NUM_THREADS=2 python benchmarks/bench_dreamer_update.py --precision fp32 --updates 10
    OMP_NUM_THREADS=2 python benchmarks/bench_dreamer_update.py --precision bf16 --updates 10 --json bf16.json

Options: ``--flops`` counts the matmul FLOPs of one extra (untimed) update with
``torch.utils.flop_counter.FlopCounterMode`` and reports GFLOP/s; ``--phases``
splits the time of the timed updates over the update's parts; ``--profile N``
prints torch.profiler's op table for N more updates; ``--versus FILE`` (a JSON
from this script or from ``sheeprl_timed.py --summary``) prints this run's
speed as a ratio to that one; ``--report A.json B.json ...`` only prints a table
of earlier results with ratios to the first. ``run_sheeprl_side_by_side.sh``
runs sheeprl and both precisions of this script in one go.

Timings move a lot when anything else runs on the machine: check ``top`` first.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import platform
import resource
import statistics
import sys
import time
from collections import defaultdict

import numpy as np
import torch

import reverie.agents.dreamer as dreamer_module
from reverie.agents.dreamer import Dreamer
from reverie.agents.registry import resolve_config
from reverie.envs.batch import BatchEnv
from reverie.envs.make import make_env
from reverie.models import Batch
from reverie.training.hardware import keep_freed_memory

#: sheeprl 0.8.4's DreamerV3 preset S on CartPole-v1 vectors (docs/notes/speed.md): world model + actor +
#: critic parameters and matmul FLOPs of one update, for when no sheeprl run is at hand.
SHEEPRL_S_PARAMS = 9_726_469
SHEEPRL_S_FLOPS = 478_742_020_096


# ---------------------------------------------------------------------------
# the batch


def collect_batch(env_name: str, batch: int, length: int, seed: int) -> tuple[dict[str, np.ndarray], BatchEnv]:
    """A replay batch from one stream of uniformly random actions.

    Returns ``({key: [batch, length, ...]}, env)`` where the stream of ``batch * length`` steps is cut
    into consecutive sequences; ``action`` at step t is the one-hot action that led into it (zero
    on an episode's first step), as the training loop stores it.
    """
    envs = BatchEnv([functools.partial(make_env, env_name, seed=seed)])
    rng = np.random.default_rng(seed)
    act_spec = envs.act_spec
    steps: list[dict[str, np.ndarray]] = []
    step = envs.reset()
    prev = np.zeros((1, act_spec.size), np.float32)
    for _ in range(batch * length):
        prev[step["is_first"]] = 0.0
        steps.append(dict(step, action=prev.copy()))
        env_action = act_spec.sample(rng, 1)
        prev = act_spec.to_model(env_action)
        step = envs.step(env_action)
    out = {}
    for key in steps[0]:
        stream = np.concatenate([s[key] for s in steps], 0)      # [batch * length, ...]
        out[key] = np.ascontiguousarray(stream.reshape(batch, length, *stream.shape[1:]))
    return out, envs


def cpu_bf16() -> str:
    """Whether this CPU multiplies bf16 natively (``avx512_bf16`` or ``amx_bf16``); without it bf16 is emulated.

    bf16 matmul is only faster than fp32 with those instructions: on AVX-512 CPUs without them (e.g. Ice
    Lake) oneDNN converts to fp32 and bf16 runs several times *slower* than fp32.
    """
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return "unknown"
    native = [f for f in ("amx_bf16", "avx512_bf16") if f in flags]
    return "native (" + ", ".join(native) + ")" if native else "emulated (no avx512_bf16 / amx_bf16)"


# ---------------------------------------------------------------------------
# timing helpers


class PhaseTimer:
    """Wall-clock seconds spent inside wrapped methods of one agent (inclusive, summed per name).

    Wrapping is done on the instances, so nothing outside this process changes. Backward passes
    and optimiser steps of the actor-critic run inline in ``Dreamer.train``; they show up as the
    part of ``train`` not covered by a wrapped method.
    """

    def __init__(self):
        self.total: dict[str, float] = defaultdict(float)
        self.enabled = False

    def wrap(self, obj, attr: str, name: str) -> None:
        fn = getattr(obj, attr)

        @functools.wraps(fn)
        def timed(*args, **kwargs):
            if not self.enabled:
                return fn(*args, **kwargs)
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.total[name] += time.perf_counter() - start

        setattr(obj, attr, timed)


def install_phases(agent: Dreamer, timer: PhaseTimer) -> None:
    """Time the parts of one update (see :func:`print_phases` for how they nest)."""
    timer.wrap(agent, "update", "train")
    timer.wrap(agent.wm, "loss", "wm.loss")
    timer.wrap(agent.wm.rssm, "observe", "wm.observe")
    timer.wrap(dreamer_module, "rssm_update", "wm.update")   # wm.loss, backward, clip and Adam
    timer.wrap(agent.ac, "loss", "ac.loss")
    timer.wrap(agent.ac, "imagine", "ac.imagine")
    timer.wrap(agent.ac, "_normalise", "ac.quantiles")
    timer.wrap(agent.ac, "update_slow_critic", "ac.slow_critic_ema")


def print_phases(total: dict[str, float], updates: int) -> dict[str, float]:
    """Milliseconds per update per part, exclusive of the parts nested inside it."""
    ms = {k: 1e3 * v / updates for k, v in total.items()}
    parts = {
        "world model: observe loop (encoder + RSSM posterior, 64 steps)": ms["wm.observe"],
        "world model: prior, KL, decoder, reward/cont heads, losses": ms["wm.loss"] - ms["wm.observe"],
        "world model: backward + clip + Adam": ms["wm.update"] - ms["wm.loss"],
        "actor-critic: imagination (15 steps x 1024 starts)": ms["ac.imagine"],
        "actor-critic: return quantiles + EMA": ms["ac.quantiles"],
        "actor-critic: heads, lambda-returns, losses": ms["ac.loss"] - ms["ac.imagine"] - ms["ac.quantiles"],
        "actor-critic: backward + clip + Adam x2, slow-critic EMA, metrics":
            ms["train"] - ms["wm.update"] - ms["ac.loss"],
    }
    print(f"  phases (ms per update, mean of {updates}):")
    for name, value in parts.items():
        print(f"    {value:8.1f}  {100 * value / ms['train']:5.1f}%  {name}")
    print(f"    {ms['train']:8.1f}  100.0%  train() total")
    return parts


def count_flops(agent: Dreamer, batch: Batch) -> int:
    """Matmul/conv FLOPs of one update (it does update the agent; call it after timing)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        agent.update(batch)
    return int(counter.get_total_flops())


def count_params(agent: Dreamer) -> dict[str, int]:
    """Trained parameters: world model, actor, critic (the slow critic is a copy and is not counted)."""
    n = lambda m: int(sum(p.numel() for p in m.parameters()))  # noqa: E731
    out = {"world_model": n(agent.wm), "actor": n(agent.ac.actor), "critic": n(agent.ac.critic)}
    out["total"] = sum(out.values())
    return out


def profile(agent: Dreamer, batch: Batch, updates: int, rows: int) -> None:
    """torch.profiler op table (self CPU time) over ``updates`` more updates."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(updates):
            agent.update(batch)
    print(f"\n# torch.profiler, {updates} updates, sorted by self CPU time")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows))


# ---------------------------------------------------------------------------
# reporting


def print_result(r: dict) -> None:
    sec = r["seconds_per_update"]
    print(f"{r['name']}: {r['updates']} updates timed after {r['warmup']} warm-up")
    print(f"  s/update mean {sec['mean']:.3f}  median {sec['median']:.3f}  min {sec['min']:.3f}  max {sec['max']:.3f}"
          f"  -> {r['updates_per_second']:.3f} updates/s (mean), {1 / sec['min']:.3f} (best)")
    faults = f"  minor page faults/update {r['page_faults_per_update']:.0f}" if "page_faults_per_update" in r else ""
    print(f"  cpu s/update {r['cpu_seconds_per_update']:.3f}{faults}  load1 mean {r['load1']['mean']:.2f} "
          f"(min {r['load1']['min']:.2f}, max {r['load1']['max']:.2f})")
    p = r["params"]
    print(f"  params {p['total'] / 1e6:.2f}M (world model {p['world_model'] / 1e6:.2f}M, actor {p['actor'] / 1e6:.2f}M, "
          f"critic {p['critic'] / 1e6:.2f}M); sheeprl preset S: {SHEEPRL_S_PARAMS / 1e6:.2f}M")
    if "flops_per_update" in r:
        print(f"  {r['flops_per_update'] / 1e9:.0f} GFLOP/update (sheeprl S: {SHEEPRL_S_FLOPS / 1e9:.0f}) -> "
              f"{r['gflops_per_second']:.0f} GFLOP/s at the median time")


def load_result(path: str) -> dict:
    try:
        with open(path) as f:
            r = json.load(f)
        r["seconds_per_update"]["mean"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise SystemExit(f"{path} is not a result of bench_dreamer_update.py or sheeprl_timed.py --summary ({e})")
    return r


def report(results: list[tuple[str, dict]]) -> None:
    """A table of results with each one's speed as a multiple of the first's."""
    base = results[0][1]["seconds_per_update"]
    print(f"{'run':<24} {'s/upd mean':>10} {'median':>8} {'min':>8} {'upd/s':>7} {'x mean':>7} {'x median':>8} "
          f"{'x best':>7} {'load1':>6}")
    for label, r in results:
        s = r["seconds_per_update"]
        print(f"{label:<24} {s['mean']:>10.3f} {s['median']:>8.3f} {s['min']:>8.3f} {1 / s['mean']:>7.3f} "
              f"{base['mean'] / s['mean']:>7.2f} {base['median'] / s['median']:>8.2f} {base['min'] / s['min']:>7.2f} "
              f"{r['load1']['mean']:>6.2f}")
    print(f"('x': speed relative to {results[0][0]}, i.e. its seconds per update divided by the run's)")


# ---------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"], help="matmul precision")
    parser.add_argument("--updates", type=int, default=10, help="timed updates")
    parser.add_argument("--warmup", type=int, default=2, help="untimed updates before timing")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: $OMP_NUM_THREADS, else torch's default)")
    parser.add_argument("--preset", default="s", help="Dreamer preset (default s: DreamerV3 size S)")
    parser.add_argument("--env", default="gym:CartPole-v1", help="environment whose specs and data the batch has")
    parser.add_argument("--batch", type=int, default=16, help="sequences per batch")
    parser.add_argument("--seq-len", type=int, default=64, help="steps per sequence")
    parser.add_argument("--horizon", type=int, default=15, help="imagination horizon")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data and the weights")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                        help="extra Dreamer config override (repeatable), e.g. model.units=256")
    parser.add_argument("--flops", action="store_true", help="count FLOPs of one extra update and report GFLOP/s")
    parser.add_argument("--phases", action="store_true", help="split the timed updates' time over the update's parts")
    parser.add_argument("--profile", type=int, default=0, metavar="N", help="torch.profiler table over N more updates")
    parser.add_argument("--profile-rows", type=int, default=30, help="rows of the profiler table")
    parser.add_argument("--versus", action="append", default=[], metavar="FILE",
                        help="a result JSON (this script's or sheeprl_timed.py --summary's) to compare with")
    parser.add_argument("--allocator", choices=["reverie", "system"], default="reverie",
                        help="the reverie command's malloc setting (default) or glibc's defaults")
    parser.add_argument("--json", help="also write the result to this JSON file")
    parser.add_argument("--report", nargs="+", metavar="FILE",
                        help="only print a table of these result JSONs, with speeds relative to the first")
    args = parser.parse_args()

    if args.report:
        loaded = [load_result(p) for p in args.report]
        report([(r.get("label") or r["name"], r) for r in loaded])
        return
    if args.updates < 1 or args.warmup < 0:
        raise SystemExit("--updates must be at least 1 and --warmup at least 0")
    threads = args.threads or int(os.environ.get("OMP_NUM_THREADS", "0")) or torch.get_num_threads()
    torch.set_num_threads(threads)
    torch.manual_seed(args.seed)
    allocator = keep_freed_memory() if args.allocator == "reverie" else "system malloc (--allocator system)"

    cfg = resolve_config("dreamer", args.preset, [
        f"run.env={args.env}", f"run.precision={args.precision}", f"run.batch_size={args.batch}",
        f"run.seq_len={args.seq_len}", f"behavior.horizon={args.horizon}", f"run.seed={args.seed}", *args.override])
    data, envs = collect_batch(args.env, args.batch, args.seq_len, args.seed)
    agent = Dreamer(envs.obs_spec, envs.act_spec, cfg)
    envs.close()
    batch = Batch.build(data, agent.obs_spec, agent.act_spec)
    params = count_params(agent)

    print(f"# bench_dreamer_update  {time.strftime('%Y-%m-%d %H:%M')}  torch {torch.__version__}  threads {threads}  "
          f"cpus {os.cpu_count()}  {platform.processor() or platform.machine()}  load {os.getloadavg()[0]:.1f}")
    print(f"# cpu bf16: {cpu_bf16()}; {allocator}")
    print(f"# preset {args.preset} {args.precision}, {args.env} vectors, batch {args.batch} x {args.seq_len}, "
          f"horizon {args.horizon}, {int(batch.is_first.sum())} episode starts in the batch"
          + (f", overrides {args.override}" if args.override else ""))

    timer = PhaseTimer()
    if args.phases:
        install_phases(agent, timer)
    for _ in range(args.warmup):
        agent.update(batch)
    timer.enabled = True
    walls, cpus, loads, faults = [], [], [], []
    for _ in range(args.updates):
        flt = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        wall, cpu = time.perf_counter(), time.process_time()
        metrics = agent.update(batch)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - flt)
        loads.append(os.getloadavg()[0])
    timer.enabled = False
    if not all(np.isfinite(v) for v in metrics.values()):
        bad = sorted(k for k, v in metrics.items() if not np.isfinite(v))
        raise SystemExit(f"the update produced non-finite metrics {bad}: the timing is of a broken update")

    mean = statistics.mean(walls)
    result = {
        "name": "reverie", "label": f"reverie {args.precision}", "precision": args.precision,
        "preset": args.preset, "env": args.env, "batch": [args.batch, args.seq_len], "horizon": args.horizon,
        "threads": threads, "updates": args.updates, "warmup": args.warmup,
        "seconds_per_update": {"mean": mean, "median": statistics.median(walls), "min": min(walls), "max": max(walls)},
        "updates_per_second": 1.0 / mean,
        "cpu_seconds_per_update": statistics.mean(cpus),
        "page_faults_per_update": statistics.mean(faults),
        "load1": {"mean": statistics.mean(loads), "min": min(loads), "max": max(loads)},
        "walls": walls, "params": params,
        "date": time.strftime("%Y-%m-%d %H:%M"), "torch": torch.__version__, "cpus": os.cpu_count(),
        "cpu_bf16": cpu_bf16(),
    }
    if args.flops:
        result["flops_per_update"] = count_flops(agent, batch)
        result["gflops_per_second"] = result["flops_per_update"] / result["seconds_per_update"]["median"] / 1e9
    print_result(result)
    if args.phases:
        result["phases_ms"] = print_phases(timer.total, args.updates)
    for path in args.versus:
        other = load_result(path)
        label = other.get("label") or other["name"]
        print(f"  vs {label} ({path}): {other['seconds_per_update']['mean'] / mean:.2f}x by mean, "
              f"{other['seconds_per_update']['median'] / result['seconds_per_update']['median']:.2f}x by median, "
              f"{other['seconds_per_update']['min'] / min(walls):.2f}x best vs best")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    if args.profile:
        profile(agent, batch, args.profile, args.profile_rows)


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        main()
        sys.stdout.flush()
