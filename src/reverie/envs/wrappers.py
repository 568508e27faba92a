"""Wrappers that change how an :class:`~reverie.envs.spaces.Env` is stepped, not what it is.

Each wrapper is itself an ``Env``: same ``obs_spec`` and ``act_spec``, step
dicts in and out, so they stack in any order. ``make_env`` applies
``ActionRepeat`` inside ``TimeLimit``, so a time limit counts agent steps.
"""

from __future__ import annotations

import numpy as np

from reverie.envs.spaces import Env, EnvError, Timing


class Wrapper:
    """Forwards everything to ``env``; subclasses override ``reset``/``step``."""

    def __init__(self, env: Env):
        self.env = env
        self.obs_spec = env.obs_spec
        self.act_spec = env.act_spec

    @property
    def name(self) -> str:
        return getattr(self.env, "name", type(self.env).__name__)

    @property
    def timing(self) -> Timing:
        return self.env.timing

    @property
    def obs_names(self) -> dict[str, tuple[str, ...]]:
        return self.env.obs_names

    def reset(self) -> dict[str, np.ndarray]:
        return self.env.reset()

    def step(self, action) -> dict[str, np.ndarray]:
        return self.env.step(action)

    def render(self) -> np.ndarray:
        return self.env.render()

    def close(self) -> None:
        self.env.close()


class ActionRepeat(Wrapper):
    """Repeat each action ``repeat`` times, summing rewards; stop early when the episode ends.

    The returned step is the last one taken, with ``reward`` the sum of the
    rewards of all steps taken (float32, accumulated in float64).
    """

    def __init__(self, env: Env, repeat: int):
        if not (isinstance(repeat, (int, np.integer)) and repeat >= 1):
            raise EnvError(f"action_repeat must be a positive integer, got {repeat!r}")
        super().__init__(env)
        self.repeat = int(repeat)

    @property
    def timing(self) -> Timing:
        return self.env.timing.repeated(self.repeat)

    def step(self, action) -> dict[str, np.ndarray]:
        total = 0.0
        for _ in range(self.repeat):
            step = self.env.step(action)
            total += float(step["reward"])
            if step["is_last"]:
                break
        step["reward"] = np.asarray(total, dtype=np.float32)
        return step


class TimeLimit(Wrapper):
    """End an episode after ``limit`` steps of this wrapper with ``is_last`` but not ``is_terminal``.

    A step that is both the env's own terminal step and the limit stays
    terminal. The wrapped env's own limits still apply, so this can only
    shorten episodes.
    """

    def __init__(self, env: Env, limit: int):
        if not (isinstance(limit, (int, np.integer)) and limit >= 1):
            raise EnvError(f"time_limit must be a positive integer or None, got {limit!r}")
        super().__init__(env)
        self.limit = int(limit)
        self._count = 0
        self._done = True

    def reset(self) -> dict[str, np.ndarray]:
        self._count = 0
        self._done = False
        return self.env.reset()

    def step(self, action) -> dict[str, np.ndarray]:
        if self._done:
            # The inner env may not know the episode ended (we cut it), so refuse here.
            raise EnvError(f"{self.name}: call reset() before step(), and again after a step with is_last")
        step = self.env.step(action)
        self._count += 1
        if self._count >= self.limit:
            step["is_last"] = np.asarray(True)
        self._done = bool(step["is_last"])
        return step
