"""The dream-fidelity section of ``reverie analyze``: does the run's model rank policies as its environment does?

A model that behaviour is learned in is useful only if the policies it scores highly also score highly in
reality. The section plays a fixed set of policies (each constant action, uniform random, random held
1-10 steps, and the agent's own policy where it offers one for the dream: :meth:`Agent.dream_policy`) in
the run's environment and, from the same first frames, in the model's dream
(:func:`reverie.envs.policy_play.play_both`), then reports what
:func:`reverie.analysis.fidelity.dream_fidelity` computes: each policy's mean length and return on both
sides, their rank correlations, and the regret of choosing the dream's best policy.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from reverie.agents.base import Agent, DreamPolicy
from reverie.analysis.fidelity import Fidelity, dream_fidelity
from reverie.analysis.report import figures as figs
from reverie.analysis.report.sections import TITLES, Section
from reverie.envs.policy_play import Player, fixed_policies, play_both
from reverie.envs.spaces import Env
from reverie.models.base import CONT, REWARD, has

__all__ = ["AgentPlayer", "fidelity_section", "players_for"]


class AgentPlayer:
    """A trained agent as a :class:`~reverie.envs.policy_play.Player`: its greedy ``act`` in the real
    environment, its :meth:`~reverie.agents.base.Agent.dream_policy` on the dream's features."""

    def __init__(self, agent: Agent, dream_policy: DreamPolicy, name: str):
        self.agent, self.dream_policy, self.name = agent, dream_policy, name

    def reset(self, n: int, rng: np.random.Generator) -> None:
        self.state = self.agent.init_state(n)
        self.prev = np.zeros((n, self.agent.act_spec.size), np.float32)

    def act_real(self, step: dict[str, np.ndarray]) -> np.ndarray:
        self.prev[np.asarray(step["is_first"], bool)] = 0.0
        out = self.agent.act(dict(step, action=self.prev), self.state, explore=False)
        self.state, self.prev = out.state, np.asarray(out.action, np.float32)
        return out.env_action

    def act_dream(self, features: np.ndarray) -> np.ndarray:
        return self.dream_policy(features)


def players_for(agent: Agent, hold: tuple[int, int] = (1, 10)) -> list[Player]:
    """The fixed policies of ``agent``'s action space, and the agent itself where it offers a dream policy."""
    players: list[Player] = list(fixed_policies(agent.act_spec, hold))
    own = agent.dream_policy()
    if own is not None:
        players.append(AgentPlayer(agent, own, f"the agent's policy ({agent.name})"))
    return players


def _num(x: float) -> float | None:
    return None if not math.isfinite(x) else float(x)


def _fmt(x: float) -> str:
    return "undefined (one side scores every policy alike)" if not math.isfinite(x) else f"{x:.2f}"


def fidelity_section(agent: Agent, env: Env, episodes: int, max_steps: int, seed: int,
                     say: Callable[[str], None] = lambda s: None) -> Section:
    """Dream fidelity of ``agent``'s model over ``episodes`` episodes per policy on each side in ``env``
    (each cut at ``max_steps`` agent steps, or at the environment's own time limit)."""
    model = agent.model
    title = TITLES["fidelity"]
    if model is None or not (has(model, REWARD) and has(model, CONT)):
        return Section("fidelity", title, False,
                       f"Not available: the model ({type(model).__name__}) does not predict both reward and "
                       "continuation, so it has no dream whose episodes score and end.")
    players = players_for(agent)
    played = play_both(model, env, players, episodes, seed, max_steps, device=agent.device, say=say)
    fid = dream_fidelity([p.name for p in players], played.dream, played.real)
    return _section(fid, episodes, played.cap, played.seconds)


def _section(fid: Fidelity, episodes: int, max_steps: int, seconds: float) -> Section:
    facts = {
        "rank correlation of mean return (dream, real)": _fmt(fid.return_rank_correlation),
        "rank correlation of mean length": _fmt(fid.length_rank_correlation),
        "the dream's best policy / reality's": f"{fid.dream_choice} / {fid.real_choice}",
        "regret of trusting the dream (real return lost)": f"{fid.regret:.3g}",
    }
    for r in fid.rows():
        facts[f"{r['policy']}: length dream / real"] = f"{r['dream_length']:.1f} / {r['real_length']:.1f}"
        facts[f"{r['policy']}: return dream / real"] = f"{r['dream_return']:.3g} / {r['real_return']:.3g}"
    text = (f"{len(fid.policies)} policies, {episodes} episode(s) each in the real environment and as many dreams "
            f"from the same first frames, each cut at {max_steps} steps. A dream worth learning in ranks the "
            "policies as reality does (correlation near 1) and picks a policy as good as reality's best "
            "(regret near 0).")
    figures = {"fidelity_return": figs.fidelity(fid.policies, fid.dream_return, fid.real_return, "return"),
               "fidelity_length": figs.fidelity(fid.policies, fid.dream_length, fid.real_length, "length")}
    data = {"rows": fid.rows(), "return_rank_correlation": _num(fid.return_rank_correlation),
            "length_rank_correlation": _num(fid.length_rank_correlation), "regret": fid.regret,
            "dream_choice": fid.dream_choice, "real_choice": fid.real_choice, "episodes": episodes,
            "max_steps": max_steps, "seconds": seconds}
    return Section("fidelity", TITLES["fidelity"], True, text, facts, figures, data)
