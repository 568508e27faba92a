"""Random projections of latent states: how far distances bend, the JL bound, what a planner keeps.

Latent feature vectors ``x [N, D]`` (one row per visited state) are projected
to ``k`` dimensions by :class:`sklearn.random_projection.GaussianRandomProjection`
(entries ``N(0, 1/k)``, so squared lengths are kept on average). The
*distortion* of a pair of distinct states ``(x_i, x_j)`` is

    ``| ||P x_i - P x_j||^2 / ||x_i - x_j||^2 - 1 |``   (dimensionless)

taken over all pairs, or over ``max_pairs`` pairs drawn at random (seeded) when
there are more; pairs at distance 0 are skipped.

The JL bound is sklearn's :func:`~sklearn.random_projection.johnson_lindenstrauss_min_dim`,
``k >= 4 ln(n) / (eps^2/2 - eps^3/3)`` (Dasgupta & Gupta, "An elementary proof
of a theorem of Johnson and Lindenstrauss", 2003). What it guarantees: at such
a ``k``, each pair is distorted by more than ``eps`` with probability at most
``2/n^2`` (the chi-square tail bounds), so by the union bound over the
``n(n-1)/2`` pairs a single draw keeps *every* pair within ``eps`` with
probability at least ``1/n``; more draws boost it (``1 - (1 - 1/n)^r`` after
``r``). The union bound is loose, and in practice nearly every draw succeeds.
sklearn rounds ``k`` down, so at exactly its ``k`` the formula's ``eps``
(:func:`jl_eps`) is a hair above the requested one.

Pure functions: no file I/O, no clocks, no logging; numpy out.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["DistortionReport", "RidgeReport", "jl_eps", "projection_distortion", "projection_r2"]


@dataclass(frozen=True)
class DistortionReport:
    """Distortion of pairwise squared distances at each target dimension ``k``."""

    ks: np.ndarray                 # [K] target dimensions
    max_distortion: np.ndarray     # [K] over the pairs measured
    mean_distortion: np.ndarray    # [K]
    quantiles: dict                # "q50", "q90", ... -> [K]
    jl_eps: np.ndarray             # [K] eps the JL formula guarantees at k (inf: none below 1)
    eps: float | None              # the eps asked about, if any
    jl_min_dim: int | None         # sklearn's k for eps and N, if eps was given
    n_samples: int
    n_features: int
    n_pairs: int                   # pairs measured (all, or a seeded sample)


@dataclass(frozen=True)
class RidgeReport:
    """Held-out R^2 of a ridge regression from projected states to a target, per ``k``."""

    ks: np.ndarray                 # [K]
    r2: np.ndarray                 # [K] held-out R^2 from the k-dimensional projection
    full_r2: float                 # held-out R^2 from the unprojected states
    n_train: int
    n_test: int
    alpha: float


def jl_eps(n_samples: int, k):
    """The ``eps`` for which ``k = 4 ln(n) / (eps^2/2 - eps^3/3)``: the JL formula solved for eps.

    Scalar ``k`` gives a float, array ``k`` an array. ``inf`` where even
    ``eps -> 1`` needs more than ``k`` dimensions (``4 ln(n) / k >= 1/6``); 0 for ``n <= 1``.
    """
    from scipy.optimize import brentq

    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    ks = np.asarray(k, dtype=np.float64)
    if np.any(ks < 1):
        raise ValueError(f"k must be >= 1, got {k}")
    out = np.empty(ks.shape)
    for idx, kk in np.ndenumerate(ks):
        c = 4.0 * math.log(n_samples) / kk
        if c == 0.0:
            out[idx] = 0.0
        elif c >= 1.0 / 6.0:
            out[idx] = np.inf
        else:   # eps^2/2 - eps^3/3 rises from 0 to 1/6 on (0, 1): one root
            out[idx] = brentq(lambda e, c=c: e * e / 2 - e ** 3 / 3 - c, 0.0, 1.0, xtol=1e-14)
    return float(out) if out.ndim == 0 else out


def _pairs(n: int, max_pairs: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    if n * (n - 1) // 2 <= max_pairs:
        return np.triu_indices(n, k=1)
    i = rng.integers(0, n, size=max_pairs)
    j = (i + rng.integers(1, n, size=max_pairs)) % n        # j != i, uniform over the others
    return i, j


def _project(x: np.ndarray, k: int, random_state) -> np.ndarray:
    from sklearn.exceptions import DataDimensionalityWarning
    from sklearn.random_projection import GaussianRandomProjection

    with warnings.catch_warnings():  # k > D is allowed: it measures, it does not compress
        warnings.simplefilter("ignore", DataDimensionalityWarning)
        return GaussianRandomProjection(n_components=int(k), random_state=random_state).fit_transform(x)


def _check_x(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"x must be [N, D] with N >= 2, got shape {x.shape}")
    return x


def projection_distortion(x, ks: Sequence[int], *, random_state: int = 0, eps: float | None = None,
                          max_pairs: int = 20_000,
                          quantiles: Sequence[float] = (0.5, 0.9, 0.99)) -> DistortionReport:
    """Project ``x [N, D]`` to each ``k`` in ``ks`` and measure the distortion of pairwise distances.

    ``random_state`` seeds both the projection and the pair sample. With ``eps``
    in (0, 1) the report also carries sklearn's JL dimension for ``(N, eps)``.
    """
    from sklearn.random_projection import johnson_lindenstrauss_min_dim

    x = _check_x(x)
    n, d = x.shape
    ks_arr = np.asarray(list(ks), dtype=np.int64)
    i, j = _pairs(n, int(max_pairs), np.random.default_rng(random_state))
    d2 = ((x[i] - x[j]) ** 2).sum(axis=1)
    keep = d2 > 0
    i, j, d2 = i[keep], j[keep], d2[keep]
    if i.size == 0:
        raise ValueError("all states are identical: no pair has a distance to distort")
    maxes, means, qs = [], [], {f"q{round(100 * q):d}": [] for q in quantiles}
    for k in ks_arr:
        p = _project(x, k, random_state)
        dist = np.abs(((p[i] - p[j]) ** 2).sum(axis=1) / d2 - 1.0)
        maxes.append(dist.max())
        means.append(dist.mean())
        for name, q in zip(qs, quantiles):
            qs[name].append(np.quantile(dist, q))
    return DistortionReport(
        ks=ks_arr, max_distortion=np.array(maxes), mean_distortion=np.array(means),
        quantiles={name: np.array(v) for name, v in qs.items()},
        jl_eps=np.atleast_1d(jl_eps(n, ks_arr)) if ks_arr.size else np.empty(0),
        eps=None if eps is None else float(eps),
        jl_min_dim=None if eps is None else int(johnson_lindenstrauss_min_dim(n, eps=eps)),
        n_samples=n, n_features=d, n_pairs=int(i.size))


def projection_r2(x, y, ks: Sequence[int], *, random_state: int = 0, test_fraction: float = 0.25,
                  alpha: float = 1.0) -> RidgeReport:
    """Held-out R^2 of ``Ridge(alpha)`` from ``k``-dimensional projections of ``x [N, D]`` to ``y``.

    ``y`` is ``[N]`` or ``[N, M]`` (reward, value, ... per state; R^2 averaged
    over outputs). One seeded train/test split (``test_fraction`` held out) is
    shared by every ``k`` and by the unprojected baseline ``full_r2``, so the
    gap ``full_r2 - r2[k]`` is what the projection lost.
    """
    from sklearn.linear_model import Ridge
    from sklearn.model_selection import train_test_split

    x = _check_x(x)
    y = np.asarray(y, dtype=np.float64)
    if y.shape[0] != x.shape[0]:
        raise ValueError(f"y has {y.shape[0]} rows, x has {x.shape[0]}")
    idx_train, idx_test = train_test_split(np.arange(x.shape[0]), test_size=test_fraction,
                                           random_state=random_state)

    def held_out_r2(features: np.ndarray) -> float:
        model = Ridge(alpha=alpha).fit(features[idx_train], y[idx_train])
        return float(model.score(features[idx_test], y[idx_test]))

    ks_arr = np.asarray(list(ks), dtype=np.int64)
    r2 = np.array([held_out_r2(_project(x, k, random_state)) for k in ks_arr])
    return RidgeReport(ks=ks_arr, r2=r2, full_r2=held_out_r2(x), n_train=int(idx_train.size),
                       n_test=int(idx_test.size), alpha=float(alpha))
