"""Typed access to the model capabilities a planner calls.

A planner's model is a :class:`~reverie.models.base.Dynamics` (``act_spec``,
``capabilities``, ``step``); the capability methods it may also call
(``reward``, ``cont``, ``value``, ``policy``) are declared at run time in
``model.capabilities``, so a type checker cannot see them on a ``Dynamics``.
Each accessor here asks :func:`~reverie.models.base.require`, which refuses a
model that does not declare the capability or lacks its method in one
sentence, and then hands the method back under its protocol's signature:

    reward = reward_head(model, "planner 'cem'")   # Callable[[State], Tensor]
    r = reward(next_state)                         # [N]
"""

from __future__ import annotations

from typing import Callable, Protocol, cast, runtime_checkable

from torch import Tensor

from reverie.models.base import CONT, POLICY, REWARD, VALUE, ActionDistribution, CapabilityError, Dynamics, require
from reverie.models.state import State

__all__ = ["ContModel", "Logits", "PolicyModel", "RewardModel", "ValueModel", "cont_head", "policy_head",
           "policy_logits_head", "reward_head", "value_head"]


class RewardModel(Protocol):
    """A model with the ``reward`` capability."""

    def reward(self, state: State) -> Tensor:
        """The reward for arriving in ``state`` [N]: [N] (or [N, 1])."""
        ...


class ContModel(Protocol):
    """A model with the ``cont`` capability."""

    def cont(self, state: State) -> Tensor:
        """The probability that the episode goes on after ``state`` [N]: [N] (or [N, 1])."""
        ...


class ValueModel(Protocol):
    """A model with the ``value`` capability."""

    def value(self, state: State) -> Tensor:
        """The expected discounted return from ``state`` [N]: [N] (or [N, 1])."""
        ...


class PolicyModel(Protocol):
    """A model with the ``policy`` capability."""

    def policy(self, state: State) -> ActionDistribution:
        """An action prior at ``state`` [N]: a distribution over actions [N, A] (``logits`` [N, K] if discrete)."""
        ...


@runtime_checkable
class Logits(Protocol):
    """A distribution over K discrete choices that carries its logits."""

    logits: Tensor
    """[..., K] unnormalised log-probabilities."""


# each accessor: ``require`` has checked that the model declares the capability and has a callable
# method of that name, which is what the cast to the capability's protocol states


def reward_head(model: Dynamics, purpose: str) -> Callable[[State], Tensor]:
    """``model.reward``; CapabilityError naming ``purpose`` if the model does not declare ``reward``."""
    require(model, [REWARD], purpose)
    return cast(RewardModel, model).reward


def cont_head(model: Dynamics, purpose: str) -> Callable[[State], Tensor]:
    """``model.cont``; CapabilityError naming ``purpose`` if the model does not declare ``cont``."""
    require(model, [CONT], purpose)
    return cast(ContModel, model).cont


def value_head(model: Dynamics, purpose: str) -> Callable[[State], Tensor]:
    """``model.value``; CapabilityError naming ``purpose`` if the model does not declare ``value``."""
    require(model, [VALUE], purpose)
    return cast(ValueModel, model).value


def policy_head(model: Dynamics, purpose: str) -> Callable[[State], ActionDistribution]:
    """``model.policy``; CapabilityError naming ``purpose`` if the model does not declare ``policy``."""
    require(model, [POLICY], purpose)
    return cast(PolicyModel, model).policy


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
