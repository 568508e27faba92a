"""Observation and action specs shared by every environment adapter.

An environment in reverie speaks dictionaries of numpy arrays. Observations
carry their own keys (``vector`` for state features, ``image`` for pixels,
or a user's Dict keys) plus four bookkeeping keys that every step has:

- ``reward``: float32 scalar, the reward received on arriving at this step
  (0 on the first step of an episode);
- ``is_first``: bool, this step starts an episode;
- ``is_last``: bool, this step ends an episode (terminated or truncated);
- ``is_terminal``: bool, the episode ended because the task ended
  (terminated), not because of a time limit (truncated). Bootstrapping uses
  ``1 - is_terminal``.

Actions always cross the adapter boundary in the model's convention:
discrete actions as an integer index, continuous actions as float32 in
``[-1, 1]`` per dimension (the adapter rescales to the true bounds).

What a step and an observation mean is declared too, for analyses that report in seconds and by
name: ``timing`` (a :class:`Timing`: seconds per agent step, action repeat included, or unknown)
and ``obs_names`` (the names of each vector observation's dimensions).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from reverie.specs import ActionSpec, ArraySpec

#: Keys every step dictionary carries besides the observation keys.
STEP_KEYS = ("reward", "is_first", "is_last", "is_terminal")


class EnvError(ValueError):
    """A bad environment name, setting, action or space, said in one sentence."""


@dataclass(frozen=True)
class Timing:
    """How much simulated time one agent step of an environment covers.

    ``seconds`` is None when the environment does not say (then analyses count in steps); ``source``
    names where the number comes from (e.g. ``"dt"``, ``"control_timestep"``), ``"unknown"`` otherwise.
    """

    seconds: float | None = None
    source: str = "unknown"

    def __post_init__(self):
        if self.seconds is not None and not (self.seconds > 0 and np.isfinite(self.seconds)):
            raise EnvError(f"a time step must be a positive number of seconds, got {self.seconds!r}")

    def repeated(self, repeat: int) -> Timing:
        """The timing of one step that repeats the action ``repeat`` times."""
        if self.seconds is None or repeat == 1:
            return self
        return Timing(self.seconds * repeat, f"{self.source} x {repeat} (action repeat)")


def default_obs_names(obs_spec: dict[str, ArraySpec]) -> dict[str, tuple[str, ...]]:
    """``key[i]`` for every dimension of every vector observation (images have no named dimensions)."""
    return {k: tuple(f"{k}[{i}]" for i in range(int(np.prod(s.shape)))) for k, s in obs_spec.items()
            if not s.is_image}


@runtime_checkable
class Env(Protocol):
    """What every adapter and wrapper offers (one environment, no batch axis).

    ``obs_spec`` holds the observation keys only (``vector`` float32 ``[D]``,
    ``image`` uint8 ``[H, W, 3]``, or a user's Dict keys); every step dict
    also has the :data:`STEP_KEYS`.
    """

    obs_spec: dict[str, ArraySpec]
    act_spec: ActionSpec

    @property
    def timing(self) -> Timing:
        """Seconds per agent step (action repeat included); ``Timing()`` when unknown."""
        ...

    @property
    def obs_names(self) -> dict[str, tuple[str, ...]]:
        """Names of the dimensions of each vector observation key (images absent); ``key[i]`` when the
        environment gives none (:func:`default_obs_names`)."""
        ...

    def reset(self) -> dict[str, np.ndarray]:
        """Start an episode: obs + ``reward=0, is_first=True, is_last=False, is_terminal=False``."""
        ...

    def step(self, action) -> dict[str, np.ndarray]:
        """Act once: ``action`` is an int index or float32 ``[A]`` in [-1, 1]."""
        ...

    def render(self) -> np.ndarray:
        """The current frame for videos, uint8 ``[H, W, 3]``."""
        ...

    def close(self) -> None: ...


def make_step(
    obs: dict[str, np.ndarray],
    reward: float = 0.0,
    is_first: bool = False,
    is_last: bool = False,
    is_terminal: bool = False,
) -> dict[str, np.ndarray]:
    """One step dict: ``obs`` plus 0-d numpy ``reward`` (float32) and the three bool flags."""
    step = dict(obs)
    step["reward"] = np.asarray(reward, dtype=np.float32)
    step["is_first"] = np.asarray(is_first, dtype=bool)
    step["is_last"] = np.asarray(is_last, dtype=bool)
    step["is_terminal"] = np.asarray(is_terminal, dtype=bool)
    return step


def check_step(step: dict[str, np.ndarray], obs_spec: dict[str, ArraySpec]) -> None:
    """Raise :class:`EnvError` unless ``step`` matches ``obs_spec`` and the step-dict convention."""
    missing = [k for k in (*obs_spec, *STEP_KEYS) if k not in step]
    if missing:
        raise EnvError(f"step dict lacks keys {missing}; it has {sorted(step)}")
    for key, spec in obs_spec.items():
        value = step[key]
        if value.shape != tuple(spec.shape) or value.dtype != np.dtype(spec.dtype):
            raise EnvError(
                f"observation {key!r} is {value.dtype}{list(value.shape)} but its spec "
                f"says {np.dtype(spec.dtype)}{list(spec.shape)}"
            )
    if step["reward"].dtype != np.float32 or step["reward"].shape != ():
        reward = step["reward"]
        raise EnvError(f"reward must be a float32 scalar, got {reward.dtype}{list(reward.shape)}")
    for flag in STEP_KEYS[1:]:
        if step[flag].dtype != bool or step[flag].shape != ():
            raise EnvError(f"{flag} must be a bool scalar, got {step[flag].dtype}{list(step[flag].shape)}")
    if step["is_terminal"] and not step["is_last"]:
        raise EnvError("a step with is_terminal=True must also have is_last=True")


def check_finite(step: dict[str, np.ndarray], obs_keys, where: str = "") -> None:
    """Raise :class:`EnvError` if a float observation or the reward holds NaN or infinity.

    step: a step dict with any leading batch axes. A world model trained on such values
    silently turns every loss into NaN, so they are stopped where they enter.
    """
    for key in (*obs_keys, "reward"):
        value = np.asarray(step[key])
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            bad = "NaN" if np.isnan(value).any() else "infinity"
            raise EnvError(f"the environment returned {bad} in {'the reward' if key == 'reward' else repr(key)}"
                           f"{where}; fix the environment or wrap it to clean its outputs")


def discrete_index(action, size: int) -> int:
    """The integer in ``[0, size)`` that ``action`` (int, numpy integer or one-element array) names."""
    arr = np.asarray(action)
    if arr.size != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise EnvError(
            f"a discrete action must be one integer index in [0, {size}), got {arr.dtype}{list(arr.shape)}"
        )
    index = int(arr.reshape(()))
    if not 0 <= index < size:
        raise EnvError(f"discrete action {index} is out of range: choose an index in [0, {size})")
    return index


def unit_to_bounds(action, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Map float ``action [A]`` from [-1, 1] onto ``[low, high]`` (both ``[A]``), clipping first.

    Clipping means a policy that overshoots [-1, 1] still gives a valid
    action: -1 maps to ``low``, +1 to ``high``, 0 to their midpoint.
    """
    arr = np.asarray(action, dtype=np.float64)
    if arr.shape != low.shape:
        if arr.size != low.size:
            raise EnvError(
                f"a continuous action must be float32 [{low.size}] in [-1, 1], got shape {list(arr.shape)}"
            )
        arr = arr.reshape(low.shape)
    if not np.all(np.isfinite(arr)):
        raise EnvError(f"continuous action contains NaN or inf: {arr.tolist()}")
    arr = np.clip(arr, -1.0, 1.0)
    return low + (arr + 1.0) * 0.5 * (high - low)
