"""Continual-learning metrics of a score matrix.

``R [T, T]``: ``R[i, j]`` is the performance (higher is better: a return, a success rate, a negated loss)
on task ``j`` after training on tasks ``0 .. i`` in order; row ``T - 1`` is the end of the sequence.
``b [T]`` (optional): the performance on each task of a reference that has not trained on the sequence
(a randomly initialised model, or the model before the sequence).

===================  ===========================================================================  ==========
metric               formula                                                                      source
===================  ===========================================================================  ==========
average performance  ``A = mean_j R[T-1, j]``                                                     [1], [2]
forgetting           ``F = mean_{j < T-1} f_j``, ``f_j = max_{i < T-1} R[i, j] - R[T-1, j]``      [2]
backward transfer    ``BWT = mean_{j < T-1} (R[T-1, j] - R[j, j])``                               [1]
forward transfer     ``FWT = mean_{j >= 1} (R[j-1, j] - b[j])``                                   [1]
===================  ===========================================================================  ==========

[1] Lopez-Paz & Ranzato 2017, "Gradient Episodic Memory for Continual Learning" (GEM).
[2] Chaudhry et al. 2018, "Riemannian Walk for Incremental Learning" (RWalk): forgetting of
task ``j`` after the last task is its best score at any earlier point minus its final score. Continual
World (Wolczyk et al. 2021) uses ``R[j, j] - R[T-1, j]`` instead (the score right after training on
``j``); where a task's best score is the one right after it was trained, the two agree. Forgetting is
positive when performance was lost.

Forward transfer is GEM's: how much training on the tasks before ``j`` helps on ``j`` before ``j`` itself
is trained, against the reference ``b[j]``. (Continual World's forward transfer compares areas under
training curves against single-task runs; it needs the curves, not a score matrix, and is not computed
here.)

Pure: numpy in, floats out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["ContinualScores", "ScoreMatrixError", "average_performance", "backward_transfer", "continual_scores",
           "forgetting", "forgetting_per_task", "forward_transfer"]


class ScoreMatrixError(ValueError):
    """A score matrix (or reference scores) of the wrong shape or with values that are not finite."""


def _matrix(scores: Sequence[Sequence[float]] | np.ndarray, at_least: int = 1) -> np.ndarray:
    r = np.asarray(scores, dtype=np.float64)
    if r.ndim != 2 or r.shape[0] != r.shape[1]:
        raise ScoreMatrixError(f"the score matrix must be square [T, T] (row i: after training on task i, "
                               f"column j: task j), got shape {list(r.shape)}")
    if r.shape[0] < at_least:
        raise ScoreMatrixError(f"this metric needs a sequence of at least {at_least} tasks, got {r.shape[0]}")
    if not np.isfinite(r).all():
        raise ScoreMatrixError("the score matrix holds values that are not finite (NaN or inf)")
    return r


def average_performance(scores: Sequence[Sequence[float]] | np.ndarray) -> float:
    """``A``: the mean score over every task at the end of the sequence."""
    r = _matrix(scores)
    return float(r[-1].mean())


def forgetting_per_task(scores: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
    """``f_j = max_{i < T-1} R[i, j] - R[T-1, j]`` for every task ``j < T-1``: ``[T - 1]``."""
    r = _matrix(scores, at_least=2)
    last = r.shape[0] - 1
    return r[:last, :last].max(0) - r[last, :last]


def forgetting(scores: Sequence[Sequence[float]] | np.ndarray) -> float:
    """``F``: the mean of :func:`forgetting_per_task` (Chaudhry et al. 2018)."""
    return float(forgetting_per_task(scores).mean())


def backward_transfer(scores: Sequence[Sequence[float]] | np.ndarray) -> float:
    """``BWT``: the mean change on each task ``j < T-1`` from right after training it to the end (GEM);
    negative when tasks were forgotten."""
    r = _matrix(scores, at_least=2)
    last = r.shape[0] - 1
    return float((r[last, :last] - np.diag(r)[:last]).mean())


def forward_transfer(scores: Sequence[Sequence[float]] | np.ndarray, reference: Sequence[float] | np.ndarray
                     ) -> float:
    """``FWT``: the mean over tasks ``j >= 1`` of the score on ``j`` just before training on it, less the
    reference's score ``b[j]`` (GEM)."""
    r = _matrix(scores, at_least=2)
    b = np.asarray(reference, dtype=np.float64)
    if b.shape != (r.shape[0],):
        raise ScoreMatrixError(f"the reference scores must be one per task, [{r.shape[0]}], got shape "
                               f"{list(b.shape)}")
    if not np.isfinite(b).all():
        raise ScoreMatrixError("the reference scores hold values that are not finite (NaN or inf)")
    t = r.shape[0]
    before = r[np.arange(t - 1), np.arange(1, t)]            # R[j-1, j] for j = 1 .. T-1
    return float((before - b[1:]).mean())


@dataclass(frozen=True)
class ContinualScores:
    """Every metric of one score matrix (see the module docstring); those a one-task sequence or a missing
    reference cannot give are None."""

    tasks: int
    average: float
    forgetting: float | None
    forgetting_per_task: tuple[float, ...] | None
    backward_transfer: float | None
    forward_transfer: float | None


def continual_scores(scores: Sequence[Sequence[float]] | np.ndarray,
                     reference: Sequence[float] | np.ndarray | None = None) -> ContinualScores:
    """All the metrics of ``scores`` (and ``reference``, for forward transfer)."""
    r = _matrix(scores)
    several = r.shape[0] >= 2
    return ContinualScores(
        tasks=r.shape[0], average=average_performance(r),
        forgetting=forgetting(r) if several else None,
        forgetting_per_task=tuple(float(f) for f in forgetting_per_task(r)) if several else None,
        backward_transfer=backward_transfer(r) if several else None,
        forward_transfer=forward_transfer(r, reference) if several and reference is not None else None)
