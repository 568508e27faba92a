"""Times sheeprl's DreamerV3 gradient update from its own, unchanged command line.

Two modes:

``python sheeprl_timed.py exp=dreamer_v3 env=gym ...`` (in sheeprl's virtualenv)
    runs the ``sheeprl`` CLI as is, with ``sheeprl.algos.dreamer_v3.dreamer_v3.train``
    (one update of world model + actor + critic) wrapped to append one JSON line per
    call to ``$TIMING_OUT`` (default ``timing.jsonl``): update index, wall and
    process-CPU seconds, minor page faults, 1-minute load average. The first line also holds the
    parameter counts of the world model, actor and critic it was given. With
    ``TIMING_FLOPS=N`` (N >= 1) the N-th update runs under
    ``torch.utils.flop_counter.FlopCounterMode`` and its line holds ``flops`` instead of a
    usable time (it is flagged ``"counted": true`` and left out of the summary).

``python sheeprl_timed.py --summary timing.jsonl [--skip 1] [--json OUT]`` (any python)
    prints seconds per update (mean / median / min), updates per second, CPU seconds
    and load, dropping the first ``--skip`` (warm-up) updates, and writes them as JSON
    in the schema of ``bench_dreamer_update.py`` so the two can be compared.

The exact training command and its settings are in ``run_sheeprl_side_by_side.sh``
and in docs/notes/speed.md. sheeprl ignores its own ``num_threads`` on CPU:
set ``OMP_NUM_THREADS`` in the environment instead.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time


def _count(module) -> int:
    """Parameters of a (possibly Fabric-wrapped) module; the wrapper shares the inner module's tensors."""
    return int(sum(p.numel() for p in module.parameters()))


def run_cli() -> None:
    """Run the sheeprl CLI with ``dreamer_v3.train`` timed (see the module docstring)."""
    import importlib.metadata

    import sheeprl  # noqa: F401  (registers the algorithms)
    import torch
    import sheeprl.algos.dreamer_v3.dreamer_v3 as dv3

    out = open(os.environ.get("TIMING_OUT", "timing.jsonl"), "w", buffering=1)
    count_at = int(os.environ.get("TIMING_FLOPS", "0"))
    original = dv3.train
    calls = [0]

    def timed_train(*args, **kwargs):
        calls[0] += 1
        row: dict = {"update": calls[0]}
        if calls[0] == 1:
            # train(fabric, world_model, actor, critic, target_critic, ...): the target critic is a copy, not trained.
            wm, actor, critic = args[1], args[2], args[3]
            row["params"] = {"world_model": _count(wm), "actor": _count(actor), "critic": _count(critic)}
            row["params"]["total"] = sum(row["params"].values())
            row["sheeprl"] = importlib.metadata.version("sheeprl")
            row["torch"] = torch.__version__
            row["threads"] = torch.get_num_threads()
        if calls[0] == count_at:
            from torch.utils.flop_counter import FlopCounterMode

            counter = FlopCounterMode(display=False)
            with counter:
                result = original(*args, **kwargs)
            row.update(counted=True, flops=int(counter.get_total_flops()))
        else:
            flt = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            wall, cpu = time.perf_counter(), time.process_time()
            result = original(*args, **kwargs)
            row.update(wall=time.perf_counter() - wall, cpu=time.process_time() - cpu,
                       faults=resource.getrusage(resource.RUSAGE_SELF).ru_minflt - flt)
        row.update(load1=os.getloadavg()[0], t=time.time())
        out.write(json.dumps(row) + "\n")
        return result

    dv3.train = timed_train
    from sheeprl.cli import run

    sys.argv[0] = "sheeprl"
    run()


def summarize(path: str, skip: int) -> dict:
    """Figures of a timing file in ``bench_dreamer_update.py``'s JSON schema."""
    with open(path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    if not rows:
        raise SystemExit(f"{path} holds no timed updates: did the sheeprl run reach its first update?")
    timed = [r for r in rows if not r.get("counted")]
    used = timed[skip:]
    if not used:
        raise SystemExit(f"{path} holds {len(timed)} timed updates, all dropped by --skip {skip}: run more updates")
    walls = [r["wall"] for r in used]
    cpus = [r["cpu"] for r in used]
    loads = [r["load1"] for r in used]
    mean = statistics.mean(walls)
    summary = {
        "name": "sheeprl",
        "updates": len(used),
        "skipped": skip,
        "seconds_per_update": {"mean": mean, "median": statistics.median(walls), "min": min(walls),
                               "max": max(walls)},
        "updates_per_second": 1.0 / mean,
        "cpu_seconds_per_update": statistics.mean(cpus),
        **({"page_faults_per_update": statistics.mean(r["faults"] for r in used)} if "faults" in used[0] else {}),
        "load1": {"mean": statistics.mean(loads), "min": min(loads), "max": max(loads)},
    }
    first = next((r for r in rows if "params" in r), {})
    if first:
        summary["params"] = first["params"]
        summary["label"] = f"sheeprl {first.get('sheeprl', '')}".strip()
        summary.update({k: first[k] for k in ("torch", "threads") if k in first})
    flops = next((r["flops"] for r in rows if "flops" in r), None)
    if flops:
        summary["flops_per_update"] = flops
        summary["gflops_per_second"] = flops / summary["seconds_per_update"]["median"] / 1e9
    return summary


def print_summary(s: dict) -> None:
    sec = s["seconds_per_update"]
    print(f"{s.get('label', s['name'])}: {s['updates']} updates timed (first {s['skipped']} dropped)"
          + (f", torch {s['torch']}, {s['threads']} threads" if "torch" in s else ""))
    print(f"  s/update mean {sec['mean']:.3f}  median {sec['median']:.3f}  min {sec['min']:.3f}  max {sec['max']:.3f}"
          f"  -> {s['updates_per_second']:.3f} updates/s")
    faults = f"  minor page faults/update {s['page_faults_per_update']:.0f}" if "page_faults_per_update" in s else ""
    print(f"  cpu s/update {s['cpu_seconds_per_update']:.3f}{faults}  load1 mean {s['load1']['mean']:.2f} "
          f"(min {s['load1']['min']:.2f}, max {s['load1']['max']:.2f})")
    if "params" in s:
        p = s["params"]
        print(f"  params {p['total'] / 1e6:.2f}M (world model {p['world_model'] / 1e6:.2f}M, actor "
              f"{p['actor'] / 1e6:.2f}M, critic {p['critic'] / 1e6:.2f}M)")
    if "flops_per_update" in s:
        print(f"  {s['flops_per_update'] / 1e9:.0f} GFLOP/update -> {s['gflops_per_second']:.0f} GFLOP/s")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--summary":
        parser = argparse.ArgumentParser(prog="sheeprl_timed.py --summary",
                                         description="Summarise a timing file written by this harness.")
        parser.add_argument("file", help="the JSON-lines file named by TIMING_OUT")
        parser.add_argument("--skip", type=int, default=1, help="warm-up updates to drop (default 1)")
        parser.add_argument("--json", help="also write the summary to this JSON file")
        args = parser.parse_args(sys.argv[2:])
        s = summarize(args.file, args.skip)
        print_summary(s)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(s, f, indent=2)
        return
    run_cli()


if __name__ == "__main__":
    main()
