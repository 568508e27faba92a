"""What an environment returns, checked once against what it declares.

The adapters call these at an environment's first reset and first step only,
so a mismatch between the declared spaces and the real outputs (a Box of 4
numbers that returns 5, text where numbers are declared, a float image, a
value outside a bounded Box, a Dict with another set of keys, a reward that
is not one finite number, flags that are not bools) is answered in one
sentence naming the key, what was declared and what came back, instead of a
traceback from deep inside a later conversion. Later steps are not checked:
the checks must cost nothing over a run (non-finite values are caught on
every step by :func:`reverie.envs.spaces.check_finite` where data enters
training).

Each ``where`` argument names the call, e.g. ``"CartPole-v1 step()"``; each
``path`` names the observation entry as the env's author knows it:
``observation`` or ``observation['pos']``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeGuard

import gymnasium as gym
import numpy as np

from reverie.envs.spaces import EnvError

#: numpy dtype kinds that are numbers reverie can turn into float32 (bool, int, uint, float).
NUMERIC_KINDS = "biuf"


def is_image_space(space: gym.Space) -> TypeGuard[gym.spaces.Box]:
    """Whether ``space`` is a uint8 ``Box [H, W, 3]``, which reverie treats as an image."""
    return (
        isinstance(space, gym.spaces.Box)
        and space.dtype == np.uint8
        and len(space.shape) == 3
        and space.shape[2] == 3
    )


def _short(value: object, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters, numpy scalars shown as plain numbers."""
    text = repr(value.item() if isinstance(value, np.generic) else value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _as_array(value: object, path: str, where: str) -> np.ndarray:
    """``value`` as a numpy array, or :class:`EnvError` if it is ragged or otherwise not an array."""
    try:
        return np.asarray(value)
    except (ValueError, TypeError):
        raise EnvError(
            f"{where} returned {path} = {_short(value)}, which is not an array of numbers; "
            "return a numpy array of the shape the observation_space declares"
        ) from None


# -- gymnasium: reset and step results ------------------------------------------------------------


def check_gym_reset(result: object, space: gym.Space | None, where: str) -> None:
    """Check a gymnasium ``reset()`` result: an ``(observation, info)`` pair whose observation fits ``space``.

    ``space`` None skips the observation (``obs="pixels"`` ignores it).
    """
    if not (isinstance(result, tuple) and len(result) == 2):
        raise EnvError(
            f"{where} returned {_short(result)}, not the pair (observation, info) that gymnasium's "
            "reset API returns; update the env to gymnasium's API"
        )
    if space is not None:
        check_gym_observation(result[0], space, where)


def check_gym_step(result: object, space: gym.Space | None, where: str) -> None:
    """Check a gymnasium ``step()`` result: five values, an observation fitting ``space``,
    one finite number as reward and bools as ``terminated`` and ``truncated``."""
    if not (isinstance(result, tuple) and len(result) == 5):
        got = f"{len(result)} values" if isinstance(result, tuple) else _short(result)
        raise EnvError(
            f"{where} returned {got}, not the five values (observation, reward, terminated, truncated, "
            "info) of gymnasium's step API; update the env to gymnasium's API"
        )
    obs, reward, terminated, truncated, _ = result
    if space is not None:
        check_gym_observation(obs, space, where)
    check_reward(reward, where)
    check_flag(terminated, "terminated", where)
    check_flag(truncated, "truncated", where)


# -- gymnasium: observations ----------------------------------------------------------------------


def check_gym_observation(obs: object, space: gym.Space, where: str, path: str = "observation") -> None:
    """Raise :class:`EnvError` unless ``obs`` has the keys, shape, dtype and bounds ``space`` declares."""
    if isinstance(space, gym.spaces.Dict):
        _check_dict(obs, space, where, path)
        return
    if isinstance(obs, Mapping):
        raise EnvError(
            f"{where} returned {path} as a dict with keys {list(obs)}, but observation_space declares "
            f"{space}; return what the space declares or declare a gymnasium.spaces.Dict"
        )
    if isinstance(space, gym.spaces.Box):
        _check_box(obs, space, where, path)
    elif isinstance(space, gym.spaces.MultiBinary):
        _check_multibinary(obs, space, where, path)
    elif isinstance(space, gym.spaces.Discrete):
        _check_discrete(obs, space, where, path)


def _check_dict(obs: object, space: gym.spaces.Dict, where: str, path: str) -> None:
    declared = list(space.spaces)
    if not isinstance(obs, Mapping):
        raise EnvError(
            f"{where} returned {path} as {type(obs).__name__}, but observation_space is a Dict with keys "
            f"{declared}; return a dict with exactly those keys"
        )
    missing = [k for k in declared if k not in obs]
    extra = [k for k in obs if k not in space.spaces]
    if missing or extra:
        parts = ([f"missing {missing}"] if missing else []) + ([f"unexpected {extra}"] if extra else [])
        raise EnvError(
            f"{where} returned {path} with keys {list(obs)}, but observation_space declares {declared} "
            f"({', '.join(parts)}); return exactly the declared keys or change the Dict space"
        )
    for key, sub in space.spaces.items():
        check_gym_observation(obs[key], sub, where, f"{path}[{key!r}]")


def _check_box(obs: object, space: gym.spaces.Box, where: str, path: str) -> None:
    arr = _as_array(obs, path, where)
    if is_image_space(space) and arr.dtype != space.dtype:
        raise EnvError(
            f"{where} returned {path} as {arr.dtype}, but observation_space declares {space.dtype} images; "
            "return uint8 pixels in [0, 255] (e.g. (frame * 255).astype(np.uint8)) or declare a float Box"
        )
    _check_numeric(arr, space, where, path)
    _check_shape(arr, space, where, path)
    _check_bounds(arr, space, where, path)


def _check_multibinary(obs: object, space: gym.spaces.MultiBinary, where: str, path: str) -> None:
    arr = _as_array(obs, path, where)
    _check_numeric(arr, space, where, path)
    _check_shape(arr, space, where, path)
    if not np.isin(arr, (0, 1)).all():
        bad = arr[~np.isin(arr, (0, 1))].reshape(-1)[0]
        raise EnvError(
            f"{where} returned {path} holding {_short(bad)}, but observation_space is {space}, whose entries are "
            "0 or 1; return only 0s and 1s or declare a Box"
        )


def _check_discrete(obs: object, space: gym.spaces.Discrete, where: str, path: str) -> None:
    arr = _as_array(obs, path, where)
    start, n = int(space.start), int(space.n)
    if arr.size != 1 or arr.dtype.kind not in "iu":
        raise EnvError(
            f"{where} returned {path} = {_short(obs)}, but observation_space is {space}: return one "
            f"integer in [{start}, {start + n})"
        )
    value = int(arr.reshape(()))
    if not start <= value < start + n:
        raise EnvError(
            f"{where} returned {path} = {value}, outside observation_space {space}, whose values are "
            f"[{start}, {start + n}); return a value in that range or enlarge the space"
        )


def _check_numeric(arr: np.ndarray, space: gym.spaces.Box | gym.spaces.MultiBinary, where: str, path: str) -> None:
    if arr.dtype.kind not in NUMERIC_KINDS:
        raise EnvError(
            f"{where} returned {path} with dtype {arr.dtype} (not numbers), but observation_space declares "
            f"{space.dtype} numbers; return a numeric numpy array"
        )


def _check_shape(arr: np.ndarray, space: gym.spaces.Box | gym.spaces.MultiBinary, where: str, path: str) -> None:
    if arr.shape != tuple(space.shape):
        raise EnvError(
            f"{where} returned {path} with shape {list(arr.shape)}, but observation_space declares shape "
            f"{list(space.shape)}; return what observation_space declares or declare what the env returns"
        )


def _check_bounds(arr: np.ndarray, space: gym.spaces.Box, where: str, path: str) -> None:
    """The first entry below ``space.low`` or above ``space.high`` (infinite bounds never bind, NaN is not judged)."""
    with np.errstate(invalid="ignore"):
        sides = (("below the low", arr < space.low, space.low), ("above the high", arr > space.high, space.high))
    for side, outside, bounds in sides:
        if outside.any():
            index = tuple(int(i) for i in np.argwhere(outside)[0])
            entry = path + "".join(f"[{i}]" for i in index)
            raise EnvError(
                f"{where} returned {entry} = {float(arr[index]):g}, {side} bound {float(bounds[index]):g} "
                "that observation_space declares; keep observations inside the declared Box or widen its bounds"
            )


# -- rewards and flags ----------------------------------------------------------------------------


def check_reward(reward: object, where: str) -> None:
    """Raise :class:`EnvError` unless ``reward`` is one finite number (a Python or numpy scalar)."""
    try:
        arr = np.asarray(reward)
    except (ValueError, TypeError):
        arr = np.asarray(None)
    if arr.ndim != 0 or arr.dtype.kind not in NUMERIC_KINDS:
        raise EnvError(
            f"{where} returned reward {_short(reward)} ({type(reward).__name__}), but a reward must be one "
            "number; return a Python float or a numpy scalar"
        )
    if not np.isfinite(arr):
        raise EnvError(
            f"{where} returned reward {float(arr)}, but a reward must be finite; fix the env or wrap it "
            "to clean its rewards"
        )


def check_flag(value: object, name: str, where: str) -> None:
    """Raise :class:`EnvError` unless ``value`` is a bool (Python, numpy, or a 0-d bool array)."""
    arr = np.asarray(value)
    if arr.dtype != np.bool_ or arr.ndim != 0:
        raise EnvError(
            f"{where} returned {name}={_short(value)} ({type(value).__name__}), but {name} must be a bool; "
            "return True or False"
        )


# -- dm_control -----------------------------------------------------------------------------------


def check_dm_observation(observation: Mapping[str, Any], specs: Mapping[str, Any], where: str) -> None:
    """Raise :class:`EnvError` unless a dm_env observation dict has the keys and shapes of its ``observation_spec()``."""
    declared = list(specs)
    if list(observation) != declared:
        raise EnvError(
            f"{where} returned observation keys {list(observation)}, but observation_spec() declares "
            f"{declared}; make the task's observation match its spec"
        )
    for key, spec in specs.items():
        shape = np.shape(observation[key])
        if shape != tuple(spec.shape):
            raise EnvError(
                f"{where} returned observation[{key!r}] with shape {list(shape)}, but observation_spec() "
                f"declares {list(spec.shape)}; make the task's observation match its spec"
            )
