"""A memory suite: the reward depends on a cue seen ``delay`` steps before it is asked for.

:class:`MemoryCue` (gymnasium): an episode shows one of ``num_cues`` cues at step 0, then
``delay`` distractor observations (random symbols of the same alphabet, so the cue must be told
apart by *when* it came, not by what it looks like), then a query. The action taken at the
query is the answer: reward 1 if it names the cue, else 0, and the episode ends (terminated).
Actions before the query do nothing. An episode has ``delay + 2`` observations and
``delay + 2`` actions; guessing earns ``1 / num_cues`` on average.

Observation ``[num_cues + 2]`` float32: a one-hot symbol (zeros at the query), then a cue flag
(1 only at step 0) and a query flag (1 only at the query). Action: ``Discrete(num_cues)``.

Registered ids (importing this module registers them; ``gym:reverie/...`` imports it):
``reverie/MemoryCue-v0`` (``delay=10``, ``num_cues=4``, both settable as keyword arguments)
and ``reverie/MemoryCue-k10-v0``, ``-k50-v0``, ``-k200-v0`` for the suite's delays, e.g.
``reverie train --env gym:reverie/MemoryCue-k50-v0``.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

DELAYS = (10, 50, 200)
"""The suite's delays k."""


class MemoryCue(gym.Env):
    """Remember a cue for ``delay`` steps and name it at the query (see the module docstring)."""

    metadata = {"render_modes": []}

    def __init__(self, delay: int = 10, num_cues: int = 4):
        if not (isinstance(delay, int) and delay >= 0):
            raise ValueError(f"delay must be a non-negative integer, got {delay!r}")
        if not (isinstance(num_cues, int) and num_cues >= 2):
            raise ValueError(f"num_cues must be an integer of at least 2, got {num_cues!r}")
        self.delay, self.num_cues = delay, num_cues
        self.observation_space = gym.spaces.Box(0.0, 1.0, (num_cues + 2,), np.float32)
        self.action_space = gym.spaces.Discrete(num_cues)
        self.cue = 0
        self.t = 0

    def _obs(self, symbol: int | None, cue_flag: bool, query_flag: bool) -> np.ndarray:
        obs = np.zeros(self.num_cues + 2, np.float32)
        if symbol is not None:
            obs[symbol] = 1.0
        obs[self.num_cues] = float(cue_flag)
        obs[self.num_cues + 1] = float(query_flag)
        return obs

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.cue = int(self.np_random.integers(self.num_cues))
        self.t = 0
        return self._obs(self.cue, True, False), {"cue": self.cue}

    def step(self, action):
        action = int(action)
        if not self.action_space.contains(action):
            raise ValueError(f"action must be an integer in [0, {self.num_cues}), got {action!r}")
        if self.t == self.delay + 1:                   # the answer to the query
            reward = 1.0 if action == self.cue else 0.0
            self.t += 1
            return self._obs(None, False, False), reward, True, False, {"cue": self.cue}
        self.t += 1
        if self.t == self.delay + 1:
            obs = self._obs(None, False, True)
        else:
            obs = self._obs(int(self.np_random.integers(self.num_cues)), False, False)
        return obs, 0.0, False, False, {"cue": self.cue}


def register() -> None:
    """Register the suite's ids with gymnasium (idempotent)."""
    entry = f"{__name__}:MemoryCue"
    if "reverie/MemoryCue-v0" not in gym.registry:
        gym.register("reverie/MemoryCue-v0", entry_point=entry)
    for k in DELAYS:
        if f"reverie/MemoryCue-k{k}-v0" not in gym.registry:
            gym.register(f"reverie/MemoryCue-k{k}-v0", entry_point=entry, kwargs={"delay": k})


register()
