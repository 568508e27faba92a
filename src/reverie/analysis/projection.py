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

*What planning keeps* (:func:`projected_model_r2`, :func:`fit_projected_model`):
from visited states' features ``x``, the actions ``a`` taken there, the next
features ``x'`` and the rewards ``r`` received on arriving, a model is fitted in
the projected space by scikit-learn's ``Ridge``: linear dynamics ``[P x, a] -> P x'``,
and reward ``[P x, a] -> r`` and value ``P x -> v`` either linear or quadratic
(``Ridge`` on ``PolynomialFeatures(degree=2)``, the LQR-like model). Its held-out R^2 per ``k`` says how
much of the dynamics and reward survives the projection; :class:`ProjectedModel`
turns the fit into a :class:`~reverie.models.base.Dynamics` a planner can act
through (states ``{"z": [N, k], "reward": [N]}``), started each decision from
``P x`` of the real model's filtered features.

Pure functions: no file I/O, no clocks, no logging; numpy out (torch for :class:`ProjectedModel`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["DistortionReport", "PlanningKeepReport", "ProjectedModel", "RidgeReport", "fit_projected_model", "jl_eps",
           "projected_model_r2", "projection_distortion", "projection_r2"]


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
    maxes: list[float] = []
    means: list[float] = []
    qs: dict[str, list[float]] = {f"q{round(100 * q):d}": [] for q in quantiles}
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


# -- what planning keeps: a linear model fitted in the projected space ------------------------------
@dataclass(frozen=True)
class PlanningKeepReport:
    """Held-out R^2 of the ridge model ``[P x, a] -> (P x', r)`` (and ``P x -> value``) per ``k``.

    ``next_r2`` is the variance-weighted R^2 over the ``k`` outputs ``P x'`` (each ``k``
    predicts its own projection of the next state); ``reward_r2`` that of the reward
    (linear or quadratic in ``[P x, a]``, as ``heads`` says). The ``full_*`` entries fit
    the unprojected features (``x'`` from ``[x, a]``).
    """

    ks: np.ndarray                 # [K]
    next_r2: np.ndarray            # [K]
    reward_r2: np.ndarray          # [K]
    value_r2: np.ndarray | None    # [K], None without values
    full_next_r2: float
    full_reward_r2: float
    full_value_r2: float | None
    jl_min_dim: dict               # eps -> sklearn's JL dimension for n_samples
    n_samples: int
    n_features: int
    n_train: int
    n_test: int
    alpha: float
    heads: str                     # "linear" or "quadratic" reward and value heads


class ProjectedModel:
    """A model in a projected latent space, as a :class:`~reverie.models.base.Dynamics`.

    State ``{"z": [N, k], "reward": [N]}`` (the reward received on arriving there). ``step``
    is linear, ``z' = [z, a] @ W + b``; the reward of the step is ``q(u) = u^T Q u + w . u + c``
    of ``u = [z, a]`` and the value (declared when a value head was fitted) ``q(z)``, with
    ``Q = 0`` for linear heads. Linear dynamics with linear reward and value make every plan
    the same whatever the state (the action terms do not depend on ``z``); quadratic heads
    are the LQR-like model that can steer. :meth:`start` projects real features ``[N, F]``
    with ``projection [k, F]`` (None: the identity, i.e. the full latent).
    """

    def __init__(self, act_spec, projection, weight, bias, reward_head, value_head=None, bilinear: bool = False):
        import torch

        from reverie.models.base import REWARD, VALUE

        self.act_spec = act_spec
        self.capabilities = frozenset({REWARD} | ({VALUE} if value_head is not None else set()))

        def t(a):
            return None if a is None else torch.as_tensor(np.asarray(a, np.float32))

        self.projection = t(projection)                               # [k, F] or None
        self.weight, self.bias = t(weight), t(bias)                   # [k + A, k], [k]
        self.reward_head = tuple(t(a) for a in reward_head)           # (Q or None, w, c) over [z, a]
        self.value_head = None if value_head is None else tuple(t(a) for a in value_head)   # over z
        self.dim = int(self.weight.shape[1])
        self.bilinear = bilinear                                      # dynamics input [z, a, z (x) a]

    @staticmethod
    def _quadratic(head, u):
        Q, w, c = head
        out = u @ w + c
        return out if Q is None else out + ((u @ Q) * u).sum(-1)

    def project(self, features):
        """Real features ``[..., F]`` -> projected ``[..., k]`` (float32)."""
        features = features.float()
        return features if self.projection is None else features @ self.projection.T

    def start(self, features):
        """The planning state at real features ``[N, F]``: ``{"z": P x, "reward": 0}``."""
        z = self.project(features)
        return {"z": z, "reward": z.new_zeros(z.shape[:-1])}

    def step(self, state, action):
        import torch

        u = torch.cat([state["z"], action.to(state["z"].dtype)], -1)
        inp = torch.cat([u, _outer(state["z"], u[..., self.dim:])], -1) if self.bilinear else u
        return {"z": inp @ self.weight + self.bias, "reward": self._quadratic(self.reward_head, u)}

    def reward(self, state):
        return state["reward"]

    def value(self, state):
        from reverie.models.base import VALUE, require

        require(self, [VALUE], "value()")
        return self._quadratic(self.value_head, state["z"])


def _transition_arrays(x, action, next_x, reward, value):
    x, next_x = _check_x(x), np.asarray(next_x, dtype=np.float64)
    action = np.asarray(action, dtype=np.float64)
    action = action[:, None] if action.ndim == 1 else action
    reward = np.asarray(reward, dtype=np.float64).reshape(-1)
    n = x.shape[0]
    if next_x.shape != x.shape:
        raise ValueError(f"next_x has shape {next_x.shape}, x has {x.shape}; they must match")
    if action.ndim != 2 or action.shape[0] != n or reward.shape[0] != n:
        raise ValueError(f"action [N, A] and reward [N] need N = {n} rows, got {action.shape} and {reward.shape}")
    if value is not None:
        value = np.asarray(value, dtype=np.float64).reshape(-1)
        if value.shape[0] != n:
            raise ValueError(f"value needs {n} rows, got {value.shape[0]}")
    return x, action, next_x, reward, value


def _projection_matrix(n_features: int, k: int | None, random_state) -> np.ndarray | None:
    """sklearn's Gaussian projection ``[k, F]`` (the same draw :func:`_project` makes), None for no projection."""
    if k is None:
        return None
    if int(k) < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    from sklearn.exceptions import DataDimensionalityWarning
    from sklearn.random_projection import GaussianRandomProjection

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataDimensionalityWarning)
        rp = GaussianRandomProjection(n_components=int(k), random_state=random_state)
        return rp.fit(np.zeros((2, n_features))).components_


def _head(u: np.ndarray, y: np.ndarray, heads: str, alpha: float):
    """Fit ``y`` on ``u`` by Ridge: linear, or on sklearn's degree-2 PolynomialFeatures. Returns
    ``(predict, (Q or None, w, c))`` with ``y ~ u^T Q u + w . u + c``."""
    from sklearn.linear_model import Ridge

    if heads == "linear":
        ridge = Ridge(alpha=alpha).fit(u, y)
        return ridge.predict, (None, ridge.coef_, float(ridge.intercept_))
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import PolynomialFeatures

    pipe = make_pipeline(PolynomialFeatures(degree=2, include_bias=False), Ridge(alpha=alpha)).fit(u, y)
    poly, ridge = pipe[0], pipe[1]
    d = u.shape[1]
    Q, w = np.zeros((d, d)), np.zeros(d)
    for powers, coef in zip(poly.powers_, ridge.coef_):
        (idx,) = np.nonzero(powers)
        if powers.sum() == 1:
            w[idx[0]] += coef
        elif idx.size == 1:                       # z_i^2
            Q[idx[0], idx[0]] += coef
        else:                                     # z_i z_j, split over the symmetric pair
            Q[idx[0], idx[1]] += coef / 2
            Q[idx[1], idx[0]] += coef / 2
    return pipe.predict, (Q, w, float(ridge.intercept_))


def _outer(z, a):
    """``z (x) a`` flattened: ``[..., k], [..., A] -> [..., k * A]`` (numpy or torch)."""
    return (z[..., :, None] * a[..., None, :]).reshape(*z.shape[:-1], -1)


def _dyn_input(z, action, dynamics):
    u = np.concatenate([z, action], 1)
    return np.concatenate([u, _outer(z, action)], 1) if dynamics == "bilinear" else u


def _fit_all(z, action, next_z, reward, value, heads, alpha, dynamics="linear"):
    from sklearn.linear_model import Ridge

    if heads not in ("linear", "quadratic"):
        raise ValueError(f"heads must be 'linear' or 'quadratic', got {heads!r}")
    if dynamics not in ("linear", "bilinear"):
        raise ValueError(f"dynamics must be 'linear' or 'bilinear', got {dynamics!r}")
    u = np.concatenate([z, action], 1)
    dyn = Ridge(alpha=alpha).fit(_dyn_input(z, action, dynamics), next_z)
    reward_fit = _head(u, reward, heads, alpha)
    value_fit = None if value is None else _head(z, value, heads, alpha)
    return dyn, reward_fit, value_fit


def fit_projected_model(x, action, next_x, reward, k: int | None, act_spec, *, value=None, heads: str = "linear",
                        dynamics: str = "linear", random_state: int = 0, alpha: float = 1.0) -> ProjectedModel:
    """Fit ``Ridge(alpha)`` from ``[P x, a]`` to ``P x'`` and (linear or ``heads="quadratic"``) to ``r``,
    and from ``P x`` to the value if given, on all rows.

    ``x, next_x [N, F]`` features of visited states and of the states reached; ``action [N, A]``
    (model space, e.g. one-hot for discrete actions); ``reward [N]`` received on arriving at
    ``next_x``; ``value [N]`` optional. ``k`` None fits the unprojected features. ``dynamics="bilinear"``
    regresses ``P x'`` on ``[P x, a, P x (x) a]``, so the action's effect may depend on the state.
    """
    x, action, next_x, reward, value = _transition_arrays(x, action, next_x, reward, value)
    P = _projection_matrix(x.shape[1], k, random_state)
    z, next_z = (x, next_x) if P is None else (x @ P.T, next_x @ P.T)
    dyn, (_, reward_head), value_fit = _fit_all(z, action, next_z, reward, value, heads, alpha, dynamics)
    return ProjectedModel(act_spec, P, dyn.coef_.T, dyn.intercept_, reward_head,
                          None if value_fit is None else value_fit[1], bilinear=dynamics == "bilinear")


def projected_model_r2(x, action, next_x, reward, ks: Sequence[int], *, value=None, heads: str = "linear",
                       dynamics: str = "linear", random_state: int = 0, test_fraction: float = 0.25, alpha: float = 1.0,
                       eps: Sequence[float] = (0.1, 0.2)) -> PlanningKeepReport:
    """Held-out R^2 of the model :func:`fit_projected_model` fits, at each ``k`` and unprojected.

    One seeded train/test split (``test_fraction`` held out) is shared by every ``k``; the
    projection of each ``k`` is the one :func:`projection_distortion` measures (same seed).
    """
    from sklearn.metrics import r2_score
    from sklearn.model_selection import train_test_split
    from sklearn.random_projection import johnson_lindenstrauss_min_dim

    x, action, next_x, reward, value = _transition_arrays(x, action, next_x, reward, value)
    n, f = x.shape
    tr, te = train_test_split(np.arange(n), test_size=test_fraction, random_state=random_state)

    def scores(P):
        z, next_z = (x, next_x) if P is None else (x @ P.T, next_x @ P.T)
        dyn, (reward_predict, _), value_fit = _fit_all(z[tr], action[tr], next_z[tr], reward[tr],
                                                       None if value is None else value[tr], heads, alpha, dynamics)
        u = np.concatenate([z[te], action[te]], 1)
        next_r2 = float(r2_score(next_z[te], dyn.predict(_dyn_input(z[te], action[te], dynamics)),
                                 multioutput="variance_weighted"))
        reward_r2 = float(r2_score(reward[te], reward_predict(u)))
        value_r2 = None if value_fit is None else float(r2_score(value[te], value_fit[0](z[te])))
        return next_r2, reward_r2, value_r2

    ks_arr = np.asarray(list(ks), dtype=np.int64)
    per_k = [scores(_projection_matrix(f, int(k), random_state)) for k in ks_arr]
    full = scores(None)
    return PlanningKeepReport(
        ks=ks_arr, next_r2=np.array([s[0] for s in per_k]), reward_r2=np.array([s[1] for s in per_k]),
        value_r2=None if value is None else np.array([s[2] for s in per_k]),
        full_next_r2=full[0], full_reward_r2=full[1], full_value_r2=full[2],
        jl_min_dim={float(e): int(johnson_lindenstrauss_min_dim(n, eps=e)) for e in eps},
        n_samples=n, n_features=f, n_train=int(tr.size), n_test=int(te.size), alpha=float(alpha), heads=heads)
