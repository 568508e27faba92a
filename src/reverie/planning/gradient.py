"""Gradient-based trajectory optimisation through a differentiable world model.

Several action sequences (restarts) per start state are imagined together,
their predicted returns are backpropagated to the actions, and Adam takes an
ascent step; actions are projected back into [-1, 1] after every step. The
best sequence seen over all restarts and iterations is returned, so a restart
that diverges, or reaches a region where the model returns NaN, costs nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from reverie.models.base import Dynamics
from reverie.models.state import repeat_state

from .base import PlannerSettings, PlannerSpec, PlanningError, PlanResult, State, WarmStart, fit_horizon, prepare, shift_plan
from .returns import finite_scores, return_stats, rollout_returns


@dataclass(frozen=True)
class GradientSettings(PlannerSettings):
    """Settings of gradient-based planning (Adam on the action sequence)."""

    restarts: int = 8
    """Action sequences R optimised side by side per start state."""
    iterations: int = 50
    """Imaginations per call; each but the last is followed by one Adam step."""
    learning_rate: float = 0.1
    """Adam step size, in action units."""
    init_std: float = 0.5
    """Restarts other than the first start at warm mean + init_std * N(0, 1), clipped."""


def gradient(
    model: Dynamics,
    state: State,
    settings: GradientSettings | None = None,
    warm: WarmStart | None = None,
    *,
    generator: torch.Generator | None = None,
) -> PlanResult:
    """Plan by gradient ascent on the predicted return (continuous actions only).

    Args:
        model: a model whose ``step`` and ``reward`` (and ``cont`` / ``value`` if used)
            are differentiable in the action; with ``policy_candidates`` restarts 1 .. P start
            from the rollout of its ``policy`` prior.
        state: B start states, a tensor [B, ...] or a dict of tensors [B, ...].
        settings: see :class:`GradientSettings`.
        warm: the ``warm`` of the previous call or None; its mean starts the first restart.
        generator: randomness; None seeds one from ``settings.seed`` or uses torch's global one.

    Returns:
        PlanResult whose ``mean`` is the best sequence [B, H, A] seen, whose action is
        its first step, and whose diagnostics are over restarts [iterations, B].
        Gradients are enabled internally, so it may be called under ``torch.no_grad()``
        but not under ``torch.inference_mode()``. Model parameters' ``.grad`` are untouched.
    """
    settings = settings or GradientSettings()
    setup = prepare(SPEC, model, state, settings, warm, generator)
    if settings.restarts < 1 or settings.iterations < 1:
        raise PlanningError(f"restarts and iterations must be >= 1; got {settings.restarts} and {settings.iterations}.")
    if settings.policy_candidates >= settings.restarts:
        raise PlanningError(
            f"policy_candidates ({settings.policy_candidates}) must be smaller than restarts ({settings.restarts})."
        )
    if torch.is_inference_mode_enabled():
        raise PlanningError("Gradient planning needs autograd; call it outside torch.inference_mode().")
    batch, size, device, generator = setup.batch, setup.size, setup.device, setup.generator
    horizon, restarts, n_policy = settings.horizon, settings.restarts, settings.policy_candidates

    centre = torch.zeros((batch, horizon, size), device=device)
    if setup.centre is not None:
        centre = setup.centre.clamp(-1.0, 1.0)
    elif warm is not None:
        centre = fit_horizon(warm.plan(discrete=False).to(device, torch.float32), horizon, 0.0).clamp(-1.0, 1.0)
    noise = torch.randn((batch, restarts, horizon, size), generator=generator, device=device)
    init = (centre.unsqueeze(1) + settings.init_std * noise).clamp(-1.0, 1.0)
    init[:, 0] = centre
    start = repeat_state(state, restarts)  # [B * R, ...]
    if n_policy:
        with torch.no_grad():
            # imagine the policy once; restarts 1 .. P then refine its action sequences
            rows = torch.cat([init[:, 1:], init[:, :1]], dim=1)  # policy rows first, restart 0 last
            _, rolled = rollout_returns(model, start, rows, settings, setup.policy, n_policy)
            init[:, 1 : 1 + n_policy] = rolled[:, :n_policy]

    actions = init.clone().requires_grad_(True)  # [B, R, H, A]
    optimizer = torch.optim.Adam([actions], lr=settings.learning_rate)
    best = centre.clone()
    best_score = torch.full((batch,), float("-inf"), device=device)
    best_history, mean_history = [], []
    with torch.enable_grad():
        for iteration in range(settings.iterations):
            returns, _ = rollout_returns(model, start, actions, settings)  # [B, R]
            detached = returns.detach()
            top, average = return_stats(detached)
            best_history.append(top)
            mean_history.append(average)
            scores = finite_scores(detached)
            score, index = scores.max(dim=1)  # [B]
            improved = score > best_score
            candidate = actions.detach()[torch.arange(batch, device=device), index]  # [B, H, A]
            best = torch.where(improved[:, None, None], candidate, best)
            best_score = torch.where(improved, score, best_score)
            if iteration == settings.iterations - 1:
                break
            if not returns.requires_grad:
                raise PlanningError(
                    "The model's predicted return does not depend differentiably on the action; "
                    "gradient planning needs a differentiable model (use 'cem' or 'mppi' otherwise)."
                )
            # rows are independent, so the sum's gradient is each row's own; a NaN return
            # contributes nothing rather than poisoning its restart
            objective = torch.where(torch.isfinite(returns), returns, torch.zeros_like(returns)).sum()
            (grad,) = torch.autograd.grad(-objective, actions)
            actions.grad = torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0)
            optimizer.step()
            with torch.no_grad():
                actions.clamp_(-1.0, 1.0)

    action = best[:, 0].clamp(-1.0, 1.0)
    warm_next = WarmStart(mean=shift_plan(best, 0.0), init_std=settings.init_std)
    return PlanResult(
        action, best, None, None, warm_next, torch.stack(best_history), torch.stack(mean_history)
    )


SPEC = PlannerSpec("gradient", gradient, GradientSettings, discrete=False, continuous=True)
