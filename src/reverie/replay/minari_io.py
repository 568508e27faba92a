"""Conversion between reverie's replay rows and episodes in the Minari dataset format (pure: no files).

A Minari episode of ``T`` transitions holds observations ``[T + 1]``, actions, rewards,
terminations and truncations ``[T]`` in the gymnasium spaces the dataset declares. reverie's replay
stores one row per step, the step-dict convention of :mod:`reverie.envs`: row 0 of an episode is its
reset (``is_first``, reward 0, the zero action), row ``t`` holds observation ``t``, the action that
led into it (model space: one-hot for discrete actions, [-1, 1] for continuous ones), the reward of
that transition and ``is_last``/``is_terminal`` on the episode's final row. So::

    rows[0]   = obs[0], action 0, reward 0, is_first
    rows[t]   = obs[t], to_model(actions[t - 1]), rewards[t - 1], is_last = t == T and (term or trunc),
                is_terminal = terminations[t - 1]

Spaces follow :class:`reverie.envs.gym_env.GymEnv`'s rules (state observations): a uint8
``Box [H, W, 3]`` is an image kept at its size, another ``Box`` or a ``MultiBinary`` is flattened to
float32, a ``Discrete`` observation is one-hot, a ``Dict`` maps each entry by its key; a single
top-level entry is called ``image`` or ``vector``. Actions are ``Discrete`` or a bounded float ``Box``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeGuard

import gymnasium as gym
import numpy as np

from reverie.specs import ActionSpec, ArraySpec

__all__ = ["DatasetError", "Episode", "action_to_model", "action_to_space", "episode_rows", "obs_from_space",
           "obs_to_space", "reverie_spaces", "space_specs", "split_episodes"]

#: The replay keys of a step besides its observation keys.
CORE_KEYS = ("action", "reward", "is_first", "is_last", "is_terminal")


class DatasetError(ValueError):
    """A dataset reverie cannot use (missing keys, spaces that do not match), said in one sentence."""


@dataclass
class Episode:
    """One episode of ``T`` transitions in reverie's conventions."""

    obs: dict[str, np.ndarray]
    """``{key: [T + 1, *spec.shape]}``."""
    action: np.ndarray
    """``[T, A]`` float32 model-space actions."""
    reward: np.ndarray
    """``[T]`` float32."""
    terminated: np.ndarray
    """``[T]`` bool."""
    truncated: np.ndarray
    """``[T]`` bool."""

    def __len__(self) -> int:
        return len(self.reward)


# -- spaces ------------------------------------------------------------------------------------------
def _is_image(space: gym.Space) -> TypeGuard[gym.spaces.Box]:
    return (isinstance(space, gym.spaces.Box) and space.dtype == np.uint8 and len(space.shape) == 3
            and space.shape[2] == 3)


def _entry_spec(space: gym.Space, where: str) -> ArraySpec:
    if _is_image(space):
        return ArraySpec(tuple(space.shape), np.dtype(np.uint8))
    if isinstance(space, (gym.spaces.Box, gym.spaces.MultiBinary)):
        return ArraySpec((int(np.prod(space.shape)),), np.dtype(np.float32))
    if isinstance(space, gym.spaces.Discrete):
        return ArraySpec((int(space.n),), np.dtype(np.float32))
    raise _unsupported_obs(space, where)


def _unsupported_obs(space: gym.Space, where: str) -> DatasetError:
    return DatasetError(f"the dataset's observation space{where} is {space}, which reverie does not support "
                        "(Box, Discrete, MultiBinary or a Dict of those)")


def _obs_shape(space: gym.Space, where: str) -> tuple[int, ...]:
    """The shape an observation entry's space declares (:class:`DatasetError` for a space without one)."""
    if space.shape is None:
        raise _unsupported_obs(space, where)
    return space.shape


def _unsupported_actions(space: gym.Space) -> DatasetError:
    return DatasetError(f"the dataset's action space is {space}; reverie trains on Discrete or bounded float "
                        "Box actions")


def _action_box(space: gym.Space) -> gym.spaces.Box:
    """``space`` as the Box of continuous actions it must be when it is not Discrete."""
    if not isinstance(space, gym.spaces.Box):
        raise _unsupported_actions(space)
    return space


def space_specs(obs_space: gym.Space, act_space: gym.Space) -> tuple[dict[str, ArraySpec], ActionSpec]:
    """reverie's observation specs and action spec of a dataset's spaces (:class:`DatasetError` if unsupported)."""
    if isinstance(obs_space, gym.spaces.Dict):
        obs_spec: dict[str, ArraySpec] = {}
        for key, sub in obs_space.spaces.items():
            if not isinstance(key, str) or key in CORE_KEYS or key.startswith("__"):
                raise DatasetError(f"the dataset's observation key {key!r} clashes with reverie's step keys "
                                   f"{CORE_KEYS}; rename it")
            obs_spec[key] = _entry_spec(sub, f" entry {key!r}")
    else:
        spec = _entry_spec(obs_space, "")
        obs_spec = {"image" if spec.is_image else "vector": spec}
    if isinstance(act_space, gym.spaces.Discrete):
        return obs_spec, ActionSpec(discrete=True, size=int(act_space.n))
    if (isinstance(act_space, gym.spaces.Box) and np.issubdtype(act_space.dtype, np.floating)
            and np.all(np.isfinite(act_space.low)) and np.all(np.isfinite(act_space.high))):
        return obs_spec, ActionSpec(discrete=False, size=int(np.prod(act_space.shape)))
    raise _unsupported_actions(act_space)


def reverie_spaces(obs_spec: Mapping[str, ArraySpec], act_spec: ActionSpec) -> tuple[gym.Space, gym.Space]:
    """Gymnasium spaces that hold reverie's own observations and model-space actions as they are
    (for runs whose environment has no gymnasium spaces these observations fit, e.g. rendered pixels)."""
    def box(spec: ArraySpec) -> gym.spaces.Box:
        if spec.is_image:
            return gym.spaces.Box(0, 255, tuple(spec.shape), np.uint8)
        return gym.spaces.Box(-np.inf, np.inf, tuple(spec.shape), np.dtype(spec.dtype))

    if len(obs_spec) == 1 and next(iter(obs_spec)) in ("image", "vector"):
        obs_space: gym.Space = box(next(iter(obs_spec.values())))
    else:
        obs_space = gym.spaces.Dict({k: box(v) for k, v in obs_spec.items()})
    if act_spec.discrete:
        return obs_space, gym.spaces.Discrete(act_spec.size)
    return obs_space, gym.spaces.Box(-1.0, 1.0, (act_spec.size,), np.float32)


# -- observations ------------------------------------------------------------------------------------
def _entry_from_space(space: gym.Space, raw: object, n: int, where: str) -> np.ndarray:
    arr = np.asarray(raw)
    if arr.shape[:1] != (n,):
        raise DatasetError(f"the dataset's observations{where} hold {arr.shape[:1] or 'no'} steps where the episode "
                           f"needs {n} (one more than its actions)")
    if isinstance(space, gym.spaces.Discrete):
        index = arr.reshape(n).astype(np.int64) - int(space.start)
        if index.min() < 0 or index.max() >= space.n:
            raise DatasetError(f"the dataset's observations{where} leave their space {space}")
        return np.eye(int(space.n), dtype=np.float32)[index]
    shape = _obs_shape(space, where)
    if arr.shape[1:] != shape:
        raise DatasetError(f"the dataset's observations{where} have shape {list(arr.shape[1:])} but its observation "
                           f"space declares {list(shape)}")
    if _is_image(space):
        return arr.astype(np.uint8)
    return arr.astype(np.float32).reshape(n, -1)


def obs_from_space(space: gym.Space, raw: object, n: int) -> dict[str, np.ndarray]:
    """``n`` observations as the dataset stores them -> ``{key: [n, *spec.shape]}``."""
    if isinstance(space, gym.spaces.Dict):
        if not isinstance(raw, Mapping):
            raise DatasetError("the dataset's observation space is a Dict but its episodes store one array")
        missing = sorted(set(space.spaces) - set(raw))
        if missing:
            raise DatasetError(f"the dataset's episodes lack the observation keys {missing} that its Dict space "
                               "declares")
        return {k: _entry_from_space(sub, raw[k], n, f" {k!r}") for k, sub in space.spaces.items()}
    spec = _entry_spec(space, "")
    return {("image" if spec.is_image else "vector"): _entry_from_space(space, raw, n, "")}


def _entry_to_space(space: gym.Space, value: np.ndarray, where: str) -> np.ndarray:
    n = value.shape[0]
    if isinstance(space, gym.spaces.Discrete):
        return (value.argmax(-1) + int(space.start)).astype(space.dtype)
    return value.reshape(n, *_obs_shape(space, where)).astype(space.dtype)


def obs_to_space(space: gym.Space, obs: Mapping[str, np.ndarray]) -> np.ndarray | dict[str, np.ndarray]:
    """Inverse of :func:`obs_from_space`: ``{key: [n, ...]}`` -> arrays (or a dict) in ``space``."""
    if isinstance(space, gym.spaces.Dict):
        return {k: _entry_to_space(sub, obs[k], f" {k!r}") for k, sub in space.spaces.items()}
    (value,) = obs.values()
    return _entry_to_space(space, value, "")


# -- actions -----------------------------------------------------------------------------------------
def action_to_model(space: gym.Space, actions: object, n: int) -> np.ndarray:
    """``n`` actions in ``space`` -> model-space float32 ``[n, A]``."""
    arr = np.asarray(actions)
    if arr.shape[:1] != (n,):
        raise DatasetError(f"the dataset's episode holds {arr.shape[:1] or 'no'} actions but {n} rewards")
    if isinstance(space, gym.spaces.Discrete):
        if arr.size != n or not np.issubdtype(arr.dtype, np.integer):
            raise DatasetError(f"the dataset's actions are {arr.dtype}{list(arr.shape[1:])} but its action space "
                               f"{space} takes one integer per step")
        index = arr.reshape(n).astype(np.int64) - int(space.start)
        if n and (index.min() < 0 or index.max() >= space.n):
            raise DatasetError(f"the dataset's actions leave their space {space}")
        return np.eye(int(space.n), dtype=np.float32)[index]
    box = _action_box(space)
    if arr.shape[1:] != box.shape:
        raise DatasetError(f"the dataset's actions have shape {list(arr.shape[1:])} but its action space declares "
                           f"{list(box.shape)}")
    low, high = box.low.astype(np.float64).reshape(-1), box.high.astype(np.float64).reshape(-1)
    unit = 2.0 * (arr.reshape(n, -1).astype(np.float64) - low) / (high - low) - 1.0
    return np.clip(unit, -1.0, 1.0).astype(np.float32)


def action_to_space(space: gym.Space, model: np.ndarray) -> np.ndarray:
    """Model-space actions ``[n, A]`` -> actions in ``space`` (indices, or floats on the Box's bounds)."""
    if isinstance(space, gym.spaces.Discrete):
        return (model.argmax(-1) + int(space.start)).astype(np.int64)
    box = _action_box(space)
    low, high = box.low.astype(np.float64).reshape(-1), box.high.astype(np.float64).reshape(-1)
    unit = np.clip(model.astype(np.float64), -1.0, 1.0)
    return (low + (unit + 1.0) * 0.5 * (high - low)).reshape(len(model), *box.shape).astype(box.dtype)


# -- episodes <-> replay rows ------------------------------------------------------------------------
def episode_rows(ep: Episode) -> dict[str, np.ndarray]:
    """The replay rows ``{key: [T + 1, ...]}`` of one episode (see the module docstring)."""
    t = len(ep)
    zero_action = np.zeros((1, ep.action.shape[1]), np.float32)
    is_last = np.zeros(t + 1, bool)
    is_last[t] = t > 0 and bool(ep.terminated[-1] or ep.truncated[-1])
    return {
        **{k: np.asarray(v) for k, v in ep.obs.items()},
        "action": np.concatenate([zero_action, ep.action.astype(np.float32)]),
        "reward": np.concatenate([[0.0], ep.reward]).astype(np.float32),
        "is_first": np.arange(t + 1) == 0,
        "is_last": is_last,
        "is_terminal": np.concatenate([[False], ep.terminated.astype(bool)]),
    }


def split_episodes(rows: Mapping[str, np.ndarray], obs_keys: list[str]) -> list[Episode]:
    """Cut one stream's consecutive rows ``{key: [L, ...]}`` into episodes at ``is_first``.

    Rows before the first ``is_first`` (an episode whose start was evicted) are dropped; an episode
    the rows end inside is kept with neither termination nor truncation on its last transition, and
    one with no transition (a lone reset) is dropped.
    """
    missing = [k for k in (*CORE_KEYS, *obs_keys) if k not in rows]
    if missing:
        raise DatasetError(f"the replay rows lack the keys {missing}")
    starts = list(np.flatnonzero(rows["is_first"]))
    out: list[Episode] = []
    for begin, end in zip(starts, starts[1:] + [len(rows["is_first"])]):
        last = np.flatnonzero(rows["is_last"][begin:end])
        stop = begin + int(last[0]) + 1 if len(last) else end     # rows after an episode's last one are not its
        if stop - begin < 2:
            continue
        term = rows["is_terminal"][begin + 1:stop].astype(bool)
        ended = np.zeros(stop - begin - 1, bool)
        ended[-1] = bool(rows["is_last"][stop - 1])
        out.append(Episode(obs={k: rows[k][begin:stop] for k in obs_keys},
                           action=rows["action"][begin + 1:stop].astype(np.float32),
                           reward=rows["reward"][begin + 1:stop].astype(np.float32),
                           terminated=term, truncated=ended & ~term))
    return out
