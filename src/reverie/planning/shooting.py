"""Random shooting: imagine many uniformly random action sequences, keep the best.

The simplest model-predictive controller (Nagabandi et al., 2018). Besides
the random candidates it re-imagines the previous call's best sequence,
shifted by one step (the warm start), and any prior-policy rollouts, so a
good plan found once is not lost to chance on the next step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import (
    PlannerSettings,
    PlanningError,
    PlanResult,
    Policy,
    State,
    WarmStart,
    check_settings,
    check_warm,
    fit_horizon,
    make_generator,
    repeat_state,
    resolve_action_size,
    shift_plan,
    state_batch,
)
from .returns import finite_scores, return_stats, rollout_returns
from .sampling import gather_candidates, uniform_candidates


@dataclass(frozen=True)
class ShootingSettings(PlannerSettings):
    """Random-shooting settings."""

    candidates: int = 1000
    """Action sequences imagined per start state (warm start and policy rollouts included)."""


def shooting(
    model: object,
    state: State,
    settings: ShootingSettings | None = None,
    warm: WarmStart | None = None,
    *,
    policy: Policy | None = None,
    generator: torch.Generator | None = None,
) -> PlanResult:
    """Plan by random shooting.

    Args:
        model: has ``step(state, action [N, A]) -> state`` and ``reward(state) -> [N]``
            (plus ``cont`` / ``value`` if the settings use them).
        state: B start states, a tensor [B, ...] or a dict of tensors [B, ...].
        settings: see :class:`ShootingSettings`.
        warm: the ``warm`` of the previous call; its sequence (the previous best,
            shifted) is imagined as one of the candidates.
        policy: prior ``policy(state [N, ...]) -> action [N, A]`` rolling out
            ``settings.policy_candidates`` candidates.
        generator: randomness; None seeds one from ``settings.seed`` or uses torch's global one.

    Returns:
        PlanResult whose ``mean`` (continuous) or ``probs`` (discrete, one-hot) is the
        best sequence [B, H, A], whose action is its first step, and whose diagnostics
        have one row. Runs under ``torch.no_grad()``.
    """
    settings = settings or ShootingSettings()
    check_settings(settings, settings.candidates)
    if settings.policy_candidates and policy is None:
        raise PlanningError("policy_candidates > 0 needs a prior policy: pass policy=callable(state) -> action.")
    batch, device = state_batch(state)
    size = resolve_action_size(model, settings, warm)
    check_warm(warm, batch, size, settings.discrete)
    generator = make_generator(settings, device, generator)
    horizon = settings.horizon
    n_policy = settings.policy_candidates

    # what to execute if no candidate has a finite return: the warm plan or the centre of the bounds
    fallback = torch.zeros((batch, horizon, size), device=device)
    fixed = []
    if n_policy:
        fixed.append(torch.zeros((batch, n_policy, horizon, size), device=device))  # filled by the rollout
    if warm is not None and settings.candidates - n_policy > 1:
        if settings.discrete:
            plan = fit_horizon(warm.probs.to(device, torch.float32), horizon, 1.0 / size)  # type: ignore[union-attr]
            plan = torch.nn.functional.one_hot(plan.argmax(-1), size).float()
        else:
            plan = fit_horizon(warm.mean.to(device, torch.float32), horizon, 0.0).clamp(-1.0, 1.0)  # type: ignore[union-attr]
        fixed.append(plan.unsqueeze(1))
        fallback = plan
    n_random = settings.candidates - sum(x.shape[1] for x in fixed)
    random = uniform_candidates(
        batch, n_random, horizon, size, discrete=settings.discrete, generator=generator, device=device
    )
    actions = torch.cat([*fixed, random], dim=1)  # [B, C, H, A]

    with torch.no_grad():
        start = repeat_state(state, settings.candidates)
        returns, actions = rollout_returns(model, start, actions, settings, policy, n_policy)
        best_return, mean_return = return_stats(returns)
        index = finite_scores(returns).argmax(dim=1, keepdim=True)  # [B, 1]; NaN / inf never win
        plan = gather_candidates(actions, index)[:, 0]  # [B, H, A]
        if settings.discrete and warm is None:
            fallback = torch.nn.functional.one_hot(fallback.argmax(-1), size).float()
        plan = torch.where(torch.isfinite(best_return)[:, None, None], plan, fallback)

    action = plan[:, 0]
    if settings.discrete:
        warm_next = WarmStart(probs=shift_plan(plan, 1.0 / size))
        return PlanResult(action, None, None, plan, warm_next, best_return[None], mean_return[None])
    warm_next = WarmStart(mean=shift_plan(plan, 0.0))
    return PlanResult(action, plan, None, None, warm_next, best_return[None], mean_return[None])
