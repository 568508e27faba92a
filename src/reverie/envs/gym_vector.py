"""A gymnasium ``VectorEnv`` speaking reverie's batched step dicts, for collection in the training loop.

``session.train(..., vector_env=vec)`` collects with ``GymVectorEnv(vec)`` instead of the run's own
``BatchEnv`` (``run.num_envs`` must equal ``vec.num_envs``; evaluation still builds ``run.env``).
Observations and actions convert by :class:`reverie.envs.gym_env.GymEnv`'s rules (state
observations). The vector env must reset a finished sub-environment on the *next* ``step`` call
(gymnasium's default ``AutoresetMode.NEXT_STEP``): that step is then reported as ``is_first`` with
reward 0, which is exactly :class:`reverie.envs.BatchEnv`'s convention. The run closes the vector env
when it ends.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from reverie.envs.gym_env import _action_converter, _obs_converter
from reverie.envs.spaces import EnvError


class GymVectorEnv:
    """``vec`` as a batch of ``vec.num_envs`` environments with ``reset``/``step_async``/``step_wait``."""

    def __init__(self, vec: gym.vector.VectorEnv, seed: int | None = None):
        if not isinstance(vec, gym.vector.VectorEnv):
            raise EnvError(f"GymVectorEnv needs a gymnasium VectorEnv, got {type(vec).__name__}")
        mode = vec.metadata.get("autoreset_mode", gym.vector.AutoresetMode.NEXT_STEP)
        if mode != gym.vector.AutoresetMode.NEXT_STEP:
            raise EnvError(f"the vector environment resets finished environments in mode {mode}; reverie needs "
                           "autoreset_mode=AutoresetMode.NEXT_STEP (gymnasium's default)")
        self._vec = vec
        self.num_envs = int(vec.num_envs)
        space = vec.single_observation_space
        if isinstance(space, gym.spaces.Dict):
            pairs = {k: _obs_converter(sub, f"entry {k!r}", None) for k, sub in space.spaces.items()}
            self.obs_spec = {k: spec for k, (spec, _) in pairs.items()}
            self._convert = {k: fn for k, (_, fn) in pairs.items()}
            self._keyed = True
        else:
            spec, fn = _obs_converter(space, "", None)
            key = "image" if spec.is_image else "vector"
            self.obs_spec, self._convert, self._keyed = {key: spec}, {key: fn}, False
        self.act_spec, self._to_env = _action_converter(vec.single_action_space)
        self._ended = np.zeros(self.num_envs, bool)
        self._actions: Any = None
        self._seed = seed     # the first reset seeds the sub-environments (seed, seed + 1, ...), as gymnasium does

    def _observe(self, obs: Any) -> dict[str, np.ndarray]:
        out = {}
        for key, fn in self._convert.items():
            rows = obs[key] if self._keyed else obs
            out[key] = np.stack([fn(rows[i]) for i in range(self.num_envs)])
        return out

    def reset(self) -> dict[str, np.ndarray]:
        obs, _ = self._vec.reset(seed=self._seed)
        self._seed = None
        n = self.num_envs
        self._ended[:] = False
        return {**self._observe(obs), "reward": np.zeros(n, np.float32), "is_first": np.ones(n, bool),
                "is_last": np.zeros(n, bool), "is_terminal": np.zeros(n, bool)}

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.stack([self._to_env(a) for a in np.asarray(actions)])

    def step_wait(self) -> dict[str, np.ndarray]:
        obs, reward, terminated, truncated, _ = self._vec.step(self._actions)
        first = self._ended.copy()    # these sub-environments were reset by this step
        terminated = np.asarray(terminated, bool) & ~first
        last = (terminated | np.asarray(truncated, bool)) & ~first
        self._ended = last
        return {**self._observe(obs), "reward": np.where(first, 0.0, np.asarray(reward, np.float64)).astype(np.float32),
                "is_first": first, "is_last": last, "is_terminal": terminated}

    def step(self, actions: np.ndarray) -> dict[str, np.ndarray]:
        self.step_async(actions)
        return self.step_wait()

    def close(self) -> None:
        self._vec.close()


__all__ = ["GymVectorEnv"]
