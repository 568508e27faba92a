"""POPGym's partially observable tasks (Morad et al., 2023), ``popgym:RepeatPreviousEasy``, from the ``popgym`` package.

POPGym registers its environments with gymnasium as ``popgym-<Name><Difficulty>-v0``, Difficulty one of Easy,
Medium, Hard: AutoEncode, RepeatPrevious, RepeatFirst, CountRecall, PositionOnlyCartPole, PositionOnlyPendulum,
VelocityOnlyCartpole, NoisyPositionOnlyCartPole, NoisyPositionOnlyPendulum, MultiarmedBandit, HigherLower,
Battleship, Concentration and MineSweeper (the Labyrinth tasks need the package's ``navigation`` extra). reverie
names them ``popgym:<Name><Difficulty>`` (the full gymnasium id is accepted too).

Observations become one float32 ``vector`` with gymnasium's own flattening (:func:`gymnasium.spaces.flatten`):
``Discrete`` one-hot, ``MultiDiscrete`` and ``Tuple`` their parts' flattenings side by side, ``Box`` flattened.
Actions: ``Discrete(n)`` is ``n`` discrete actions, ``MultiDiscrete`` (Battleship's and MineSweeper's board cells)
one discrete action per combination (row-major, :func:`numpy.unravel_index`), ``Box`` (the pendulum tasks)
continuous in [-1, 1] rescaled to the bounds. ``terminated`` sets ``is_terminal``; ``truncated`` only ``is_last``.
POPGym's tasks have no clock (analyses count in steps); :meth:`PopGymEnv.render` draws the observation vector as
a strip of grey cells.
"""

from __future__ import annotations

import difflib
from typing import Any

import numpy as np

from reverie.envs.packages import missing_package
from reverie.envs.spaces import (ActionSpec, ArraySpec, EnvError, Timing, default_obs_names, discrete_index, make_step,
                                 unit_to_bounds)

__all__ = ["PopGymEnv", "popgym_ids"]

PREFIX, SUFFIX = "popgym-", "-v0"


def popgym_ids() -> list[str]:
    """The task names popgym registers with gymnasium, as reverie spells them (``RepeatPreviousEasy``, ...)."""
    import gymnasium as gym
    import popgym  # noqa: F401  (registers the ids)

    return sorted(k[len(PREFIX):-len(SUFFIX)] for k in gym.registry if k.startswith(PREFIX) and k.endswith(SUFFIX))


def _task_name(task: str) -> str:
    """``task`` without the gymnasium id's ``popgym-`` and ``-v0``."""
    if task.startswith(PREFIX):
        task = task[len(PREFIX):]
    return task[:-len(SUFFIX)] if task.endswith(SUFFIX) else task


class PopGymEnv:
    """One POPGym task speaking step dicts (see the module docstring).

    Args:
        task: ``"RepeatPreviousEasy"`` (or ``"popgym-RepeatPreviousEasy-v0"``).
        seed: seeds the first reset; later resets continue the same random stream.
    """

    def __init__(self, task: str, seed: int | None = 0):
        try:
            names = popgym_ids()
        except ModuleNotFoundError as err:
            raise missing_package(f"popgym:{task}", err) or err from None
        import gymnasium as gym

        name = _task_name(task)
        if name not in names:
            close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
            hint = (f"did you mean {', '.join(repr(c) for c in close)}?" if close
                    else "see reverie.envs.popgym_env.popgym_ids()")
            raise EnvError(f"POPGym has no task {task!r}; {hint}")
        self.name = f"popgym:{name}"
        self._env = gym.make(PREFIX + name + SUFFIX, disable_env_checker=True)
        self._obs_space = self._env.observation_space
        self.obs_spec = {"vector": ArraySpec((int(gym.spaces.flatdim(self._obs_space)),), np.dtype(np.float32))}
        space = self._env.action_space
        self._cells: tuple[int, ...] | None = None
        self._bounds: tuple[np.ndarray, np.ndarray] | None = None
        if isinstance(space, gym.spaces.Discrete):
            self.act_spec = ActionSpec(discrete=True, size=int(space.n))
        elif isinstance(space, gym.spaces.MultiDiscrete):
            self._cells = tuple(int(n) for n in space.nvec.reshape(-1))
            self.act_spec = ActionSpec(discrete=True, size=int(np.prod(self._cells)))
        elif isinstance(space, gym.spaces.Box):
            self._bounds = (space.low.astype(np.float64), space.high.astype(np.float64))
            self.act_spec = ActionSpec(discrete=False, size=int(np.prod(space.shape)))
        else:
            raise EnvError(f"{self.name} has the action space {space}, which reverie cannot drive")
        self._seed = seed
        self._last = np.zeros(self.obs_spec["vector"].shape, np.float32)
        self._needs_reset = True

    @property
    def timing(self) -> Timing:
        """Unknown: POPGym's tasks have no clock."""
        return Timing()

    @property
    def obs_names(self) -> dict[str, tuple[str, ...]]:
        return default_obs_names(self.obs_spec)

    def _observe(self, raw: Any) -> dict[str, np.ndarray]:
        import gymnasium as gym

        self._last = np.asarray(gym.spaces.flatten(self._obs_space, raw), dtype=np.float32).reshape(-1)
        return {"vector": self._last}

    def reset(self) -> dict[str, np.ndarray]:
        raw, _ = self._env.reset(seed=self._seed)
        self._seed = None                                       # later episodes continue the seeded stream
        self._needs_reset = False
        return make_step(self._observe(raw), is_first=True)

    def _action(self, action: Any) -> Any:
        if self._bounds is not None:
            return unit_to_bounds(action, *self._bounds).astype(np.float32)
        index = discrete_index(action, self.act_spec.size)
        if self._cells is not None:
            return np.asarray(np.unravel_index(index, self._cells), dtype=np.int64)
        return index

    def step(self, action: Any) -> dict[str, np.ndarray]:
        if self._needs_reset:
            raise EnvError(f"{self.name}: call reset() before step(), and again after a step with is_last")
        raw, reward, terminated, truncated, _ = self._env.step(self._action(action))
        self._needs_reset = bool(terminated or truncated)
        return make_step(self._observe(raw), reward=float(reward), is_last=self._needs_reset,
                         is_terminal=bool(terminated))

    def render(self) -> np.ndarray:
        """The last observation as a strip of grey cells, uint8 ``[16, 16 D, 3]`` (values squashed by tanh)."""
        grey = np.round(255 * (np.tanh(self._last) + 1) / 2).astype(np.uint8)
        return np.repeat(np.repeat(grey[None, :, None], 16, 0), 16, 1).repeat(3, 2)

    def close(self) -> None:
        self._env.close()
