"""Spectral analysis of a learned transition: Jacobians, eigenvalues, timescales, collapse.

A learned latent transition ``z' = f(z)`` (the deterministic part of a prior
step, with the action held fixed by the caller) is linearised at visited
states ``z [N, D]``. The Jacobian ``J_n = df/dz (z_n)`` is a ``[D, D]`` matrix
per state; its eigenvalues ``lambda`` say how a small perturbation evolves
one step later: ``|lambda| < 1`` decays, ``|lambda| >= 1`` does not
(called *unstable* here, marginal ``|lambda| = 1`` included), and a complex
pair rotates.

Per eigenvalue (units: steps, or seconds when ``dt`` is given, seconds = steps * dt):

* timescale ``-1 / ln|lambda|``: the e-folding time of the decay;
  ``inf`` where ``|lambda| >= 1``, ``0`` where ``lambda == 0``;
* period ``2 pi / |arg lambda|``: ``inf`` for real positive eigenvalues,
  ``2`` steps for real negative ones (a sign flip every step).

Effective rank is the entropy effective rank of Roy & Vetterli (2007):
``exp(H(p))`` with ``p = s / sum(s)`` over singular values ``s``. It is
``D`` for an orthogonal matrix, ``1`` for a rank-one matrix and ``0`` for a
zero matrix. For visited states it is taken of the centred states
``z - mean(z)`` (so a latent that moves within a few directions scores few).

Pure functions: no file I/O, no clocks, no logging; numpy out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["SpectrumSummary", "analyze_matrix", "analyze_transition", "effective_rank",
           "eigen_timescales", "jacobians", "model_spectrum"]

_QUANTILES = {"min": 0.0, "q05": 0.05, "q25": 0.25, "median": 0.5, "q75": 0.75, "q95": 0.95, "max": 1.0}


@dataclass(frozen=True)
class SpectrumSummary:
    """What the eigenvalues of the Jacobians say, over ``N`` states of dimension ``D``.

    Arrays ``[N, D]`` hold eigenvalues sorted by decreasing modulus per state.
    ``unit`` is ``"steps"`` or ``"seconds"`` and applies to every timescale and
    period. ``dominant_*`` ``[N]`` describe the largest-modulus complex pair
    (the member with positive imaginary part), NaN where a state has none.
    ``collapsed`` is True when ``collapse_reasons`` is non-empty.
    """

    eigenvalues: np.ndarray          # [N, D] complex128
    modulus: np.ndarray              # [N, D] |lambda|
    timescale: np.ndarray            # [N, D] -1/ln|lambda| (unit), inf where unstable
    period: np.ndarray               # [N, D] 2 pi/|arg lambda| (unit), inf where real positive
    unstable: np.ndarray             # [N, D] bool, |lambda| >= 1
    spectral_radius: np.ndarray      # [N] max |lambda|
    radius_distribution: dict        # name -> float: min, q05, q25, median, q75, q95, max, mean
    dominant_pair: np.ndarray        # [N] complex128
    dominant_period: np.ndarray      # [N] (unit)
    dominant_timescale: np.ndarray   # [N] (unit)
    jacobian_effective_rank: np.ndarray  # [N] entropy effective rank of J_n
    state_effective_rank: float | None   # of the centred visited states; None for a bare matrix
    dim: int
    dt: float | None
    unit: str
    collapsed: bool
    collapse_reasons: tuple          # of str; empty when healthy
    method: str                      # how the Jacobians were obtained: exact, batched, vmap, loop

    def summary(self) -> dict:
        """Scalars only (floats, ints, str, bool): a JSON-ready digest."""
        finite_pairs = np.isfinite(self.dominant_period)
        return {
            "dim": self.dim, "n_states": int(self.spectral_radius.shape[0]), "unit": self.unit,
            "spectral_radius": {k: float(v) for k, v in self.radius_distribution.items()},
            "fraction_unstable": float(self.unstable.mean()),
            "median_dominant_period": float(np.median(self.dominant_period[finite_pairs]))
            if finite_pairs.any() else float("nan"),
            "median_jacobian_effective_rank": float(np.median(self.jacobian_effective_rank)),
            "state_effective_rank": self.state_effective_rank,
            "collapsed": self.collapsed, "collapse_reason": "; ".join(self.collapse_reasons) or None,
            "method": self.method,
        }


def effective_rank(x) -> float | np.ndarray:
    """Entropy effective rank ``exp(-sum p log p)``, ``p = s / sum(s)``, of ``x [..., M, K]``.

    Returns a float for one matrix, an array ``[...]`` for a batch. A zero
    matrix has effective rank 0.
    """
    s = np.linalg.svd(np.asarray(x, dtype=np.float64), compute_uv=False)
    total = s.sum(axis=-1, keepdims=True)
    p = np.divide(s, total, out=np.zeros_like(s), where=total > 0)
    plogp = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    out = np.where(total[..., 0] > 0, np.exp(-plogp.sum(axis=-1)), 0.0)
    return float(out) if out.ndim == 0 else out


def eigen_timescales(eigenvalues, dt: float | None = None, imag_tol: float = 1e-9):
    """Timescale and period of each eigenvalue; returns ``(timescale, period)``, same shape.

    ``timescale = -1/ln|lambda|`` (inf where ``|lambda| >= 1``), ``period =
    2 pi/|arg lambda|`` (inf where ``|Im lambda| <= imag_tol * |lambda|``
    and ``Re lambda > 0``), in steps, or in seconds when ``dt`` (seconds per
    step) is given.
    """
    lam = np.asarray(eigenvalues, dtype=np.complex128)
    mod = np.abs(lam)
    with np.errstate(divide="ignore"):
        timescale = np.where(mod >= 1.0, np.inf, -1.0 / np.log(np.where(mod >= 1.0, 0.5, mod)))
    real = np.abs(lam.imag) <= imag_tol * np.maximum(mod, np.finfo(float).tiny)
    angle = np.where(real, np.where(lam.real < 0, np.pi, 0.0), np.abs(np.angle(lam)))
    with np.errstate(divide="ignore"):
        period = np.where(angle > 0, 2.0 * np.pi / np.where(angle > 0, angle, 1.0), np.inf)
    scale = 1.0 if dt is None else float(dt)
    return timescale * scale, period * scale


def jacobians(f: Callable[[torch.Tensor], torch.Tensor], z: torch.Tensor, *,
              method: str = "auto", chunk_size: int | None = None) -> tuple[torch.Tensor, str]:
    """Jacobians ``[N, D_out, D]`` of ``f`` at each row of ``z [N, D]``; returns ``(J, method_used)``.

    ``f`` maps ``[N, D] -> [N, D_out]`` and must treat rows independently
    (eval mode: no batch statistics) and be deterministic. Methods:

    * ``"batched"``: differentiate ``f(z).sum(0)`` (``D_out`` backward passes over
      the whole batch; row ``n`` of the result is ``J_n`` because rows are
      independent). Fastest on CPU (about 0.2 s for N=1000, D=64, an MLP).
    * ``"vmap"``: ``torch.func.vmap(torch.func.jacrev(...))`` over single
      states; needs a vmap-compatible ``f``. ``chunk_size`` bounds its memory.
    * ``"loop"``: one ``torch.autograd.functional.jacobian`` per state; slow, always works.
    * ``"auto"``: ``batched``, checked against ``loop`` at the first and last
      state; on a mismatch (rows coupled) or an error it tries ``vmap``, then ``loop``.
    """
    z = z.detach()
    if z.ndim != 2:
        raise ValueError(f"z must be [N, D], got shape {tuple(z.shape)}")

    def one(x):  # [D] -> [D_out]
        return f(x.unsqueeze(0)).squeeze(0)

    def batched():
        with torch.enable_grad():
            J = torch.autograd.functional.jacobian(lambda x: f(x).sum(0), z, vectorize=z.is_cuda)
        return J.permute(1, 0, 2).contiguous()

    def vmapped():
        with torch.enable_grad():
            return torch.func.vmap(torch.func.jacrev(one), chunk_size=chunk_size)(z)

    def loop(rows=None):
        rows = range(z.shape[0]) if rows is None else rows
        with torch.enable_grad():
            return torch.stack([torch.autograd.functional.jacobian(one, z[i]) for i in rows])

    if method != "auto":
        table = {"batched": batched, "vmap": vmapped, "loop": loop}
        if method not in table:
            raise ValueError(f"method must be auto, batched, vmap or loop, got {method!r}")
        return table[method]().detach(), method
    try:
        J = batched().detach()
        rows = sorted({0, z.shape[0] - 1})
        ref = loop(rows).detach()
        agree = torch.allclose(J[rows], ref, rtol=1e-3, atol=1e-4 * (1.0 + float(ref.abs().max())))
    except Exception:  # noqa: BLE001 - any failure means: try the next method
        agree = False
    if agree:
        return J, "batched"
    try:
        return vmapped().detach(), "vmap"
    except Exception:  # noqa: BLE001
        return loop().detach(), "loop"


def _summarise(J: np.ndarray, states: np.ndarray | None, dt, eig_tol, rank_fraction, imag_tol,
               method) -> SpectrumSummary:
    n, d_out, d = J.shape
    if d_out != d:
        raise ValueError(f"Jacobians must be square for eigenvalues, got [{d_out}, {d}]")
    lam = np.linalg.eigvals(J)                                   # [N, D]
    order = np.argsort(-np.abs(lam), axis=1, kind="stable")
    lam = np.take_along_axis(lam, order, axis=1)
    mod = np.abs(lam)
    timescale, period = eigen_timescales(lam, dt, imag_tol)
    radius = mod[:, 0] if d else np.zeros(n)
    dist = {k: float(np.quantile(radius, q)) for k, q in _QUANTILES.items()}
    dist["mean"] = float(radius.mean())

    complex_pos = lam.imag > imag_tol * np.maximum(mod, np.finfo(float).tiny)
    has = complex_pos.any(axis=1)
    first = np.argmax(complex_pos, axis=1)                       # sorted by |lambda|: first is largest
    rows = np.arange(n)
    nan = np.full(n, np.nan)
    dominant = np.where(has, lam[rows, first], nan + 1j * nan)
    dom_period = np.where(has, period[rows, first], nan)
    dom_timescale = np.where(has, timescale[rows, first], nan)

    jac_rank = np.asarray(effective_rank(J)).reshape(n)
    state_rank = None
    if states is not None and states.shape[0] > 1:
        state_rank = float(effective_rank(states - states.mean(axis=0, keepdims=True)))

    reasons = []
    if dist["median"] <= eig_tol:
        reasons.append(f"eigenvalues near zero: median spectral radius {dist['median']:.3g} "
                       f"<= eig_tol {eig_tol:g}")
    med_rank = float(np.median(jac_rank))
    if d and med_rank < rank_fraction * d:
        reasons.append(f"low-rank transition: median Jacobian effective rank {med_rank:.3g} "
                       f"< rank_fraction {rank_fraction:g} * D={d}")
    if state_rank is not None and d and state_rank < rank_fraction * d:
        reasons.append(f"low-rank latent: visited states' effective rank {state_rank:.3g} "
                       f"< rank_fraction {rank_fraction:g} * D={d}")
    return SpectrumSummary(
        eigenvalues=lam, modulus=mod, timescale=timescale, period=period, unstable=mod >= 1.0,
        spectral_radius=radius, radius_distribution=dist, dominant_pair=dominant,
        dominant_period=dom_period, dominant_timescale=dom_timescale,
        jacobian_effective_rank=jac_rank, state_effective_rank=state_rank, dim=d,
        dt=None if dt is None else float(dt), unit="steps" if dt is None else "seconds",
        collapsed=bool(reasons), collapse_reasons=tuple(reasons), method=method)


def analyze_transition(f: Callable[[torch.Tensor], torch.Tensor], z, *, dt: float | None = None,
                       eig_tol: float = 1e-3, rank_fraction: float = 0.1, imag_tol: float = 1e-9,
                       method: str = "auto", chunk_size: int | None = None) -> SpectrumSummary:
    """Linearise ``f`` at the visited states ``z [N, D]`` and summarise the eigenvalues.

    ``dt`` (seconds per step) turns steps into seconds. Collapse is flagged when
    the median spectral radius over states is ``<= eig_tol`` (all eigenvalues
    near zero), when the median Jacobian effective rank is ``< rank_fraction * D``,
    or when the visited states' effective rank is ``< rank_fraction * D``;
    each reason is stated with its numbers. See :func:`jacobians` for ``method``.
    """
    z_t = torch.as_tensor(z)
    if not z_t.is_floating_point():
        z_t = z_t.float()
    J, used = jacobians(f, z_t, method=method, chunk_size=chunk_size)
    states = z_t.detach().cpu().double().numpy()
    return _summarise(J.cpu().double().numpy(), states, dt, eig_tol, rank_fraction, imag_tol, used)


def analyze_matrix(A, *, dt: float | None = None, eig_tol: float = 1e-3, rank_fraction: float = 0.1,
                   imag_tol: float = 1e-9) -> SpectrumSummary:
    """Exact analysis of a known transition matrix ``A [D, D]`` (``z' = A z``), as one state.

    Same fields and thresholds as :func:`analyze_transition` with ``N = 1``;
    no visited states, so ``state_effective_rank`` is None.
    """
    A = np.asarray(A.detach().cpu() if isinstance(A, torch.Tensor) else A, dtype=np.float64)
    if A.ndim != 2:
        raise ValueError(f"A must be [D, D], got shape {A.shape}")
    return _summarise(A[None], None, dt, eig_tol, rank_fraction, imag_tol, "exact")


def model_spectrum(model, state, action, *, dt: float | None = None, **settings) -> SpectrumSummary:
    """:func:`analyze_transition` of a world model's learned transition at the visited ``state`` ``[N]``.

    The model must declare the ``transition`` capability (see :mod:`reverie.models.base`): it gives
    the deterministic latent of each state and the deterministic part of the prior step at
    ``action`` (``[N, A]``, or one row held fixed for every state, e.g. zero torque). ``settings``
    go to :func:`analyze_transition` (``eig_tol``, ``rank_fraction``, ...).
    """
    from reverie.models.base import TRANSITION, require

    require(model, [TRANSITION], "spectral analysis of the learned transition")
    z, f = model.transition(state, action)
    if action.dim() > 1 and action.shape[0] > 1:
        settings.setdefault("method", "batched")   # f is bound to one action per state: no row subsets
    return analyze_transition(f, z.detach(), dt=dt, **settings)
