"""Random shooting: imagine many uniformly random action sequences, keep the best.

With ``centre_on_policy`` the random sequences are perturbations of the model policy's own plan
instead of uniform ones.

The simplest model-predictive controller (Nagabandi et al., 2018). Besides
the random candidates it re-imagines the previous call's best sequence,
shifted by one step (the warm start), and any prior-policy rollouts, so a
good plan found once is not lost to chance on the next step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from reverie.models.base import Dynamics
from reverie.models.state import repeat_state

from .base import PlannerSettings, PlannerSpec, PlanResult, State, WarmStart, centred_probs, fit_horizon, prepare, shift_plan
from .returns import finite_scores, return_stats, rollout_returns
from .sampling import categorical_candidates, gather_candidates, gaussian_candidates, uniform_candidates


@dataclass(frozen=True)
class ShootingSettings(PlannerSettings):
    """Random-shooting settings."""

    candidates: int = 1000
    """Action sequences imagined per start state (warm start and policy rollouts included)."""
    init_std: float = 0.3
    """With ``centre_on_policy``: std of the Gaussian perturbations of the policy's actions (continuous)."""


def shooting(
    model: Dynamics,
    state: State,
    settings: ShootingSettings | None = None,
    warm: WarmStart | None = None,
    *,
    generator: torch.Generator | None = None,
) -> PlanResult:
    """Plan by random shooting.

    Args:
        model: has ``act_spec``, ``step(state, action [N, A]) -> state`` and ``reward(state) -> [N]``
            (plus ``cont`` / ``value`` / ``policy`` if the settings use them).
        state: B start states, a tensor [B, ...] or a dict of tensors [B, ...].
        settings: see :class:`ShootingSettings`.
        warm: the ``warm`` of the previous call; its sequence (the previous best,
            shifted) is imagined as one of the candidates.
        generator: randomness; None seeds one from ``settings.seed`` or uses torch's global one.

    Returns:
        PlanResult whose ``mean`` (continuous) or ``probs`` (discrete, one-hot) is the
        best sequence [B, H, A], whose action is its first step, and whose diagnostics
        have one row. Runs under ``torch.no_grad()``.
    """
    settings = settings or ShootingSettings()
    setup = prepare(SPEC, model, state, settings, warm, generator, settings.candidates)
    batch, size, device, discrete, generator = setup.batch, setup.size, setup.device, setup.discrete, setup.generator
    horizon = settings.horizon
    n_policy = settings.policy_candidates

    # what to execute if no candidate has a finite return: the warm plan or the centre of the bounds
    fallback = torch.zeros((batch, horizon, size), device=device)
    fixed = []
    if n_policy:
        fixed.append(torch.zeros((batch, n_policy, horizon, size), device=device))  # filled by the rollout
    if warm is not None and settings.candidates - n_policy > 1:
        if discrete:
            plan = fit_horizon(warm.plan(discrete=True).to(device, torch.float32), horizon, 1.0 / size)
            plan = torch.nn.functional.one_hot(plan.argmax(-1), size).float()
        else:
            plan = fit_horizon(warm.plan(discrete=False).to(device, torch.float32), horizon, 0.0).clamp(-1.0, 1.0)
        fixed.append(plan.unsqueeze(1))
        fallback = plan
    n_random = settings.candidates - sum(x.shape[1] for x in fixed)
    if setup.centre is None:
        random = uniform_candidates(batch, n_random, horizon, size, discrete=discrete, generator=generator,
                                    device=device)
    elif discrete:   # perturbations of the policy's plan rather than uniform sequences
        random = categorical_candidates(centred_probs(setup.centre), n_random, generator=generator)
    else:
        std = torch.full_like(setup.centre, settings.init_std)
        random = gaussian_candidates(setup.centre, std, n_random, generator=generator)
    actions = torch.cat([*fixed, random], dim=1)  # [B, C, H, A]

    with torch.no_grad():
        start = repeat_state(state, settings.candidates)
        returns, actions = rollout_returns(model, start, actions, settings, setup.policy, n_policy)
        best_return, mean_return = return_stats(returns)
        index = finite_scores(returns).argmax(dim=1, keepdim=True)  # [B, 1]; NaN / inf never win
        plan = gather_candidates(actions, index)[:, 0]  # [B, H, A]
        if discrete and warm is None:
            fallback = torch.nn.functional.one_hot(fallback.argmax(-1), size).float()
        plan = torch.where(torch.isfinite(best_return)[:, None, None], plan, fallback)

    action = plan[:, 0]
    if discrete:
        warm_next = WarmStart(probs=shift_plan(plan, 1.0 / size))
        return PlanResult(action, None, None, plan, warm_next, best_return[None], mean_return[None])
    warm_next = WarmStart(mean=shift_plan(plan, 0.0))
    return PlanResult(action, plan, None, None, warm_next, best_return[None], mean_return[None])


SPEC = PlannerSpec("shooting", shooting, ShootingSettings, discrete=True, continuous=True)
