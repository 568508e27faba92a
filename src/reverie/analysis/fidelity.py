"""Dream fidelity: does a learned model rank policies as the real environment does?

A model that a controller is trained in (World Models' dream, any model with ``reward`` and ``cont``) is
useful only if the policies it scores highly also score highly in reality. Given the episodes of a fixed
set of policies played both in the dream and in the real environment (each constant action, uniformly
random, held random, a trained controller: :mod:`reverie.envs.policy_play` plays them), this computes,
per policy, the mean episode length and return in both, and across policies:

- the Spearman rank correlation of dream and real mean return, and of mean length (1: the dream orders
  the policies exactly as reality does; ``nan`` when either side scores every policy the same);
- the regret of trusting the dream: the best real mean return minus the real mean return of the policy
  the dream rates best (0 when the dream picks a policy as good as reality's best);
- each policy's dream length over its real length (1: the dream keeps it alive as long as reality).

Pure: arrays in, a :class:`Fidelity` out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np
from scipy.stats import spearmanr

__all__ = ["EpisodeScores", "Episodes", "Fidelity", "dream_fidelity"]


class EpisodeScores(Protocol):
    """What :func:`dream_fidelity` reads of one policy's episodes on one side."""

    @property
    def length(self) -> np.ndarray: ...

    @property
    def ret(self) -> np.ndarray: ...


@dataclass(frozen=True)
class Episodes:
    """One policy's episodes on one side: ``length [E]`` (agent steps) and ``ret [E]`` (returns)."""

    length: np.ndarray
    ret: np.ndarray


@dataclass(frozen=True)
class Fidelity:
    """Per policy (``[P]`` arrays in the order of ``policies``) and across policies; see the module docstring."""

    policies: tuple[str, ...]
    dream_return: np.ndarray
    real_return: np.ndarray
    dream_length: np.ndarray
    real_length: np.ndarray
    return_rank_correlation: float
    length_rank_correlation: float
    regret: float
    dream_choice: str
    """The policy with the best mean return in the dream."""
    real_choice: str
    """The policy with the best mean return in reality."""

    @property
    def length_ratio(self) -> np.ndarray:
        """``[P]``: dream mean length over real mean length."""
        return self.dream_length / np.maximum(self.real_length, 1e-12)

    def rows(self) -> list[dict[str, float | str]]:
        """One dict per policy, for tables and JSON."""
        return [{"policy": p, "dream_return": float(self.dream_return[i]), "real_return": float(self.real_return[i]),
                 "dream_length": float(self.dream_length[i]), "real_length": float(self.real_length[i]),
                 "length_ratio": float(self.length_ratio[i])} for i, p in enumerate(self.policies)]


def _rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")              # a constant side has no ranking to agree with
    return float(spearmanr(a, b).statistic)


def dream_fidelity(policies: Sequence[str], dream: Sequence[EpisodeScores], real: Sequence[EpisodeScores]
                   ) -> Fidelity:
    """The fidelity of a dream over ``policies`` from their ``dream`` and ``real`` episodes (same order)."""
    if not (len(policies) == len(dream) == len(real)) or len(policies) == 0:
        raise ValueError(f"dream_fidelity needs one dream and one real set of episodes per policy, got "
                         f"{len(policies)} policies, {len(dream)} dream and {len(real)} real sets")
    empty = [p for p, d, r in zip(policies, dream, real) if len(d.ret) == 0 or len(r.ret) == 0]
    if empty:
        raise ValueError(f"policies {empty} have no episodes on one side; play at least one episode of each")

    def means(side: Sequence[EpisodeScores], key: str) -> np.ndarray:
        return np.array([float(np.mean(getattr(e, key))) for e in side])

    d_ret, r_ret = means(dream, "ret"), means(real, "ret")
    d_len, r_len = means(dream, "length"), means(real, "length")
    pick = int(np.argmax(d_ret))
    best = int(np.argmax(r_ret))
    return Fidelity(tuple(policies), d_ret, r_ret, d_len, r_len, _rank_correlation(d_ret, r_ret),
                    _rank_correlation(d_len, r_len), float(r_ret[best] - r_ret[pick]), policies[pick], policies[best])
