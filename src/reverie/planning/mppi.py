"""Model predictive path integral control (MPPI) over action sequences, TD-MPC2 style.

Each iteration imagines Gaussian candidates, keeps the best E, and moves the
mean to their average weighted by ``exp((R - max R) / temperature)``; the std
is the weighted spread, clamped to [min_std, max_std]. Subtracting the max
keeps the weights finite for returns of any scale, and candidates with NaN or
infinite returns get weight zero.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from reverie.models.base import Dynamics

from .base import PlannerSettings, PlannerSpec, PlanningError, PlanResult, State, WarmStart, fit_horizon, prepare, shift_plan
from .population import check_population, gaussian_std, population_search, weighted_moments


@dataclass(frozen=True)
class MPPISettings(PlannerSettings):
    """MPPI settings; the defaults are TD-MPC2's (512 samples, 64 elites, 6 iterations, horizon 3)."""

    horizon: int = 3
    """Number of actions H in each planned sequence (TD-MPC2 plans 3 steps and bootstraps)."""
    candidates: int = 512
    """Action sequences imagined per start state and iteration."""
    elites: int | None = 64
    """Best candidates that get a weight; None weights all candidates (classic MPPI)."""
    iterations: int = 6
    """Refits per call."""
    temperature: float = 2.0
    """lambda in weights ~ exp((R - max R) / lambda); larger is more uniform.
    TD-MPC2's ``temperature: 0.5`` multiplies the returns, which is lambda = 2.0 here."""
    init_std: float = 2.0
    """Standard deviation of the initial Gaussian (TD-MPC2 starts at max_std)."""
    min_std: float = 0.05
    """Floor on the refitted standard deviation."""
    max_std: float = 2.0
    """Ceiling on the refitted standard deviation."""
    momentum: float = 0.0
    """Weight of the previous mean in each refit (TD-MPC used 0.1, TD-MPC2 uses 0)."""
    noise_beta: float = 0.0
    """Colored-noise exponent along time (0: white noise)."""
    elite_action: bool = False
    """Execute the first action of one elite drawn by weight (TD-MPC2's choice, when evaluating
    too) instead of the weighted mean of the elites' first actions. Where the elites disagree
    (values nearly tied between opposite moves) the mean cancels them into a timid action;
    a drawn elite commits to one of them."""
    sample_action: bool = False
    """Execute a drawn elite's first action (as ``elite_action``) plus the refitted std's noise
    (TD-MPC2's training-time exploration)."""


def mppi_weights(scores: Tensor, temperature: float) -> Tensor:
    """Normalised weights ``softmax(scores / temperature)`` over dim 1: [B, E] -> [B, E].

    Scores of -inf (invalid candidates) get weight 0; a row with no finite
    score gets all-zero weights.
    """
    finite = torch.isfinite(scores)
    top = torch.where(finite, scores, torch.full_like(scores, float("-inf"))).max(dim=1, keepdim=True).values
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    shifted = torch.where(finite, (scores - top) / temperature, torch.full_like(scores, float("-inf")))
    weights = shifted.exp()  # max entry is exp(0) = 1, so the sum never overflows or vanishes
    return weights / weights.sum(dim=1, keepdim=True).clamp(min=1e-30)


def mppi(
    model: Dynamics,
    state: State,
    settings: MPPISettings | None = None,
    warm: WarmStart | None = None,
    *,
    generator: torch.Generator | None = None,
) -> PlanResult:
    """Plan with MPPI (continuous actions only).

    Args:
        model: has ``act_spec``, ``step(state, action [N, A]) -> state`` and ``reward(state) -> [N]``
            (plus ``cont`` / ``value`` / ``policy`` if the settings use them; TD-MPC2 rolls out
            24 policy candidates).
        state: B start states, a tensor [B, ...] or a dict of tensors [B, ...].
        settings: see :class:`MPPISettings` (defaults: TD-MPC2's planner).
        warm: the ``warm`` of the previous call or None; only its mean is used,
            the std restarts at ``init_std`` as in TD-MPC2.
        generator: randomness; None seeds one from ``settings.seed`` or uses torch's global one.

    Returns:
        PlanResult with action [B, A], mean/std [B, H, A] and diagnostics [iterations, B].
        Runs under ``torch.no_grad()``.
    """
    settings = settings or MPPISettings()
    setup = prepare(SPEC, model, state, settings, warm, generator, settings.candidates)
    elites = settings.candidates if settings.elites is None else settings.elites
    check_population(settings, settings.candidates, elites, settings.iterations, 0)
    if settings.temperature <= 0:
        raise PlanningError(f"temperature must be > 0; got {settings.temperature}.")
    if not 0 < settings.min_std <= settings.max_std:
        raise PlanningError(f"need 0 < min_std <= max_std; got {settings.min_std} and {settings.max_std}.")
    if not 0.0 <= settings.momentum < 1.0:
        raise PlanningError(f"momentum must be in [0, 1); got {settings.momentum}.")
    batch, size, device, generator = setup.batch, setup.size, setup.device, setup.generator

    shape = (batch, settings.horizon, size)
    mean = torch.zeros(shape, device=device)
    if setup.centre is not None:
        mean = setup.centre.clamp(-1.0, 1.0)
    elif warm is not None:
        mean = fit_horizon(warm.plan(discrete=False).to(device, torch.float32), settings.horizon, 0.0).clamp(-1.0, 1.0)
    std = torch.full(shape, settings.init_std, device=device)

    def refit(elites: Tensor, scores: Tensor, mean: Tensor, std: Tensor | None):
        fit_mean, fit_std, has = weighted_moments(elites, mppi_weights(scores, settings.temperature))
        new_mean = settings.momentum * mean + (1.0 - settings.momentum) * fit_mean
        new_std = fit_std.clamp(settings.min_std, settings.max_std)
        return torch.where(has, new_mean, mean), torch.where(has, new_std, gaussian_std(std))

    with torch.no_grad():
        found = population_search(
            model,
            state,
            settings,
            mean=mean,
            std=std,
            candidates=settings.candidates,
            elites=elites,
            iterations=settings.iterations,
            refit=refit,
            beta=settings.noise_beta,
            policy=setup.policy,
            generator=generator,
        )
        action = found.mean[:, 0]
        if settings.elite_action or settings.sample_action:
            weights = mppi_weights(found.elite_scores, settings.temperature)  # [B, E]
            valid = weights.sum(dim=1) > 0
            pick = torch.multinomial(torch.where(valid[:, None], weights, torch.ones_like(weights)), 1, generator=generator)
            chosen = found.elites[torch.arange(batch, device=device), pick[:, 0], 0]  # [B, A]
            if settings.sample_action:
                noise = torch.randn(chosen.shape, generator=generator, device=device)
                chosen = chosen + gaussian_std(found.std)[:, 0] * noise
            action = torch.where(valid[:, None], chosen, action)
        action = action.clamp(-1.0, 1.0)

    warm_next = WarmStart(mean=shift_plan(found.mean, 0.0), std=shift_plan(gaussian_std(found.std), settings.init_std),
                          init_std=settings.init_std)
    return PlanResult(action, found.mean, found.std, None, warm_next, found.best_return, found.mean_return)


SPEC = PlannerSpec("mppi", mppi, MPPISettings, discrete=False, continuous=True)
