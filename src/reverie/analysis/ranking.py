"""Ranking metrics of latent predictions (C-SWM's evaluation, Kipf et al. 2020): Hits@k and mean reciprocal rank.

A model predicts the latent state k steps ahead of an observation along a recorded action sequence; the
prediction should lie nearer to the encoding of the observation actually reached than to the encoding of any
other evaluation state. :func:`true_ranks` ranks, for every query (a prediction), its own candidate (the
encoding of its true next state) among all candidates (every encoded evaluation state) by Euclidean distance,
one chunk of queries at a time, so memory is ``[chunk, M]`` and never ``[N, M, F]``. Ties count in the true
candidate's favour, as the reference evaluation's stable sort with the true state first does.

The reference evaluation (``eval.py`` of tkipf/c-swm) ranks the other way round: for every encoded target,
its own prediction among all predictions; that is ``true_ranks(targets, predictions)``, since the distance
is symmetric. :func:`multi_step_predictions` produces both sides for any world model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import torch
from torch import Tensor

from reverie.models.base import WorldModel, imagine

__all__ = ["RankingScores", "multi_step_predictions", "ranking_scores", "true_ranks"]


def true_ranks(queries: Tensor, candidates: Tensor, targets: Tensor | None = None, chunk: int = 1024) -> Tensor:
    """The rank (1 = nearest) of each query's own candidate among ``candidates``.

    queries ``[N, F]``, candidates ``[M, F]``, targets ``[N]`` (long; the index of each query's own candidate,
    by default ``arange(N)``, which needs ``M >= N``); returns ``[N]`` (long). Ranks are by Euclidean distance;
    a candidate exactly as near as the true one does not push it down. ``chunk`` queries at a time.
    """
    if queries.dim() != 2 or candidates.dim() != 2 or queries.shape[1] != candidates.shape[1]:
        raise ValueError(f"true_ranks needs queries [N, F] and candidates [M, F] of one F, got "
                         f"{list(queries.shape)} and {list(candidates.shape)}")
    n, m = queries.shape[0], candidates.shape[0]
    if targets is None:
        if m < n:
            raise ValueError(f"without targets query i's candidate is candidate i, so {n} queries need at least "
                             f"{n} candidates, got {m}")
        targets = torch.arange(n, device=queries.device)
    if targets.shape != (n,) or (n and (int(targets.min()) < 0 or int(targets.max()) >= m)):
        raise ValueError(f"targets must be [N = {n}] indices into {m} candidates")
    if chunk < 1:
        raise ValueError(f"chunk must be at least 1, got {chunk}")
    out = []
    for start in range(0, n, chunk):
        q, t = queries[start:start + chunk], targets[start:start + chunk]
        # the differences themselves, not |x|^2 + |y|^2 - 2xy, whose rounding would make false ties
        dist = torch.cdist(q.double(), candidates.double(), compute_mode="donot_use_mm_for_euclid_dist")  # [n, M]
        own = dist.gather(1, t[:, None])                                                                   # [n, 1]
        out.append(1 + (dist < own).sum(1))
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long, device=queries.device)


@dataclass(frozen=True)
class RankingScores:
    """Hits@k (the fraction of true candidates ranked k or better) and MRR (the mean of 1 / rank), in [0, 1]."""

    hits_at_1: float
    mrr: float
    count: int
    """Queries ranked."""


def ranking_scores(ranks: Tensor) -> RankingScores:
    """Hits@1 and MRR of ``ranks [N]`` (1-based)."""
    if ranks.numel() == 0 or int(ranks.min()) < 1:
        raise ValueError("ranking_scores needs at least one rank, each at least 1")
    ranks = ranks.double()
    return RankingScores(float((ranks == 1).double().mean()), float((1.0 / ranks).mean()), int(ranks.numel()))


def multi_step_predictions(model: WorldModel, obs: Mapping[str, Tensor], actions: Tensor,
                           steps: Sequence[int]) -> dict[int, tuple[Tensor, Tensor]]:
    """For each k in ``steps``: (the features predicted k steps ahead of ``obs[:, 0]`` along ``actions[:, :k]``,
    the features of ``obs[:, k]`` encoded on its own), each ``[N, F]``.

    obs ``{key: [N, T + 1, ...]}`` (episodes), actions ``[N, T, A]`` (model space; ``actions[:, t]`` leads from
    step t to t + 1), every k in 1..T. Each observation is filtered as the first of an episode (for C-SWM,
    which is not recurrent, that is its encoding). Call under ``torch.no_grad()`` and in eval mode.
    """
    horizon = actions.shape[1]
    if not steps or min(steps) < 1 or max(steps) > horizon:
        raise ValueError(f"steps must lie in 1..{horizon} (the episodes' actions), got {list(steps)}")
    n = actions.shape[0]
    zeros = torch.zeros(n, 1, actions.shape[-1], device=actions.device, dtype=actions.dtype)
    first = torch.ones(n, 1, dtype=torch.bool, device=actions.device)

    def encoded(t: int) -> Tensor:
        _, state = model.observe({k: v[:, t:t + 1] for k, v in obs.items()}, zeros, first)
        return model.features(state)

    _, start = model.observe({k: v[:, :1] for k, v in obs.items()}, zeros, first)
    imagined = model.features(imagine(model, start, actions[:, :max(steps)]))          # [N, H, F]
    return {k: (imagined[:, k - 1], encoded(k)) for k in steps}
