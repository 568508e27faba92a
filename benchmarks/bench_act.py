"""Seconds per act() call of an untrained agent on one environment: the cost of acting, which for
the planning agents (PlaNet, PETS) is the cost of one planned action.

    python benchmarks/bench_act.py planet --env dmc:cartpole-swingup [--preset default] [--calls 3] [key=value ...]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from reverie.agents.registry import resolve_config
from reverie.envs import BatchEnv
from reverie.training.session import build_agent, env_factory


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("agent")
    p.add_argument("--env", default="dmc:cartpole-swingup")
    p.add_argument("--preset", default="default")
    p.add_argument("--calls", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("overrides", nargs="*", metavar="key=value")
    args = p.parse_intermixed_args()
    torch.set_num_threads(args.threads)
    cfg = resolve_config(args.agent, args.preset, [f"run.env={args.env}", *args.overrides])
    make = env_factory(cfg.run)
    agent = build_agent(args.agent, cfg, make)
    env = BatchEnv([lambda: make(0)], parallel=False)
    step = env.reset()
    state = agent.init_state(1)
    prev = np.zeros((1, env.act_spec.size), np.float32)
    times = []
    for i in range(args.calls + 1):                     # the first call is a warm-up
        start = time.perf_counter()
        action, _, state, _ = agent.act(dict(step, action=prev), state, True)
        if i:
            times.append(time.perf_counter() - start)
        prev = env.act_spec.to_model(action)
        step = env.step(action)
    env.close()
    print(f"{args.agent} ({args.preset}) on {args.env}, {args.threads} thread(s): "
          f"{np.median(times):.3f} s per act() (median of {args.calls})")


if __name__ == "__main__":
    main()
