"""The world-model contract: one small core every family has, plus declared capabilities.

The core (:class:`WorldModel`) is latent dynamics and nothing more:

- ``initial(B)``: the state before the first observation, ``[B]``;
- ``observe(obs [B, T, ...], action [B, T, A], is_first [B, T], state)``: filter a
  sequence into states, returning (states ``[B, T]``, last state ``[B]``);
  ``action[:, t]`` is the action that led *into* step t;
- ``step(state [N], action [N, A])``: one step of the prior (imagination);
- ``features(state) -> [..., F]`` with ``F = feat_size``: a flat vector for heads,
  policies and analysis;
- ``obs_spec``, ``act_spec``: what it observes and how it is driven.

What a family may add is declared in ``capabilities`` (a frozenset of the
names below) and provided by a method of the same name:

=============  ===================================  =========================================
capability     method                               meaning
=============  ===================================  =========================================
``reward``     ``reward(state) -> [...]``           reward for arriving in ``state``
``cont``       ``cont(state) -> [...]``             probability the episode goes on after it
``decoder``    ``decode(state) -> {key: [..., *]}`` predicted observations (images in [0, 255])
``value``      ``value(state) -> [...]``            expected discounted return from ``state``
``policy``     ``policy(state) -> distribution``    an action prior (``mode``, ``sample``,
                                                    ``log_prob``, ``entropy``; ``logits``
                                                    ``[..., K]`` for discrete actions)
``transition`` ``transition(state, action)``        ``(z [N, D], f)``: the deterministic latent
               ``-> (z, f)``                        of ``state`` and the deterministic part of
                                                    the prior step at ``action`` as a map
                                                    ``f(z [M, D]) -> [M, D]`` (rows independent;
                                                    ``M`` may differ from ``N`` when ``action``
                                                    is one row), for spectral analysis
=============  ===================================  =========================================

A sequence model whose state carries a memory that only the next step reads (the transformer's
key/value cache) may declare those entries in ``memory_keys`` (a frozenset of state keys; none if
absent): ``features`` and every head must not read them, so a rollout keeps them only for the step
it is on (:func:`without_memory`) instead of stacking one copy per step.

Whoever needs a capability asks :func:`require`, which answers a missing one
with one sentence. Nothing in reverie probes a model with ``hasattr``. Each
capability's method has a protocol (:class:`HasReward`, :class:`HasCont`,
:class:`HasDecoder`, :class:`HasValue`, :class:`HasPolicy`,
:class:`HasTransition`): typed code that has asked :func:`require` views the
model through it.

Planners need only the dynamics part (:class:`Dynamics`: ``act_spec``,
``capabilities``, ``step``), so a hand-written model of a known system can
be planned on without filtering or features.
"""

from __future__ import annotations

from typing import Callable, Iterable, Mapping, Protocol, cast, runtime_checkable

import torch
from torch import Tensor

from reverie.models.moe import Routing
from reverie.models.state import State, stack_states, state_batch, state_entries
from reverie.specs import ActionSpec, ArraySpec

REWARD = "reward"
CONT = "cont"
DECODER = "decoder"
VALUE = "value"
POLICY = "policy"
TRANSITION = "transition"
ROUTING = "routing"
#: Every capability a model may declare, and the method that provides it.
CAPABILITIES: dict[str, str] = {REWARD: "reward", CONT: "cont", DECODER: "decode", VALUE: "value",
                                POLICY: "policy", TRANSITION: "transition", ROUTING: "routing"}

__all__ = [
    "CAPABILITIES", "CONT", "DECODER", "POLICY", "REWARD", "ROUTING", "TRANSITION", "VALUE", "ActionDistribution", "CapabilityError",
    "Dynamics", "HasCont", "HasDecoder", "HasPolicy", "HasReward", "HasRouting", "HasTransition", "HasValue", "ModelWithHeads",
    "State", "TransitionMap", "WorldModel", "capabilities_of", "cont_head", "decoder_head", "has", "imagine",
    "memory_keys_of", "policy_head", "require", "reward_head", "transition_head", "value_head",
    "stack_states", "transition_map", "with_heads", "without_memory",
]


class CapabilityError(ValueError):
    """A model lacks a capability that a planner, agent or command needs (said in one sentence)."""


class ActionDistribution(Protocol):
    """What a ``policy`` capability returns: a distribution over model-space actions ``[..., A]``."""

    def mode(self) -> Tensor: ...

    def sample(self, generator: torch.Generator | None = None) -> Tensor: ...

    def log_prob(self, action: Tensor) -> Tensor: ...

    def entropy(self) -> Tensor: ...


@runtime_checkable
class Dynamics(Protocol):
    """The part of a world model a planner drives: the prior step and the declared capabilities.

    Its attributes (and :class:`WorldModel`'s) are declared as read-only properties, so that a model's plain
    attribute of a narrower type fits them (a ``dict`` where a ``Mapping`` is asked for)."""

    @property
    def act_spec(self) -> ActionSpec: ...

    @property
    def capabilities(self) -> frozenset[str]: ...

    def step(self, state: State, action: Tensor) -> State:
        """One imagined step: state ``[N]``, action ``[N, A]`` -> state ``[N]``."""
        ...


@runtime_checkable
class WorldModel(Dynamics, Protocol):
    """The core protocol every world-model family implements (see the module docstring)."""

    @property
    def obs_spec(self) -> Mapping[str, ArraySpec]: ...

    @property
    def feat_size(self) -> int: ...

    def initial(self, batch: int) -> State:
        """The state before the first observation, ``[B]``."""
        ...

    def observe(self, obs: Mapping[str, Tensor], action: Tensor, is_first: Tensor,
                state: State | None = None) -> tuple[State, State]:
        """Filter a sequence: obs ``[B, T, ...]``, action ``[B, T, A]``, is_first ``[B, T]``.
        Returns (states ``[B, T]``, last state ``[B]``)."""
        ...

    def features(self, state: State) -> Tensor:
        """A flat feature vector ``[..., F]``."""
        ...


#: The ``f`` of a ``transition`` capability: ``f(z [M, D]) -> [M, D]``, rows independent.
TransitionMap = Callable[[Tensor], Tensor]


class HasReward(Protocol):
    """A model with the ``reward`` capability."""

    def reward(self, state: State) -> Tensor:
        """Reward for arriving in ``state``: ``[...]``."""
        ...


class HasCont(Protocol):
    """A model with the ``cont`` capability."""

    def cont(self, state: State) -> Tensor:
        """Probability ``[...]`` that the episode goes on after ``state``."""
        ...


class HasDecoder(Protocol):
    """A model with the ``decoder`` capability."""

    def decode(self, state: State) -> dict[str, Tensor]:
        """Predicted observations ``{key: [..., *shape]}`` (images in [0, 255])."""
        ...


class HasValue(Protocol):
    """A model with the ``value`` capability."""

    def value(self, state: State) -> Tensor:
        """Expected discounted return ``[...]`` from ``state``."""
        ...


class HasPolicy(Protocol):
    """A model with the ``policy`` capability."""

    def policy(self, state: State) -> ActionDistribution:
        """An action prior at ``state``."""
        ...


class HasTransition(Protocol):
    """A model with the ``transition`` capability."""

    def transition(self, state: State, action: Tensor) -> tuple[Tensor, TransitionMap]:
        """``(z [N, D], f)``: the deterministic latent of ``state`` and the prior step's deterministic part at
        ``action`` as a map of it."""
        ...


class HasRouting(Protocol):
    """A model with the ``routing`` capability: mixture-of-experts dynamics (:mod:`reverie.models.moe`)."""

    def routing(self, state: State, action: Tensor) -> Routing:
        """Where the prior step from ``state [N]`` at ``action [N, A]`` routes its N inputs among the experts."""
        ...


def capabilities_of(model: Dynamics) -> frozenset[str]:
    """The capabilities ``model`` declares, checked against the methods it has."""
    declared = getattr(model, "capabilities", None)
    name = type(model).__name__
    if not isinstance(declared, (set, frozenset)):
        raise CapabilityError(f"{name} declares no `capabilities`; give it a frozenset of "
                              f"{', '.join(sorted(CAPABILITIES))} (possibly empty)")
    unknown = sorted(set(declared) - set(CAPABILITIES))
    if unknown:
        raise CapabilityError(f"{name} declares unknown capabilities {unknown}; "
                              f"choose from {', '.join(sorted(CAPABILITIES))}")
    return frozenset(declared)


def has(model: Dynamics, capability: str) -> bool:
    """Whether ``model`` declares ``capability``."""
    return capability in capabilities_of(model)


def require(model: Dynamics, needed: Iterable[str], purpose: str) -> None:
    """Raise :class:`CapabilityError` unless ``model`` declares (and implements) every capability in ``needed``.

    ``purpose`` names who asks, e.g. "planner 'cem' with use_value=True".
    """
    caps = capabilities_of(model)
    name = type(model).__name__
    missing = sorted(set(needed) - caps)
    if missing:
        have = ", ".join(sorted(caps)) or "none"
        raise CapabilityError(f"{purpose} needs a model with {' and '.join(missing)}, but {name} has "
                              f"only {have}")
    for cap in needed:
        if not callable(getattr(model, CAPABILITIES[cap], None)):
            raise CapabilityError(f"{name} declares '{cap}' but has no `{CAPABILITIES[cap]}(state)` method")


# Typed access to a declared capability: ``require`` checks that the model declares it and has a callable
# method of that name, which is what the cast to the capability's protocol states.
def reward_head(model: Dynamics, purpose: str) -> Callable[[State], Tensor]:
    """``model.reward``; CapabilityError naming ``purpose`` if the model does not declare ``reward``."""
    require(model, [REWARD], purpose)
    return cast(HasReward, model).reward


def cont_head(model: Dynamics, purpose: str) -> Callable[[State], Tensor]:
    """``model.cont``; CapabilityError naming ``purpose`` if the model does not declare ``cont``."""
    require(model, [CONT], purpose)
    return cast(HasCont, model).cont


def decoder_head(model: Dynamics, purpose: str) -> Callable[[State], dict[str, Tensor]]:
    """``model.decode``; CapabilityError naming ``purpose`` if the model does not declare ``decoder``."""
    require(model, [DECODER], purpose)
    return cast(HasDecoder, model).decode


def value_head(model: Dynamics, purpose: str) -> Callable[[State], Tensor]:
    """``model.value``; CapabilityError naming ``purpose`` if the model does not declare ``value``."""
    require(model, [VALUE], purpose)
    return cast(HasValue, model).value


def policy_head(model: Dynamics, purpose: str) -> Callable[[State], ActionDistribution]:
    """``model.policy``; CapabilityError naming ``purpose`` if the model does not declare ``policy``."""
    require(model, [POLICY], purpose)
    return cast(HasPolicy, model).policy


def transition_head(model: Dynamics, purpose: str) -> Callable[[State, Tensor], tuple[Tensor, TransitionMap]]:
    """``model.transition``; CapabilityError naming ``purpose`` if the model does not declare ``transition``."""
    require(model, [TRANSITION], purpose)
    return cast(HasTransition, model).transition


def memory_keys_of(model: Dynamics) -> frozenset[str]:
    """The state keys ``model`` declares as sequence memory (``memory_keys``; none if it declares nothing)."""
    declared: object = getattr(model, "memory_keys", frozenset())
    if not (isinstance(declared, (set, frozenset)) and all(isinstance(k, str) for k in declared)):
        raise CapabilityError(f"{type(model).__name__}.memory_keys must be a frozenset of state keys, "
                              f"got {declared!r}")
    return frozenset(declared)


def without_memory(model: Dynamics, state: State) -> State:
    """``state`` without the entries ``model`` declares in ``memory_keys`` (see the module docstring): what
    a trajectory needs to keep of each step for features and heads."""
    memory = memory_keys_of(model)
    return {k: v for k, v in state_entries(state).items() if k not in memory} if memory else state


def imagine(model: Dynamics, start: State, actions: Tensor) -> State:
    """Roll ``model``'s prior forward from ``start [N]`` along ``actions [N, H, A]`` (model-space: one-hot for
    discrete actions); returns the imagined states ``[N, H]``, step t being where ``actions[:, t]`` leads.

    Gradients flow through (wrap the call in ``torch.no_grad()`` to drop them). Entries a model declares as
    sequence memory (``memory_keys``) are kept only in the last step's state (see :func:`without_memory`)."""
    n = state_batch(start)[0]
    if actions.dim() != 3 or actions.shape[0] != n or actions.shape[1] < 1:
        raise ValueError(f"imagine needs actions [N, H, A] with N = {n} start states and H >= 1, got shape "
                         f"{list(actions.shape)}")
    if actions.shape[-1] != model.act_spec.size:
        raise ValueError(f"the model's actions have {model.act_spec.size} entries, the imagined ones "
                         f"{actions.shape[-1]}")
    memory = memory_keys_of(model)
    states, state = [], start
    for t in range(actions.shape[1]):
        state = model.step(state, actions[:, t])
        states.append(without_memory(model, state))
    stacked = stack_states(states, 1)
    if memory and isinstance(stacked, dict) and isinstance(state, Mapping):
        return {**stacked, **{k: state[k] for k in memory if k in state}}
    return stacked


def transition_map(step: Callable[[Tensor, Tensor], Tensor], action: Tensor) -> TransitionMap:
    """The ``f`` of a ``transition`` capability: ``f(z) = step(z, action)`` with ``action [N, A]``, or
    ``[1, A]`` / ``[A]`` repeated for any number of rows (so ``f`` may be called on a subset of states)."""
    action = action.reshape(1, -1) if action.dim() == 1 else action

    def f(z: Tensor) -> Tensor:
        rows = action if action.shape[0] == z.shape[0] else action.expand(z.shape[0], -1)
        return step(z, rows)

    return f


class ModelWithHeads:
    """A world model with value and/or policy heads read off its features.

    This is how a behaviour learner's critic and actor (Dreamer's, say) become
    the model's ``value`` and ``policy`` capabilities, for any family: planners
    then bootstrap with the critic and roll out the actor as a prior. The core
    and the model's own capabilities pass through unchanged.
    """

    def __init__(self, model: WorldModel, value: Callable[[Tensor], Tensor] | None = None,
                 policy: Callable[[Tensor], ActionDistribution] | None = None):
        self.model = model
        self._value, self._policy = value, policy
        self.capabilities = (capabilities_of(model) | ({VALUE} if value is not None else set())
                             | ({POLICY} if policy is not None else set()))
        self.obs_spec = model.obs_spec
        self.act_spec = model.act_spec
        self.feat_size = model.feat_size
        self.memory_keys = memory_keys_of(model)

    def initial(self, batch: int) -> State:
        return self.model.initial(batch)

    def observe(self, obs: Mapping[str, Tensor], action: Tensor, is_first: Tensor,
                state: State | None = None) -> tuple[State, State]:
        return self.model.observe(obs, action, is_first, state)

    def step(self, state: State, action: Tensor) -> State:
        return self.model.step(state, action)

    def features(self, state: State) -> Tensor:
        return self.model.features(state)

    def reward(self, state: State) -> Tensor:
        require(self.model, [REWARD], "reward()")
        return cast(HasReward, self.model).reward(state)

    def cont(self, state: State) -> Tensor:
        require(self.model, [CONT], "cont()")
        return cast(HasCont, self.model).cont(state)

    def decode(self, state: State) -> dict[str, Tensor]:
        require(self.model, [DECODER], "decode()")
        return cast(HasDecoder, self.model).decode(state)

    def transition(self, state: State, action: Tensor) -> tuple[Tensor, TransitionMap]:
        require(self.model, [TRANSITION], "transition()")
        return cast(HasTransition, self.model).transition(state, action)

    def value(self, state: State) -> Tensor:
        if self._value is None:
            require(self.model, [VALUE], "value()")
            return cast(HasValue, self.model).value(state)
        return self._value(self.model.features(state))

    def policy(self, state: State) -> ActionDistribution:
        if self._policy is None:
            require(self.model, [POLICY], "policy()")
            return cast(HasPolicy, self.model).policy(state)
        return self._policy(self.model.features(state))


def with_heads(model: WorldModel, value: Callable[[Tensor], Tensor] | None = None,
               policy: Callable[[Tensor], ActionDistribution] | None = None) -> ModelWithHeads:
    """``model`` with ``value(features) -> [...]`` and ``policy(features) -> distribution`` as capabilities."""
    return ModelWithHeads(model, value, policy)
