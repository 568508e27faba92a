"""The cross-entropy method (CEM) over action sequences, with the iCEM options.

Continuous actions: a diagonal Gaussian per step is refitted to the elites
(PlaNet, Hafner et al. 2019), optionally with momentum, colored noise along
time and elites carried between iterations (iCEM, Pinneri et al. 2020).
Discrete actions: a categorical distribution per step is refitted to the
elites' choice frequencies, smoothed towards uniform so no choice dies out.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from reverie.models.base import Dynamics

from .base import (PlannerSettings, PlannerSpec, PlanningError, PlanResult, Setup, State, WarmStart, centred_probs,
                   fit_horizon, prepare, shift_plan)
from .population import check_population, gaussian_std, population_search, weighted_moments


@dataclass(frozen=True)
class CEMSettings(PlannerSettings):
    """CEM settings; the defaults are PlaNet's (horizon 12, 1000 candidates, top 100, 10 iterations)."""

    candidates: int = 1000
    """Action sequences C imagined per start state and iteration."""
    elites: int = 100
    """Best candidates E the distribution is refitted to."""
    iterations: int = 10
    """Refits per call."""
    init_std: float = 1.0
    """Standard deviation of the initial Gaussian (continuous)."""
    min_std: float = 0.0
    """Floor on the refitted standard deviation (continuous)."""
    momentum: float = 0.0
    """Weight of the previous mean/std (or probs) in each refit: new = m * old + (1 - m) * fit."""
    noise_beta: float = 0.0
    """Colored-noise exponent along time: 0 white (PlaNet), 2-3 smooth sequences (iCEM)."""
    keep_elites: float = 0.0
    """Fraction of the elites re-imagined in the next iteration (iCEM keeps 0.3)."""
    warm_std: bool = False
    """Also start from the warm start's std (default: reset to init_std, as iCEM does)."""
    smoothing: float = 0.01
    """Discrete: mix this much of the uniform distribution into each refitted step."""
    return_best: bool = False
    """Execute the best candidate seen rather than the refined mean (or most likely choice)."""


def _initial(settings: CEMSettings, warm: WarmStart | None, setup: Setup):
    horizon, batch, size, device = settings.horizon, setup.batch, setup.size, setup.device
    if setup.centre is not None:
        if setup.discrete:
            return centred_probs(setup.centre), None
        return setup.centre.clamp(-1.0, 1.0), torch.full((batch, horizon, size), settings.init_std, device=device)
    if setup.discrete:
        probs = torch.full((batch, horizon, size), 1.0 / size, device=device)
        if warm is not None:
            probs = fit_horizon(warm.plan(discrete=True).to(device, torch.float32), horizon, 1.0 / size)
            probs = probs / probs.sum(-1, keepdim=True)
        return probs, None
    mean = torch.zeros((batch, horizon, size), device=device)
    std = torch.full((batch, horizon, size), settings.init_std, device=device)
    if warm is not None:
        mean = fit_horizon(warm.plan(discrete=False).to(device, torch.float32), horizon, 0.0).clamp(-1.0, 1.0)
        if settings.warm_std and warm.std is not None:
            std = fit_horizon(warm.std.to(device, torch.float32), horizon, settings.init_std)
    return mean, std


def cem(
    model: Dynamics,
    state: State,
    settings: CEMSettings | None = None,
    warm: WarmStart | None = None,
    *,
    generator: torch.Generator | None = None,
) -> PlanResult:
    """Plan with the cross-entropy method.

    Args:
        model: has ``act_spec``, ``step(state, action [N, A]) -> state`` and ``reward(state) -> [N]``
            (plus ``cont`` / ``value`` / ``policy`` if the settings use them).
        state: B start states, a tensor [B, ...] or a dict of tensors [B, ...].
        settings: see :class:`CEMSettings` (defaults: PlaNet's CEM).
        warm: the ``warm`` of the previous call (the plan shifted by one step) or None.
        generator: randomness; None seeds one from ``settings.seed`` or uses torch's global one.

    Returns:
        PlanResult with action [B, A] (the refined mean's first step, or a one-hot of the
        most likely first choice), mean/std [B, H, A] or probs [B, H, K], and
        diagnostics [iterations, B]. Runs under ``torch.no_grad()``.
    """
    settings = settings or CEMSettings()
    setup = prepare(SPEC, model, state, settings, warm, generator, settings.candidates)
    kept = round(settings.keep_elites * settings.elites)
    check_population(settings, settings.candidates, settings.elites, settings.iterations, kept)
    if not 0.0 <= settings.momentum < 1.0:
        raise PlanningError(f"momentum must be in [0, 1); got {settings.momentum}.")
    if not 0.0 <= settings.smoothing <= 1.0:
        raise PlanningError(f"smoothing must be in [0, 1]; got {settings.smoothing}.")
    size, discrete = setup.size, setup.discrete
    mean, std = _initial(settings, warm, setup)
    momentum = settings.momentum

    def refit(elites: Tensor, scores: Tensor, mean: Tensor, std: Tensor | None):
        # every finite elite counts equally; non-finite ones (-inf) get weight 0
        fit_mean, fit_std, has = weighted_moments(elites, torch.isfinite(scores).float())
        if discrete:
            # the mean of one-hot elites is the per-step choice frequency
            probs = momentum * mean + (1.0 - momentum) * fit_mean
            probs = (1.0 - settings.smoothing) * probs + settings.smoothing / size
            return torch.where(has, probs, mean), None
        std = gaussian_std(std)
        new_mean = momentum * mean + (1.0 - momentum) * fit_mean
        new_std = (momentum * std + (1.0 - momentum) * fit_std).clamp(min=settings.min_std)
        return torch.where(has, new_mean, mean), torch.where(has, new_std, std)

    with torch.no_grad():
        found = population_search(
            model,
            state,
            settings,
            mean=mean,
            std=std,
            candidates=settings.candidates,
            elites=settings.elites,
            iterations=settings.iterations,
            refit=refit,
            kept=kept,
            beta=settings.noise_beta,
            discrete=discrete,
            policy=setup.policy,
            generator=setup.generator,
        )

    if discrete:
        first = found.best[:, 0] if settings.return_best else found.mean[:, 0]
        action = torch.nn.functional.one_hot(first.argmax(-1), size).float()
        warm_next = WarmStart(probs=shift_plan(found.mean, 1.0 / size))
        return PlanResult(action, None, None, found.mean, warm_next, found.best_return, found.mean_return)
    action = (found.best[:, 0] if settings.return_best else found.mean[:, 0]).clamp(-1.0, 1.0)
    warm_next = WarmStart(mean=shift_plan(found.mean, 0.0), std=shift_plan(gaussian_std(found.std), settings.init_std),
                          init_std=settings.init_std)
    return PlanResult(action, found.mean, found.std, None, warm_next, found.best_return, found.mean_return)


SPEC = PlannerSpec("cem", cem, CEMSettings, discrete=True, continuous=True)
