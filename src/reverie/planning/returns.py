"""Batched imagination of candidate action sequences and their predicted returns.

All planners score candidates here, so the model sees exactly one ``step``
call per horizon step for all start states and candidates together, and the
return convention (see :mod:`reverie.planning.base`) lives in one place.
"""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor

from reverie.models.base import Dynamics
from reverie.models.state import State, select_rows

from .base import Policy, PlannerSettings, PlanningError
from .capabilities import cont_head, reward_head, value_head

#: Who asks for the model's capabilities, in the sentence of a CapabilityError.
PURPOSE = "imagining returns (rollout_returns)"


def model_autocast(settings: PlannerSettings, device: torch.device) -> contextlib.AbstractContextManager:
    """bfloat16 autocast around model calls when ``settings.bf16``, else a no-op."""
    if not settings.bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def _per_row(value: Tensor, rows: int, what: str) -> Tensor:
    """Accept [N] or [N, 1] from the model and return float32 [N]."""
    if not isinstance(value, Tensor) or value.numel() != rows:
        shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise PlanningError(f"model.{what}(state) must return a tensor [N={rows}]; got {shape}.")
    return value.reshape(rows).float()


def _policy_actions(policy: Policy, state: State, rows: int, action_size: int, discrete: bool) -> Tensor:
    """Call the prior policy on ``rows`` states and bring its actions into planner form [rows, A]."""
    action = policy(state)
    if not isinstance(action, Tensor) or tuple(action.shape) != (rows, action_size):
        shape = tuple(action.shape) if isinstance(action, Tensor) else type(action).__name__
        raise PlanningError(f"policy(state) must return actions [N={rows}, A={action_size}]; got {shape}.")
    action = action.float()
    if discrete:
        # a policy may hand back probabilities or logits; the model expects one-hot choices
        return torch.nn.functional.one_hot(action.argmax(-1), action_size).float()
    return action.clamp(-1.0, 1.0)


def rollout_returns(
    model: Dynamics,
    start: State,
    actions: Tensor,
    settings: PlannerSettings,
    policy: Policy | None = None,
    policy_count: int = 0,
) -> tuple[Tensor, Tensor]:
    """Imagine every candidate from its start state and sum its predicted return.

    Args:
        model: the dynamics with capability ``reward`` (and ``cont`` / ``value`` if the settings use
            them; CapabilityError otherwise, though the planners' :func:`~reverie.planning.base.prepare`
            has checked that before).
        start: start states repeated per candidate, leaves [B * C, ...] (see ``repeat_state``).
        actions: candidate action sequences [B, C, H, A] (float32; one-hot if discrete).
        settings: discount, use_cont, use_value and bf16 are read.
        policy: if given, candidates ``0 .. policy_count - 1`` of every start state take the
            policy's action on their own imagined state instead of ``actions``.
        policy_count: how many candidates per start state follow the policy.

    Returns:
        returns: [B, C] float32 predicted returns (may hold NaN or inf if the model does).
        actions: [B, C, H, A] the actions actually imagined (policy rows filled in).

    Gradients flow from ``returns`` to ``actions`` when the model is differentiable.
    """
    batch, count, horizon, action_size = actions.shape
    rows = batch * count
    device = actions.device
    discrete = model.act_spec.discrete
    prior = policy if policy_count > 0 else None
    reward_of = reward_head(model, PURPOSE)
    cont_of = cont_head(model, PURPOSE) if settings.use_cont else None
    value_of = value_head(model, PURPOSE) if settings.use_value else None

    state = start
    total = torch.zeros(rows, dtype=torch.float32, device=device)
    alive = torch.ones(rows, dtype=torch.float32, device=device)  # prod_{k<t} c_k
    weight = 1.0  # gamma^t
    taken = []
    with model_autocast(settings, device):
        for t in range(horizon):
            step_action = actions[:, :, t]  # [B, C, A]
            if prior is not None:
                sub = select_rows(state, batch, count, policy_count)  # [B * P, ...]
                chosen = _policy_actions(prior, sub, batch * policy_count, action_size, discrete)
                chosen = chosen.reshape(batch, policy_count, action_size)
                step_action = torch.cat([chosen, step_action[:, policy_count:]], dim=1)
                taken.append(step_action)
            state = model.step(state, step_action.reshape(rows, action_size))
            reward = _per_row(reward_of(state), rows, "reward")
            if cont_of is not None:
                # after the episode has ended a model's rewards are meaningless, even inf or NaN
                total = total + torch.where(alive > 0, weight * alive * reward, torch.zeros_like(reward))
                alive = alive * _per_row(cont_of(state), rows, "cont")
            else:
                total = total + weight * reward
            weight *= settings.discount
        if value_of is not None:
            value = _per_row(value_of(state), rows, "value")
            total = total + torch.where(alive > 0, weight * alive * value, torch.zeros_like(value))
    if prior is not None:
        actions = torch.stack(taken, dim=2)  # [B, C, H, A]
    return total.reshape(batch, count), actions


def finite_scores(returns: Tensor) -> Tensor:
    """Returns with NaN and +-inf replaced by -inf, so such candidates rank last and carry no weight."""
    return torch.where(torch.isfinite(returns), returns, torch.full_like(returns, float("-inf")))


def return_stats(returns: Tensor) -> tuple[Tensor, Tensor]:
    """Best and mean finite return per start state: [B, C] -> ([B], [B]).

    A start state with no finite candidate gets best -inf and mean NaN.
    """
    finite = torch.isfinite(returns)
    best = finite_scores(returns).max(dim=1).values
    count = finite.sum(dim=1)
    total = torch.where(finite, returns, torch.zeros_like(returns)).sum(dim=1)
    mean = torch.where(count > 0, total / count.clamp(min=1), torch.full_like(total, float("nan")))
    return best, mean
