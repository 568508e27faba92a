"""Continual learning on a sequence of Pendulum gravities: naive FIFO replay vs reservoir vs EWC.

Each method is one ordinary ``reverie train`` run on the task sequence (so runs resume if interrupted);
the script reads each run's ``continual.json`` (the score matrix ``R[i][j]``: return on task ``j`` after
training on task ``i``) and prints, per method, the matrix and three figures computed from it:

- average performance: ``mean_j R[T-1][j]`` after the last task;
- forgetting: ``mean_{j < T-1} (max_{i < T-1} R[i][j] - R[T-1][j])`` (Chaudhry et al. 2018);
- forward transfer: ``mean_{j >= 1} (R[j-1][j] - b_j)``, ``b_j`` the return before any training.

(computed by :func:`reverie.analysis.continual.continual_scores`).

Example (about 25 minutes of one CPU core):

    python benchmarks/continual_pendulum.py --root runs/continual --steps-per-task 1500
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from reverie.analysis.continual import continual_scores

METHODS = {
    "fifo": ["run.replay_eviction=fifo"],
    "reservoir": ["run.replay_eviction=reservoir"],
    "ewc": ["run.replay_eviction=fifo", "run.continual.regularizer=ewc", "run.continual.reg_weight=0.01"],
}


def figures(scores: dict) -> dict[str, float | None]:
    """Average performance, forgetting and forward transfer of a run's ``continual.json``."""
    got = continual_scores(scores["R"], scores.get("initial"))
    return {"average": got.average, "forgetting": got.forgetting, "forward_transfer": got.forward_transfer}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="runs/continual")
    parser.add_argument("--agent", default="tdmpc2")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--gravities", type=float, nargs="+", default=[10.0, 4.0, 16.0])
    parser.add_argument("--steps-per-task", type=int, default=1500)
    parser.add_argument("--capacity", type=int, default=1000, help="replay capacity in steps (small on purpose)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args()
    env = ">".join(f"gym:Pendulum-v1?g={g}" for g in args.gravities)
    steps = args.steps_per_task * len(args.gravities)
    results = {}
    for method in args.methods:
        run_dir = Path(args.root) / f"{args.agent}-{method}-s{args.seed}"
        cmd = [sys.executable, "-m", "reverie", "train", args.agent, "--preset", args.preset, "--env", env,
               "--steps", str(steps), "--switch-every", str(args.steps_per_task), "--seed", str(args.seed),
               "--run-dir", str(run_dir), f"run.replay_capacity={args.capacity}", "run.threads=1",
               *METHODS[method], *args.overrides]
        started = time.time()
        subprocess.run(cmd, check=True, env=dict(os.environ, OMP_NUM_THREADS="1"), stdout=subprocess.DEVNULL)
        scores = json.loads((run_dir / "continual.json").read_text())
        results[method] = {"R": scores["R"], "initial": scores["initial"], **figures(scores),
                           "wall_s": round(time.time() - started, 1)}
        print(json.dumps({"method": method, **results[method]}), flush=True)
    print(f"\n{env}, {args.steps_per_task} steps per task, replay capacity {args.capacity}")
    print(f"{'method':10s} {'average':>9s} {'forgetting':>11s} {'fwd transfer':>13s}")
    for method, res in results.items():
        print(f"{method:10s} {res['average']:9.1f} {res['forgetting'] or float('nan'):11.1f} {res['forward_transfer'] or float('nan'):13.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
