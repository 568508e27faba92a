"""The planner contract: the model protocol, shared settings, and the result.

Every planner in reverie is a pure function

    planner(model, state, settings, warm=None, *, policy=None, generator=None) -> PlanResult

of a world model that has ``step`` and ``reward`` (and optionally ``cont``
and ``value``), a batch of B start states, a frozen settings dataclass and
the warm start returned by the previous call. Nothing is kept in ``self``:
the caller stores ``result.warm`` and hands it back on the next call.

Conventions used by all planners (the time index t runs over the horizon H):

- ``s_0`` is the start state, ``s_{t+1} = model.step(s_t, a_t)``;
- ``r_t = model.reward(s_{t+1})`` is the reward for arriving at ``s_{t+1}``;
- ``c_t = model.cont(s_{t+1})`` is the probability of continuing after it;
- the predicted return of a candidate is
  ``sum_t gamma^t (prod_{k<t} c_k) r_t + gamma^H (prod_{k<H} c_k) V(s_H)``,
  where the ``c`` factors are used only with ``use_cont`` and the last term
  only with ``use_value``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Protocol, Union, runtime_checkable

import torch
from torch import Tensor
from torch.utils import _pytree as pytree

#: A model state: one tensor [N, ...] or a (nested) dict of tensors, each [N, ...].
State = Union[Tensor, Mapping[str, "State"]]

#: A prior policy used to propose candidates: ``policy(state [N, ...]) -> action [N, A]``.
Policy = Callable[[State], Tensor]


class PlanningError(ValueError):
    """A planner was called with inputs it cannot use (the message says which and how to fix it)."""


@runtime_checkable
class PlanningModel(Protocol):
    """What a planner needs from a world model.

    ``cont(state) -> [N]`` (probability the episode continues) and
    ``value(state) -> [N]`` (terminal value estimate) are optional; a planner
    calls them only when its settings ask for them (``use_cont``, ``use_value``).
    """

    def step(self, state: State, action: Tensor) -> State:
        """The prior (imagination) step: ``state [N, ...], action [N, A] -> state [N, ...]``.

        Continuous actions lie in [-1, 1]; discrete actions are one-hot floats.
        """
        ...

    def reward(self, state: State) -> Tensor:
        """Predicted reward for arriving at ``state``: ``[N]``."""
        ...


@dataclass(frozen=True)
class PlannerSettings:
    """Options every planner shares (each planner's settings extend these)."""

    horizon: int = 12
    """Number of actions H in each planned sequence."""
    action_size: int | None = None
    """Action dimension A (or number of choices if discrete); None reads ``model.action_size``."""
    discrete: bool = False
    """Plan one-hot categorical actions instead of continuous actions in [-1, 1]."""
    discount: float = 1.0
    """Discount gamma applied to the reward of step t as gamma^t (and gamma^H to the value)."""
    use_cont: bool = False
    """Weight rewards by the cumulative product of ``model.cont`` (episode may end)."""
    use_value: bool = False
    """Add gamma^H times ``model.value`` of the last imagined state (TD-MPC style)."""
    policy_candidates: int = 0
    """Candidates rolled out by the prior ``policy`` passed to the planner (TD-MPC2 style)."""
    bf16: bool = False
    """Run the model calls under bfloat16 autocast; returns are still summed in float32."""
    seed: int | None = None
    """Seed for a fresh generator when none is passed; None uses torch's global generator."""


@dataclass(frozen=True)
class WarmStart:
    """What a planner hands to its next call; time is already shifted by one step.

    Exactly one of ``mean`` (continuous) and ``probs`` (discrete) is set.
    """

    mean: Tensor | None = None
    """[B, H, A] action means for the next call (continuous)."""
    std: Tensor | None = None
    """[B, H, A] standard deviations (continuous, optional)."""
    probs: Tensor | None = None
    """[B, H, K] per-step choice probabilities for the next call (discrete)."""


@dataclass(frozen=True)
class PlanResult:
    """The outcome of one planner call for B start states."""

    action: Tensor
    """[B, A] the action to execute now (one-hot float for discrete actions)."""
    mean: Tensor | None
    """[B, H, A] the refined plan (continuous; the best sequence for shooting / gradient)."""
    std: Tensor | None
    """[B, H, A] the refined spread (CEM and MPPI only)."""
    probs: Tensor | None
    """[B, H, K] refined per-step choice probabilities (discrete only)."""
    warm: WarmStart
    """The plan shifted by one step: pass it as ``warm`` to the next call."""
    best_return: Tensor
    """[iterations, B] best finite predicted return among the candidates of each iteration."""
    mean_return: Tensor
    """[iterations, B] mean finite predicted return of each iteration's candidates."""


# ---------------------------------------------------------------------------
# helpers shared by the planners


def state_leaves(state: State) -> list[Tensor]:
    """All tensors of a state, in a fixed order."""
    leaves = pytree.tree_leaves(state)
    if not leaves or not all(isinstance(x, Tensor) for x in leaves):
        raise PlanningError(
            "The start state must be a tensor [B, ...] or a dict of tensors each [B, ...]; "
            f"got {type(state).__name__}."
        )
    return leaves


def state_batch(state: State) -> tuple[int, torch.device]:
    """Batch size B and device shared by every tensor of ``state``."""
    leaves = state_leaves(state)
    sizes = {x.shape[0] if x.dim() else None for x in leaves}
    if len(sizes) != 1 or None in sizes:
        raise PlanningError(
            "Every tensor of the start state needs the same leading batch size B; "
            f"got leading sizes {sorted(str(s) for s in sizes)}."
        )
    return leaves[0].shape[0], leaves[0].device


def repeat_state(state: State, count: int) -> State:
    """Repeat each start state ``count`` times: leaves [B, ...] -> [B * count, ...].

    Row ``b * count + c`` holds candidate c of start state b, so a flat
    batch reshapes to ``[B, count, ...]``.
    """
    return pytree.tree_map(lambda x: x.repeat_interleave(count, dim=0), state)


def select_rows(state: State, batch: int, count: int, first: int) -> State:
    """The first ``first`` candidates of every start state: [B * count, ...] -> [B * first, ...]."""
    return pytree.tree_map(
        lambda x: x.reshape(batch, count, *x.shape[1:])[:, :first].reshape(batch * first, *x.shape[1:]),
        state,
    )


def resolve_action_size(model: object, settings: PlannerSettings, warm: WarmStart | None) -> int:
    """The action size A from the settings, the model (``action_size``) or the warm start."""
    if settings.action_size is not None:
        size = settings.action_size
    elif isinstance(getattr(model, "action_size", None), int):
        size = model.action_size  # type: ignore[attr-defined]
    elif warm is not None and (warm.mean if warm.mean is not None else warm.probs) is not None:
        size = (warm.mean if warm.mean is not None else warm.probs).shape[-1]  # type: ignore[union-attr]
    else:
        raise PlanningError(
            "The planner does not know the action size: pass action_size=A in the settings "
            "or give the model an integer attribute `action_size`."
        )
    if size < 1 or (settings.discrete and size < 2):
        raise PlanningError(f"action_size must be >= 1 (>= 2 choices if discrete); got {size}.")
    return int(size)


def make_generator(
    settings: PlannerSettings, device: torch.device, generator: torch.Generator | None
) -> torch.Generator | None:
    """The generator to draw candidates from: the one passed, a seeded one, or None (global)."""
    if generator is not None:
        if torch.device(generator.device).type != device.type:
            raise PlanningError(
                f"The generator lives on {generator.device} but the start state is on {device}; "
                "create it with torch.Generator(device=state_device)."
            )
        return generator
    if settings.seed is None:
        return None
    return torch.Generator(device=device).manual_seed(settings.seed)


def check_settings(settings: PlannerSettings, candidates: int | None = None) -> None:
    """Reject settings that cannot plan, with one sentence naming the field."""
    if settings.horizon < 1:
        raise PlanningError(f"horizon must be >= 1; got {settings.horizon}.")
    if not 0.0 < settings.discount <= 1.0:
        raise PlanningError(f"discount must be in (0, 1]; got {settings.discount}.")
    if settings.policy_candidates < 0:
        raise PlanningError(f"policy_candidates must be >= 0; got {settings.policy_candidates}.")
    if candidates is not None and settings.policy_candidates >= candidates:
        raise PlanningError(
            f"policy_candidates ({settings.policy_candidates}) must be smaller than the number of "
            f"candidates ({candidates}) so that some candidates are sampled."
        )


def check_warm(warm: WarmStart | None, batch: int, action_size: int, discrete: bool) -> None:
    """Check that a warm start fits B start states and A actions."""
    if warm is None:
        return
    plan = warm.probs if discrete else warm.mean
    if plan is None:
        kind = "probs (discrete)" if discrete else "mean (continuous)"
        raise PlanningError(f"The warm start has no {kind}; pass the `warm` of a planner run with the same action type.")
    if plan.dim() != 3 or plan.shape[0] != batch or plan.shape[2] != action_size:
        raise PlanningError(
            f"The warm start plan has shape {tuple(plan.shape)} but this call needs [B={batch}, H, A={action_size}]; "
            "pass the `warm` from a call with the same batch and action size, or None."
        )


def fit_horizon(plan: Tensor, horizon: int, fill: float) -> Tensor:
    """Cut or pad a plan [B, H', A] along time to [B, horizon, A], padding with ``fill``."""
    if plan.shape[1] >= horizon:
        return plan[:, :horizon]
    pad = plan.new_full((plan.shape[0], horizon - plan.shape[1], plan.shape[2]), fill)
    return torch.cat([plan, pad], dim=1)


def shift_plan(plan: Tensor, fill: float) -> Tensor:
    """Drop the executed first step and append ``fill``: [B, H, A] -> [B, H, A]."""
    return torch.cat([plan[:, 1:], plan.new_full(plan[:, :1].shape, fill)], dim=1)
