"""Shapes and types of observations and actions, shared by environments, models and agents.

These are the only facts about an environment that the pure core (models,
planners, behaviour learners) needs, so they live here rather than in
:mod:`reverie.envs`: importing a model never imports gymnasium.

Actions always cross the environment boundary in the model's convention:
discrete actions as an integer index, continuous actions as float32 in
``[-1, 1]`` per dimension. Inside models and planners an action is a float
vector ``[..., A]``: one-hot for discrete actions, the values themselves
for continuous ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["ACTION_MASK_KEY", "ActionSpec", "ArraySpec", "TASK_KEY"]

#: Observation key of a multitask run's task identity: float32 one-hot ``[K]`` (see :mod:`reverie.envs.multitask`).
TASK_KEY = "task"
#: Observation key of a multitask run's action mask: float32 ``[A]``, 1 on the task's own action dimensions,
#: 0 on the padding.
ACTION_MASK_KEY = "action_mask"


@dataclass(frozen=True)
class ArraySpec:
    """Shape and dtype of one observation entry (without batch dimensions)."""

    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def is_image(self) -> bool:
        return len(self.shape) == 3 and np.dtype(self.dtype) == np.uint8


@dataclass(frozen=True)
class ActionSpec:
    """The action space in the model's convention.

    ``discrete=True``: ``size`` choices, actions are integer indices.
    ``discrete=False``: ``size`` dimensions, actions are float32 in [-1, 1].
    ``latent=True``: a model's latent codes, which only that model understands (see the field).
    """

    discrete: bool
    size: int
    latent: bool = False
    """Whether these are a model's own latent action codes (a latent-action model learned from observations
    alone, :mod:`reverie.models.latent_action`), not an environment's actions: nothing sends them to an
    environment."""

    def sample(self, rng: np.random.Generator, batch: int) -> np.ndarray:
        """Uniform random actions, ``[batch]`` int64 or ``[batch, size]`` float32."""
        if self.discrete:
            return rng.integers(0, self.size, size=(batch,), dtype=np.int64)
        return rng.uniform(-1.0, 1.0, size=(batch, self.size)).astype(np.float32)

    def to_model(self, action: np.ndarray) -> np.ndarray:
        """Environment actions (``[N]`` indices or ``[N, A]`` floats) -> model-space float32 ``[N, A]``."""
        if self.discrete:
            return np.eye(self.size, dtype=np.float32)[np.asarray(action, dtype=np.int64)]
        return np.asarray(action, dtype=np.float32).reshape(-1, self.size)
