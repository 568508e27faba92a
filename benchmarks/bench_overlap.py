"""Environment steps per second of whole training runs, with collection overlapped with the updates or not.

Runs the same ``reverie train`` command twice in fresh folders, once with
``run.parallel_envs=false`` (the environment steps in the learner's process,
between updates) and once with ``run.parallel_envs=true`` (it steps in its own
process while the learner updates; the default for pixel observations), and
prints environment steps per second of the training loop (``env_steps /
wall_time_s`` from each run's summary.json) and their ratio. Both runs compute
the same thing (tests/test_collection.py checks it bit for bit), so the ratio
is the time the overlap hides.

    python benchmarks/bench_overlap.py --root runs/overlap --steps 3000 \\
        --env dmc:cartpole-swingup --obs pixels --preset tiny
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path


def run(root: Path, parallel: str, args, extra: list[str]) -> dict:
    run_dir = root / f"parallel-{parallel}"
    shutil.rmtree(run_dir, ignore_errors=True)
    cmd = [sys.executable, "-m", "reverie", "train", "--preset", args.preset, "--env", args.env, "--obs", args.obs,
           "--steps", str(args.steps), "--run-dir", str(run_dir), f"run.parallel_envs={parallel}",
           f"run.threads={args.threads}", f"run.eval_every={args.steps}", "run.eval_episodes=1", *extra]
    started = time.perf_counter()
    subprocess.run(cmd, check=True, env=dict(os.environ, OMP_NUM_THREADS=str(args.threads)),
                   stdout=subprocess.DEVNULL)
    summary = json.loads((run_dir / "summary.json").read_text())
    return {"parallel_envs": parallel, "env_steps": summary["env_steps"], "updates": summary["updates"],
            "loop_s": summary["wall_time_s"], "whole_command_s": round(time.perf_counter() - started, 1),
            "env_steps_per_s": round(summary["env_steps"] / summary["wall_time_s"], 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", type=Path, default=Path("runs/overlap"))
    p.add_argument("--env", default="dmc:cartpole-swingup")
    p.add_argument("--obs", default="pixels")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--threads", type=int, default=1, help="torch threads of the learner")
    p.add_argument("overrides", nargs="*", help="more key=value settings for both runs")
    args = p.parse_args()
    rows = [run(args.root, parallel, args, args.overrides) for parallel in ("false", "true")]
    for row in rows:
        print(json.dumps(row))
    print(f"overlapped / serial env steps per second: {rows[1]['env_steps_per_s'] / rows[0]['env_steps_per_s']:.2f}x")


if __name__ == "__main__":
    main()
