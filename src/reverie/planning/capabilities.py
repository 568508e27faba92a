"""Typed access to the model capabilities a planner calls.

A planner's model is a :class:`~reverie.models.base.Dynamics` (``act_spec``,
``capabilities``, ``step``); the capability methods it may also call
(``reward``, ``cont``, ``value``, ``policy``) are declared at run time in
``model.capabilities``, so a type checker cannot see them on a ``Dynamics``.
The contract's accessors (:func:`~reverie.models.base.reward_head` and its
siblings, re-exported here) ask :func:`~reverie.models.base.require`, which
refuses a model that does not declare the capability in one sentence, and hand
the method back under its protocol's signature; this module adds what only
search needs, the logits of a discrete policy prior:

    reward = reward_head(model, "planner 'cem'")   # Callable[[State], Tensor]
    r = reward(next_state)                         # [N]
"""

from __future__ import annotations

from typing import Callable, Protocol, runtime_checkable

from torch import Tensor

from reverie.models.base import (
    CapabilityError,
    Dynamics,
    cont_head,
    policy_head,
    reward_head,
    value_head,
)
from reverie.models.state import State

__all__ = ["Logits", "cont_head", "policy_head", "policy_logits_head", "reward_head", "value_head"]


@runtime_checkable
class Logits(Protocol):
    """A distribution over K discrete choices that carries its logits."""

    logits: Tensor
    """[..., K] unnormalised log-probabilities."""


def policy_logits_head(model: Dynamics, purpose: str) -> Callable[[State], Tensor]:
    """``state [N] -> model.policy(state).logits [N, K]`` for a discrete policy prior; CapabilityError
    naming ``purpose`` if the model does not declare ``policy`` or its distribution has no ``logits``."""
    policy = policy_head(model, purpose)

    def logits(state: State) -> Tensor:
        prior = policy(state)
        if not isinstance(prior, Logits):
            raise CapabilityError(f"{purpose} needs the logits of a discrete policy prior, but "
                                  f"{type(model).__name__}.policy returns a {type(prior).__name__} without `logits`")
        return prior.logits

    return logits
