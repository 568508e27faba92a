"""Learning benchmark: train an agent on a task for several seeds and report returns and wall time.

Each seed is one ordinary ``reverie train`` run (so runs resume if interrupted);
the script then reads every run's metrics.jsonl and prints one JSON line per
seed plus a summary: the final and best evaluation return, the first step at
which the evaluation return reached ``--target``, and the wall time.

Example (the CartPole criterion: >= 475 within 20k steps, each seed <= 15 min):

    python benchmarks/learn.py --env gym:CartPole-v1 --steps 20000 --seeds 0 1 2 --target 475 \\
        --root runs/bench
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from reverie.training.logger import read_metrics


def summarise(run_dir: Path, target: float | None) -> dict:
    metrics = read_metrics(run_dir / "metrics.jsonl")
    evals = [(m["step"], m["eval/return"]) for m in metrics if m.get("eval/return") is not None]
    summary = json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").exists() else {}
    reached = next((s for s, r in evals if target is not None and r >= target), None)
    return {
        "run_dir": str(run_dir),
        "final_return": evals[-1][1] if evals else None,
        "best_return": max((r for _, r in evals), default=None),
        "first_step_at_target": reached,
        "curve": evals,
        "wall_time_s": summary.get("wall_time_s"),
        "env_steps": summary.get("env_steps"),
        "updates": summary.get("updates"),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--agent", default="dreamer")
    p.add_argument("--env", default="gym:CartPole-v1")
    p.add_argument("--obs", default="state")
    p.add_argument("--steps", type=int, default=20_000)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--preset", default=None)
    p.add_argument("--target", type=float, default=None, help="return threshold to report reaching")
    p.add_argument("--root", default="runs/bench", help="folder of the per-seed run folders")
    p.add_argument("--summarise-only", action="store_true", help="only read existing runs")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    args = p.parse_args()

    results = []
    for seed in args.seeds:
        name = f"{args.agent}-{args.env.replace(':', '-')}-{args.obs}-s{seed}"
        run_dir = Path(args.root) / name
        if not args.summarise_only:
            cmd = [sys.executable, "-m", "reverie", "train", args.agent, "--env", args.env, "--obs", args.obs,
                   "--steps", str(args.steps), "--seed", str(seed), "--run-dir", str(run_dir), *args.overrides]
            if args.preset:
                cmd += ["--preset", args.preset]
            print("$", " ".join(cmd), file=sys.stderr, flush=True)
            start = time.perf_counter()
            code = subprocess.call(cmd)
            if code != 0:
                print(f"seed {seed} failed with exit status {code}", file=sys.stderr)
                return code
            print(f"seed {seed}: {time.perf_counter() - start:.0f} s", file=sys.stderr)
        row = {"seed": seed, **summarise(run_dir, args.target)}
        results.append(row)
        print(json.dumps(row))
    finals = [r["final_return"] for r in results if r["final_return"] is not None]
    walls = [r["wall_time_s"] for r in results if r["wall_time_s"] is not None]
    print(json.dumps({
        "env": args.env, "obs": args.obs, "steps": args.steps, "seeds": args.seeds,
        "final_return_mean": sum(finals) / len(finals) if finals else None,
        "final_returns": finals,
        "seeds_at_target": sum(r["first_step_at_target"] is not None for r in results) if args.target else None,
        "max_wall_time_s": max(walls) if walls else None,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
