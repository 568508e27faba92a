"""Every planner's defaults on a trained model against the agent's own policy, on the same episodes.

    python benchmarks/planners_vs_policy.py RUN_DIR [--episodes 10] [--planners policy,shooting,cem,mppi,gradient]
        [--set PLANNER:key=value ...]

For each planner it runs ``--episodes`` greedy episodes (the seeds ``reverie eval`` uses, so every
planner meets the same starts), one environment at a time (as an agent acting alone would), and
prints one JSON line: mean, standard deviation and standard error of the return, each episode's
return, and seconds per episode. ``--set cem:init_std=0.5`` changes one setting of one planner.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import time

import numpy as np
import torch

from reverie.agents.planner_policy import planner_policy
from reverie.training import session
from reverie.training.evaluate import run_episodes


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir")
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--planners", default="policy,shooting,cem,mppi,gradient")
    p.add_argument("--set", action="append", default=[], metavar="PLANNER:key=value")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    agent, cfg, make, meta = session.load_run(args.run_dir)
    print(f"# {args.run_dir}: {agent.name} at step {meta['step']}, {cfg.run.env}; {time.strftime('%Y-%m-%d %H:%M')}, "
          f"{args.threads} thread(s), load {os.getloadavg()[0]:.1f}", flush=True)
    changes: dict[str, list[str]] = {}
    for item in args.set:
        planner, _, setting = item.partition(":")
        changes.setdefault(planner, []).append(setting)
    for planner in args.planners.split(","):
        actor = planner_policy(agent, planner, changes.get(planner, []))
        torch.manual_seed(cfg.run.seed)
        returns, seconds = [], []
        for i in range(args.episodes):
            start = time.perf_counter()
            ret, _ = run_episodes(actor, [functools.partial(make, cfg.run.seed + 50_000 + i)])
            seconds.append(time.perf_counter() - start)
            returns.append(float(ret[0]))
        r = np.asarray(returns)
        print(json.dumps({"planner": planner, "settings": changes.get(planner, []), "mean": round(r.mean(), 1),
                          "std": round(r.std(), 1), "sem": round(r.std(ddof=1) / np.sqrt(len(r)), 1) if len(r) > 1
                          else None, "returns": [round(x, 1) for x in returns],
                          "s_per_episode": round(float(np.mean(seconds)), 1)}), flush=True)


if __name__ == "__main__":
    main()
