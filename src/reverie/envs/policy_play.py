"""A fixed set of policies played in a real environment and in a model's dream, for
:func:`reverie.analysis.fidelity.dream_fidelity`.

The fixed policies need no observation: each constant action (for continuous actions: zero and each
dimension at -1 and at +1), uniformly random, and random held for 1-10 steps
(:class:`~reverie.envs.random_actions.HeldRandomActions`). A trained policy joins them as a
:class:`Player` that acts on the real environment's steps and on the dream's feature vectors.

:func:`play_real` plays episodes one after another in one environment and keeps each episode's first
observation; :func:`play_dream` plays as many dreams at once in a
:class:`~reverie.envs.dream_env.DreamVectorEnv` started from those observations, so both sides start
from the same distribution of frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, NamedTuple, Protocol

import numpy as np
import torch

from reverie.envs.dream_env import DreamVectorEnv
from reverie.envs.random_actions import HeldRandomActions
from reverie.envs.spaces import Env
from reverie.models.base import WorldModel
from reverie.specs import ActionSpec

__all__ = ["FixedPolicy", "Played", "Player", "fixed_policies", "play_dream", "play_real"]


class Played(NamedTuple):
    """One policy's episodes on one side: ``length [E]`` (agent steps) and ``ret [E]`` (returns)."""

    length: np.ndarray
    ret: np.ndarray


class Player(Protocol):
    """A policy for :func:`play_real` and :func:`play_dream` (``n`` environments at once)."""

    name: str

    def reset(self, n: int, rng: np.random.Generator) -> None:
        """Start ``n`` episodes."""

    def act_real(self, step: dict[str, np.ndarray]) -> np.ndarray:
        """Actions ``[n]`` int64 or ``[n, A]`` float32 for the real steps (observations ``[n, ...]``)."""

    def act_dream(self, features: np.ndarray) -> np.ndarray:
        """Actions for the dream's feature vectors ``[n, F]``."""


@dataclass
class FixedPolicy:
    """A policy that ignores what it sees: ``kind`` is ``constant`` (``action``), ``uniform`` or ``held``."""

    name: str
    spec: ActionSpec
    kind: str
    action: Any = None
    hold: tuple[int, int] = (1, 10)

    def reset(self, n: int, rng: np.random.Generator) -> None:
        self.n, self.rng = n, rng
        self.held = HeldRandomActions(self.spec, n, self.hold, rng) if self.kind == "held" else None

    def _act(self) -> np.ndarray:
        if self.kind == "constant":
            if self.spec.discrete:
                return np.full(self.n, int(self.action), np.int64)
            return np.tile(np.asarray(self.action, np.float32), (self.n, 1))
        if self.held is not None:
            return self.held()
        return self.spec.sample(self.rng, self.n)

    def act_real(self, step: dict[str, np.ndarray]) -> np.ndarray:
        return self._act()

    def act_dream(self, features: np.ndarray) -> np.ndarray:
        return self._act()


def fixed_policies(spec: ActionSpec, hold: tuple[int, int] = (1, 10)) -> list[FixedPolicy]:
    """Each constant action, uniform random and held random (see the module docstring)."""
    constants: list[tuple[str, int | np.ndarray]]
    if spec.discrete:
        constants = [(f"always {a}", a) for a in range(spec.size)]
    else:
        constants = [("always 0", np.zeros(spec.size, np.float32))]
        for d in range(spec.size):
            for sign in (-1.0, 1.0):
                a = np.zeros(spec.size, np.float32)
                a[d] = sign
                constants.append((f"always {'+' if sign > 0 else '-'}1 on dim {d}", a))
    return ([FixedPolicy(name, spec, "constant", a) for name, a in constants]
            + [FixedPolicy("uniform random", spec, "uniform"),
               FixedPolicy(f"random held {hold[0]}-{hold[1]}", spec, "held", hold=hold)])


def play_real(env: Env, player: Player, episodes: int, seed: int, max_steps: int
              ) -> tuple[Played, dict[str, np.ndarray]]:
    """``episodes`` episodes of ``player`` in ``env``, one after another (each cut at ``max_steps``); and
    each episode's first observation ``{key: [episodes, ...]}``."""
    rng = np.random.default_rng(seed)
    lengths, returns, firsts = [], [], []
    for _ in range(episodes):
        player.reset(1, rng)
        step = env.reset()
        firsts.append({k: np.asarray(step[k]) for k in env.obs_spec})
        total, t = 0.0, 0
        while not step["is_last"] and t < max_steps:
            batched = {k: np.asarray(v)[None] for k, v in step.items()}
            action = player.act_real(batched)[0]
            step = env.step(action)
            total += float(step["reward"])
            t += 1
        lengths.append(t)
        returns.append(total)
    starts = {k: np.stack([f[k] for f in firsts]) for k in env.obs_spec}
    return Played(np.asarray(lengths), np.asarray(returns)), starts


@torch.no_grad()
def play_dream(model: WorldModel, starts: dict[str, np.ndarray], player: Player, episodes: int, seed: int,
               max_steps: int, device: str | torch.device = "cpu",
               prepare: Callable[[WorldModel], None] | None = None) -> Played:
    """``episodes`` dreams of ``player`` at once, each from one of ``starts`` and ended by the model's
    ``cont`` (or at ``max_steps``). ``prepare`` may set the model up first (a temperature, say)."""
    if prepare is not None:
        prepare(model)
    env = DreamVectorEnv(model, starts, episodes, observation="features", max_steps=max_steps, device=device)
    obs, _ = env.reset(seed=seed)
    player.reset(episodes, np.random.default_rng(seed))
    total = np.zeros(episodes)
    length = np.zeros(episodes, np.int64)
    alive = np.ones(episodes, bool)
    while alive.any():
        obs, reward, terminated, truncated, _ = env.step(player.act_dream(obs))
        total += np.where(alive, reward, 0.0)
        length += alive
        alive &= ~(terminated | truncated)
    return Played(length, total)
