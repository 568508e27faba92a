"""The sample -> imagine -> rank -> refit loop shared by CEM and MPPI.

A sampling distribution over action sequences (a Gaussian mean/std per step,
or categorical probabilities per step for discrete actions) is refined for a
fixed number of iterations. The planner supplies only the refit rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from reverie.models.base import Dynamics
from reverie.models.state import State, repeat_state

from .base import PlannerSettings, PlanningError, Policy
from .returns import finite_scores, return_stats, rollout_returns
from .sampling import categorical_candidates, gather_candidates, gaussian_candidates

#: refit(elites [B, E, H, A], elite_scores [B, E] with -inf for invalid, mean, std) -> (mean, std)
Refit = Callable[[Tensor, Tensor, Tensor, Tensor | None], tuple[Tensor, Tensor | None]]


@dataclass(frozen=True)
class SearchOutcome:
    """What the loop found; the planner turns it into a :class:`PlanResult`."""

    mean: Tensor
    """[B, H, A] refined means (continuous) or probabilities (discrete)."""
    std: Tensor | None
    """[B, H, A] refined standard deviations (continuous) or None."""
    elites: Tensor
    """[B, E, H, A] the last iteration's elites, best first."""
    elite_scores: Tensor
    """[B, E] their returns, -inf where the model's return was not finite."""
    best: Tensor
    """[B, H, A] the best finite candidate seen in any iteration."""
    best_score: Tensor
    """[B] its return (-inf if no candidate was ever finite)."""
    best_return: Tensor
    """[iterations, B] best finite return per iteration."""
    mean_return: Tensor
    """[iterations, B] mean finite return per iteration."""


def gaussian_std(std: Tensor | None) -> Tensor:
    """``std`` [B, H, A] of a continuous search, which always carries one (initially and from every refit)."""
    if std is None:
        raise PlanningError("a continuous population search needs a std [B, H, A], initially and from every refit.")
    return std


def check_population(settings: PlannerSettings, candidates: int, elites: int, iterations: int, kept: int) -> None:
    """Reject population sizes that cannot work, naming the field."""
    if iterations < 1:
        raise PlanningError(f"iterations must be >= 1; got {iterations}.")
    if not 1 <= elites <= candidates:
        raise PlanningError(f"elites must be between 1 and candidates ({candidates}); got {elites}.")
    fixed = settings.policy_candidates + kept
    if fixed >= candidates:
        raise PlanningError(
            f"policy_candidates plus kept elites ({fixed}) must leave room for sampled candidates "
            f"(candidates={candidates}); lower them or raise candidates."
        )


def weighted_moments(elites: Tensor, weights: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Weighted mean and std of elites [B, E, H, A] with weights [B, E] (zeros allowed).

    Returns mean [B, H, A], std [B, H, A] and a mask [B, 1, 1] of start states
    whose weights sum to more than zero (the others keep their old distribution).
    """
    total = weights.sum(dim=1)  # [B]
    norm = (weights / total.clamp(min=1e-30).unsqueeze(1))[:, :, None, None]  # [B, E, 1, 1]
    mean = (norm * elites).sum(dim=1)
    var = (norm * (elites - mean.unsqueeze(1)) ** 2).sum(dim=1)
    return mean, var.sqrt(), (total > 0)[:, None, None]


def population_search(
    model: Dynamics,
    state: State,
    settings: PlannerSettings,
    *,
    mean: Tensor,
    std: Tensor | None,
    candidates: int,
    elites: int,
    iterations: int,
    refit: Refit,
    kept: int = 0,
    beta: float = 0.0,
    discrete: bool = False,
    policy: Policy | None = None,
    generator: torch.Generator | None = None,
) -> SearchOutcome:
    """Refine a sampling distribution over action sequences.

    Args:
        model: the world model (``step``, ``reward``; ``cont`` / ``value`` if used).
        state: B start states, leaves [B, ...].
        settings: shared planner settings (``policy_candidates``, discount, ...).
        mean: [B, H, A] initial means, or initial probabilities if ``discrete``.
        std: [B, H, A] initial standard deviations (None if discrete).
        candidates: C sequences imagined per start state and iteration.
        elites: E best candidates handed to ``refit``.
        iterations: number of refits.
        refit: the update rule (see :data:`Refit`).
        kept: this many elites of an iteration are re-imagined in the next one (iCEM).
        beta: colored-noise exponent for Gaussian sampling.
        discrete: sample one-hot actions from per-step probabilities instead of Gaussians.
        policy: prior policy rolling out the first ``settings.policy_candidates``
            candidates; it runs in the first iteration and its action sequences are
            re-imagined unchanged afterwards (as TD-MPC2 does).
        generator: source of randomness (None: torch's global generator).
    """
    batch = mean.shape[0]
    n_policy = settings.policy_candidates if policy is not None else 0
    start = repeat_state(state, candidates)  # [B * C, ...], repeated once for all iterations
    policy_actions: Tensor | None = None
    carried: Tensor | None = None  # [B, kept, H, A]
    best = mean.clone()
    best_score = torch.full((batch,), float("-inf"), device=mean.device)
    best_history, mean_history = [], []
    elite_actions: Tensor | None = None
    elite_scores: Tensor | None = None

    for _ in range(iterations):
        fixed = []
        if n_policy:
            # first iteration: zeros that rollout_returns replaces by the policy's own actions as it imagines
            fixed.append(policy_actions if policy_actions is not None else mean.new_zeros(batch, n_policy, *mean.shape[1:]))
        if carried is not None:
            fixed.append(carried)
        n_sampled = candidates - sum(x.shape[1] for x in fixed)
        if discrete:
            sampled = categorical_candidates(mean, n_sampled, generator=generator)
        else:
            sampled = gaussian_candidates(mean, gaussian_std(std), n_sampled, beta=beta, generator=generator)
        actions = torch.cat([*fixed, sampled], dim=1) if fixed else sampled  # [B, C, H, A]

        roll_policy = policy if (n_policy and policy_actions is None) else None
        returns, actions = rollout_returns(model, start, actions, settings, roll_policy, n_policy)
        if roll_policy is not None:
            policy_actions = actions[:, :n_policy]

        top, history_mean = return_stats(returns)
        best_history.append(top)
        mean_history.append(history_mean)

        scores = finite_scores(returns)
        elite_scores, index = scores.topk(elites, dim=1)  # [B, E], best first
        elite_actions = gather_candidates(actions, index)  # [B, E, H, A]
        improved = elite_scores[:, 0] > best_score
        best = torch.where(improved[:, None, None], elite_actions[:, 0], best)
        best_score = torch.where(improved, elite_scores[:, 0], best_score)
        if kept:
            carried = elite_actions[:, :kept]
        mean, std = refit(elite_actions, elite_scores, mean, std)

    if elite_actions is None or elite_scores is None:
        raise PlanningError(f"iterations must be >= 1; got {iterations}.")
    return SearchOutcome(
        mean=mean,
        std=std,
        elites=elite_actions,
        elite_scores=elite_scores,
        best=best,
        best_score=best_score,
        best_return=torch.stack(best_history),
        mean_return=torch.stack(mean_history),
    )
