"""Dream fidelity of a trained run: does its model rank policies as the real environment does?

Loads a run folder whose agent's model declares ``reward`` and ``cont`` (World Models past its M stage,
Dreamer, PlaNet, ...), plays the fixed policies (:func:`reverie.envs.policy_play.fixed_policies`: each
constant action, uniform random, random held 1-10 steps) and, for a ``worldmodels`` run past its first
generation, its controller, for ``--episodes`` episodes in the real environment and as many dreams
started from those episodes' first frames; then reports, per policy, the mean length and return on both
sides, and across policies their Spearman rank correlation and the regret of choosing the dream's best
(:func:`reverie.analysis.fidelity.dream_fidelity`).

    OMP_NUM_THREADS=1 python benchmarks/dream_fidelity.py RUN --episodes 20 [--tau 1.15] [--max-steps 2100]

Prints a Markdown table; writes ``--out`` (default RUN/dream_fidelity.json).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from reverie.agents.base import Agent
from reverie.agents.worldmodels import WorldModels
from reverie.analysis.fidelity import dream_fidelity
from reverie.envs.policy_play import Player, fixed_policies, play_dream, play_real
from reverie.models.base import CONT, REWARD, require
from reverie.training.session import load_run


class AgentPlayer:
    """A trained agent in the real environment, and (World Models) its controller on the dream's features."""

    def __init__(self, agent: Agent, name: str, dream_act=None):
        self.agent, self.name, self.dream_act = agent, name, dream_act

    def reset(self, n: int, rng: np.random.Generator) -> None:
        self.state = self.agent.init_state(n)
        self.prev = None

    def act_real(self, step: dict[str, np.ndarray]) -> np.ndarray:
        spec = self.agent.act_spec
        if self.prev is None or step["is_first"].any():
            self.prev = np.zeros((len(step["is_first"]), spec.size), np.float32)
        out = self.agent.act(dict(step, action=self.prev), self.state, explore=False)
        self.state, self.prev = out.state, out.action
        return out.env_action

    def act_dream(self, features: np.ndarray) -> np.ndarray:
        return self.dream_act(features)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir")
    p.add_argument("--episodes", type=int, default=20, help="episodes per policy on each side")
    p.add_argument("--max-steps", type=int, default=None, help="longest episode (default: the run's dream or "
                                                                  "time limit, else 1000)")
    p.add_argument("--tau", type=float, default=None, help="dream temperature (World Models; default: its own)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)

    agent, cfg, make, meta = load_run(args.run_dir)
    model = agent.model
    require(model, [REWARD, CONT], "dream fidelity")
    max_steps = args.max_steps or getattr(cfg, "dream_max_steps", None) or cfg.run.time_limit or 1000
    players: list[Player] = list(fixed_policies(agent.act_spec))
    if isinstance(agent, WorldModels) and agent.evolution.generation > 0:
        def controller(features: np.ndarray) -> np.ndarray:
            x = agent.controller_input(torch.as_tensor(features, device=agent.device))
            a = agent.controller.act(agent.params.expand(len(x), -1), x)
            return a.argmax(-1).cpu().numpy() if agent.act_spec.discrete else a.cpu().numpy()
        players.append(AgentPlayer(agent, f"the run's controller (generation {agent.evolution.generation})",
                                   controller))

    def prepare(m) -> None:
        if args.tau is not None:
            m.temperature = args.tau

    env = make(7_000_000 + args.seed)
    dream, real, seconds = [], [], []
    try:
        for i, player in enumerate(players):
            t0 = time.perf_counter()
            episodes, starts = play_real(env, player, args.episodes, args.seed * 1000 + i, max_steps)
            real.append(episodes)
            dream.append(play_dream(model, starts, player, args.episodes, args.seed * 1000 + 500 + i, max_steps,
                                    device=agent.device, prepare=prepare))
            seconds.append(time.perf_counter() - t0)
            print(f"{player.name}: real {real[-1].length.mean():.1f} steps {real[-1].ret.mean():.1f} return, "
                  f"dream {dream[-1].length.mean():.1f} steps {dream[-1].ret.mean():.1f} return "
                  f"({seconds[-1]:.0f} s)", flush=True)
    finally:
        env.close()
    fid = dream_fidelity([pl.name for pl in players], dream, real)
    print(f"\n| policy | dream length | real length | dream / real | dream return | real return |")
    print("|---|---|---|---|---|---|")
    for r in fid.rows():
        print(f"| {r['policy']} | {r['dream_length']:.1f} | {r['real_length']:.1f} | {r['length_ratio']:.2f} | "
              f"{r['dream_return']:.1f} | {r['real_return']:.1f} |")
    print(f"\nrank correlation of return {fid.return_rank_correlation:.2f}, of length "
          f"{fid.length_rank_correlation:.2f}; the dream picks '{fid.dream_choice}', reality '{fid.real_choice}': "
          f"regret {fid.regret:.1f}")
    out = Path(args.out) if args.out else Path(args.run_dir) / "dream_fidelity.json"
    out.write_text(json.dumps({"run_dir": str(args.run_dir), "checkpoint_step": meta.get("step"),
                               "episodes": args.episodes, "max_steps": max_steps, "tau": args.tau,
                               "rows": fid.rows(), "seconds": seconds,
                               "return_rank_correlation": fid.return_rank_correlation,
                               "length_rank_correlation": fid.length_rank_correlation, "regret": fid.regret,
                               "dream_choice": fid.dream_choice, "real_choice": fid.real_choice}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
