"""The world-model interface every reverie model family implements.

A *state* is a dictionary of tensors that all share the leading batch axes
(``[B]`` for one step, ``[B, T]`` for a sequence). What the entries are is
the model's business; planners and behaviour learners only pass states back
to the model and read :meth:`WorldModel.features`.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

State = dict[str, Tensor]


@runtime_checkable
class WorldModel(Protocol):
    """What the agents, planners and analysis tools rely on."""

    def initial(self, batch: int) -> State:
        """The state before the first observation, ``[B]``."""

    def observe(self, obs: dict[str, Tensor], action: Tensor, is_first: Tensor,
                state: State | None = None) -> tuple[State, State]:
        """Filter a sequence: obs ``[B, T, ...]``, action ``[B, T, A]`` (the action that led *into*
        step t), is_first ``[B, T]``. Returns (posterior states ``[B, T]``, last state ``[B]``)."""

    def step(self, state: State, action: Tensor) -> State:
        """One imagined step from the prior: state ``[B]``, action ``[B, A]`` -> state ``[B]``."""

    def reward(self, state: State) -> Tensor:
        """Predicted reward for arriving in ``state``, ``[...]``."""

    def cont(self, state: State) -> Tensor:
        """Predicted probability that the episode continues after ``state``, ``[...]``."""

    def decode(self, state: State) -> dict[str, Tensor]:
        """Predicted observations, each ``[..., *obs_shape]`` (images as uint8-range floats in [0, 255])."""

    def features(self, state: State) -> Tensor:
        """A flat feature vector ``[..., F]`` for heads, policies and analysis."""

    def loss(self, batch: dict[str, Tensor], state: State | None = None
             ) -> tuple[dict[str, Tensor], dict[str, float], State, State]:
        """Per-step losses ``{name: [B, T]}`` (unscaled), metrics, posterior states ``[B, T]`` and the
        last state ``[B]``. The caller combines losses with its scales."""


def stack_states(states: list[State], dim: int = 1) -> State:
    """Stack a list of ``[B]`` states into ``[B, T]`` (dim=1) or ``[T, B]`` (dim=0)."""
    return {k: torch.stack([s[k] for s in states], dim) for k in states[0]}
