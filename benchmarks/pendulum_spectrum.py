"""Does a Dreamer model of Pendulum-v1 know the pendulum's period? The spectrum of its learned transition.

A frictionless pendulum near the bottom of its swing oscillates with period
2 pi sqrt(l / g) = 1.987 s (l = 1, g = 10 in gymnasium's Pendulum), about 40
steps of 0.05 s. This script plays episodes of a trained run from states near
the bottom with zero torque, collects the model's filtered states, and
linearises the learned transition there (``reverie.analysis.model_spectrum``:
the deterministic part of the prior step with the stochastic latent at its
prior expectation, at zero torque). It prints the distribution of the period
of the dominant complex eigenvalue pair over the visited states, the spectral
radius, and the gap to the physical period.

    python benchmarks/pendulum_spectrum.py /work/bench_runs/s4/pend5k
"""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import torch

from reverie.agents.base import observe_step
from reverie.analysis import model_spectrum
from reverie.models.state import stack_states
from reverie.training.session import load_run

DT = 0.05
PERIOD = 2 * math.pi * math.sqrt(1.0 / 10.0)


def near_bottom_states(agent, make, episodes: int, steps: int, max_angle: float, skip: int):
    """Filtered states ``[N]`` of zero-torque episodes that start within ``max_angle`` of the bottom."""
    states, seed = [], 0
    while len(states) < episodes * (steps - skip) and seed < 100 * episodes:
        env = make(seed)
        seed += 1
        step = env.reset()
        cos, sin, speed = step["vector"]
        if math.pi - abs(math.atan2(sin, cos)) > max_angle or abs(speed) > max_angle:
            env.close()
            continue
        state = agent.init_state(1)
        for t in range(steps):
            batch = {k: np.asarray(v)[None] for k, v in step.items()}
            batch["action"] = np.zeros((1, agent.act_spec.size), np.float32)
            with torch.no_grad():
                state = observe_step(agent.wm, batch, state, agent.device)
            if t >= skip:   # let the filter settle first
                states.append(state)
            step = env.step(np.zeros(agent.act_spec.size, np.float32))
        env.close()
    return {k: v.squeeze(1) for k, v in stack_states(states, 0).items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir")
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--steps", type=int, default=60, help="steps per episode")
    p.add_argument("--skip", type=int, default=10, help="first steps of each episode left out")
    p.add_argument("--max-angle", type=float, default=0.6, help="start within this many radians of the bottom")
    args = p.parse_args()
    torch.set_num_threads(1)
    agent, cfg, make, meta = load_run(args.run_dir)
    states = near_bottom_states(agent, make, args.episodes, args.steps, args.max_angle, args.skip)
    zero = torch.zeros(1, agent.act_spec.size)
    summary = model_spectrum(agent.wm, states, zero, dt=DT)
    period = summary.dominant_period[np.isfinite(summary.dominant_period)]
    q25, median, q75 = np.percentile(period, [25, 50, 75])
    print(json.dumps({
        "run": args.run_dir, "checkpoint_step": meta["step"], "states": int(summary.spectral_radius.shape[0]),
        "latent_dim": summary.dim, "physical_period_s": round(PERIOD, 3),
        "dominant_pair_period_s": {"q25": round(q25, 3), "median": round(median, 3), "q75": round(q75, 3)},
        "relative_gap_of_median": round((median - PERIOD) / PERIOD, 3),
        "spectral_radius": {k: round(v, 4) for k, v in summary.radius_distribution.items()},
        "collapsed": summary.collapsed, "state_effective_rank": summary.state_effective_rank,
    }, indent=1))


if __name__ == "__main__":
    main()
