"""Dynamic mode decomposition: the oscillations and decays that a set of trajectories shows.

Trajectories ``x [W, T, D]`` (``W`` windows of ``T`` steps, ``D`` dimensions, one step every ``dt``
seconds) are fitted with one linear map ``h' = A h`` between consecutive snapshots. Exact DMD
(Tu et al., 2014) finds ``A`` in the span of the leading ``r`` singular vectors of the snapshots and
returns its eigenvalues ``lambda`` (per step) with their modes. Per eigenvalue:

* period ``2 pi / |arg lambda|`` (steps, or seconds with ``dt``; inf for real eigenvalues);
* decay rate ``ln|lambda| / dt`` (per second, or per step; negative: the mode dies out, positive:
  it grows), its e-folding time ``-1 / rate``, frequency ``|arg lambda| / (2 pi dt)``.

The choices that make it work on data rather than on a matrix:

* **Affine, scaled snapshots.** Each dimension is centred and divided by its standard deviation,
  and a constant 1 is appended to every snapshot, so that a system moving about a fixed point away
  from the origin (``x' = A x + c``) is fitted exactly; the constant gives one eigenvalue 1 and
  none of this changes the other eigenvalues.
* **Time-delay (Hankel) embedding.** ``delays`` consecutive snapshots are stacked into one
  (``h_t = [x_t, x_{t-1}, ...]``), so a system observed through few dimensions, or nonlinearly,
  still shows its modes (Arbabi & Mezic, 2017). The eigenvalues of a linear system are unchanged.
* **Rank by energy.** ``r`` is the fewest singular values that hold ``energy`` of the snapshots'
  squared norm (at most ``max_rank``).
* **Total least squares** (Hemati et al., 2017), when the rank leaves at least half the embedded
  dimensions as a noise floor: ``X`` and ``Y`` are first projected onto the leading ``r`` right
  singular vectors of ``[X; Y]``, so noise in the snapshots no longer biases the eigenvalues towards
  zero (plain least squares overstates damping). Without a floor (noise everywhere, ``r`` near the
  embedded size) the projection would over-correct, and plain least squares is used.

Each mode's *energy* is its share of the snapshots: ``||phi_i||^2 sum_t |a_i(t)|^2`` with ``a(t)``
the snapshot's coordinates in the mode basis, over the observation part of the modes (not the
constant), normalised to sum to 1. The *dominant oscillation* is the complex pair with the most
energy among those that oscillate (amplitude changing by less than ``e^2`` per period: a pair that
dies out within a fraction of its period is noise, not a rhythm): the motion a person sees in the
trajectories, not the fastest-growing direction.

Pure: numpy in, numpy out; no files, clocks or models.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["DMDResult", "dmd", "hankel"]


@dataclass(frozen=True)
class DMDResult:
    """Eigenvalues and modes of the linear map that fits the trajectories, sorted by decreasing energy.

    Arrays ``[r]`` unless said; ``modes [D, r]`` are the mode shapes on the current snapshot (the first
    delay block) in the trajectories' own units (complex). Times are in ``unit`` (``"s"`` with ``dt``,
    else ``"steps"``); rates per ``unit``.
    """

    eigenvalues: np.ndarray     # [r] complex, per step
    modes: np.ndarray           # [D, r] complex
    scale: np.ndarray           # [D] each dimension's standard deviation over the snapshots
    energy: np.ndarray          # [r] fraction of the snapshots' energy, sums to 1
    period: np.ndarray          # [r] 2 pi / |arg lambda| (unit), inf for real eigenvalues
    frequency: np.ndarray       # [r] |arg lambda| / (2 pi) (cycles per unit)
    decay_rate: np.ndarray      # [r] ln|lambda| per unit (negative: decays)
    rank: int                   # r, chosen by energy
    delays: int                 # snapshots per embedded snapshot
    singular_values: np.ndarray  # [min(n, m)] of the embedded snapshots, for the rank plot
    residual: float             # ||Y - A X|| / ||Y||: how well one linear map fits the pairs
    dt: float | None
    unit: str
    tls: bool                   # whether the total-least-squares projection was used
    dominant: int | None        # index of the dominant oscillation (positive imaginary part), None if none

    @property
    def dominant_period(self) -> float:
        return float(self.period[self.dominant]) if self.dominant is not None else float("nan")

    @property
    def dominant_decay_rate(self) -> float:
        return float(self.decay_rate[self.dominant]) if self.dominant is not None else float("nan")

    def dominant_dims(self, k: int = 3) -> np.ndarray:
        """Indices of the ``k`` dimensions the dominant oscillation moves most, relative to each dimension's
        spread (``|mode| / scale``), strongest first; empty without an oscillation."""
        if self.dominant is None:
            return np.zeros(0, dtype=int)
        weight = np.abs(self.modes[:, self.dominant]) / self.scale
        return np.argsort(-weight, kind="stable")[:k]

    @property
    def dominant_energy(self) -> float:
        """The pair's share of the energy (both members)."""
        if self.dominant is None:
            return float("nan")
        lam = self.eigenvalues[self.dominant]
        partner = np.argmin(np.abs(self.eigenvalues - np.conj(lam)) + (np.arange(self.rank) == self.dominant))
        return float(self.energy[self.dominant] + (self.energy[partner] if partner != self.dominant else 0.0))

    def summary(self) -> dict:
        """Every number as plain floats and lists (JSON-ready; NaN and inf stay, the writer cleans them)."""
        return {
            "rank": self.rank, "delays": self.delays, "tls": self.tls, "residual": self.residual,
            "unit": self.unit, "dt": self.dt,
            "eigenvalues": [[float(z.real), float(z.imag)] for z in self.eigenvalues],
            "energy": self.energy.tolist(), "period": self.period.tolist(), "frequency": self.frequency.tolist(),
            "decay_rate": self.decay_rate.tolist(), "singular_values": self.singular_values.tolist(),
            "dominant_period": self.dominant_period, "dominant_decay_rate": self.dominant_decay_rate,
            "dominant_energy": self.dominant_energy,
        }


def hankel(x: np.ndarray, delays: int) -> np.ndarray:
    """Time-delay embedding: ``x [W, T, D] -> [W, T - delays + 1, delays * D]``, newest snapshot first
    (row ``t`` holds ``x[t + delays - 1], ..., x[t]``)."""
    w, t, d = x.shape
    if not 1 <= delays <= t:
        raise ValueError(f"delays must be between 1 and the trajectory length {t}, got {delays}")
    steps = t - delays + 1
    return np.concatenate([x[:, delays - 1 - k:delays - 1 - k + steps] for k in range(delays)], axis=-1)


def _rank(s: np.ndarray, energy: float, max_rank: int) -> int:
    power = s ** 2
    total = power.sum()
    if total <= 0:
        return 0
    r = int(np.searchsorted(np.cumsum(power) / total, energy) + 1)
    return max(1, min(r, max_rank, int((s > s[0] * 1e-12).sum())))


def dmd(x, dt: float | None = None, *, delays: int = 1, energy: float = 0.999, max_rank: int = 40,
        tls: bool | None = None, imag_tol: float = 1e-6) -> DMDResult:
    """Exact DMD of trajectories ``x [W, T, D]`` (or one trajectory ``[T, D]``) sampled every ``dt`` seconds.

    ``delays``: snapshots stacked per embedded snapshot (1: none). ``energy``: share of the squared
    singular values the rank keeps (at most ``max_rank``). ``tls``: total-least-squares projection
    (see the module docstring; None: when ``r`` is at most half the embedded size). A pair counts as complex when ``|Im lambda| > imag_tol |lambda|``.
    Raises ValueError for fewer than two embedded snapshots per window or non-finite values.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3:
        raise ValueError(f"trajectories must be [W, T, D] or [T, D], got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("the trajectories hold NaN or infinity; DMD needs finite values")
    w, t, d = x.shape
    if t - delays + 1 < 2:
        raise ValueError(f"{t} steps with {delays} delays leave fewer than two snapshots per window")
    mean = x.reshape(-1, d).mean(0)
    std = x.reshape(-1, d).std(0)
    std = np.where(std > 0, std, 1.0)
    h = hankel((x - mean) / std, delays)                                   # [W, T', n]
    h = np.concatenate([h, np.ones(h.shape[:2] + (1,))], axis=-1)          # affine: the constant 1
    X = h[:, :-1].reshape(-1, h.shape[-1]).T                               # [n, m] snapshots
    Y = h[:, 1:].reshape(-1, h.shape[-1]).T                                # [n, m] their successors
    u, s, vh = np.linalg.svd(X, full_matrices=False)
    r = _rank(s, energy, max_rank)
    tls = 2 * r <= X.shape[0] if tls is None else bool(tls)
    if tls:
        _, _, vz = np.linalg.svd(np.concatenate([X, Y]), full_matrices=False)
        v = vz[:r]                                                         # [r, m]: the shared subspace
        Xp, Yp = (X @ v.T) @ v, (Y @ v.T) @ v
        u, s_p, vh = np.linalg.svd(Xp, full_matrices=False)
    else:
        Xp, Yp, s_p = X, Y, s
    ur, sr, vr = u[:, :r], s_p[:r], vh[:r].T
    a_tilde = ur.T @ Yp @ vr / sr                                          # [r, r]
    lam, wv = np.linalg.eig(a_tilde)
    phi = Yp @ vr / sr @ wv                                                # [n, r] exact modes
    small = np.abs(lam) < 1e-12                                            # exact modes vanish there
    phi[:, small] = (ur @ wv)[:, small]
    coords = np.linalg.pinv(phi) @ X                                       # [r, m] mode coordinates
    norms = np.linalg.norm(phi[:-1], axis=0) ** 2                          # observation part only
    e = norms * (np.abs(coords) ** 2).sum(1)
    e = e / e.sum() if e.sum() > 0 else np.full(r, 1.0 / max(r, 1))
    order = np.argsort(-e, kind="stable")
    lam, phi, e = lam[order], phi[:, order], e[order]
    scale = 1.0 if dt is None else float(dt)
    mod = np.abs(lam)
    angle = np.abs(np.angle(lam))
    complex_ = np.abs(lam.imag) > imag_tol * np.maximum(mod, np.finfo(float).tiny)
    with np.errstate(divide="ignore"):
        period = np.where(complex_, 2 * np.pi / np.where(complex_, angle, 1.0), np.inf) * scale
        rate = np.log(np.where(mod > 0, mod, np.finfo(float).tiny)) / scale
    freq = np.where(complex_, angle, 0.0) / (2 * np.pi * scale)
    a_fit = ur @ a_tilde @ ur.T
    residual = float(np.linalg.norm(Y - a_fit @ X) / max(np.linalg.norm(Y), np.finfo(float).tiny))
    oscillates = np.abs(np.log(np.where(mod > 0, mod, np.finfo(float).tiny))) * 2 * np.pi < 2 * angle
    pos = np.flatnonzero(complex_ & (lam.imag > 0) & oscillates)
    modes = phi[:d] * std[:, None]                                         # first delay block, own units
    return DMDResult(eigenvalues=lam, modes=modes, scale=std, energy=e, period=period, frequency=freq, decay_rate=rate,
                     rank=r, delays=int(delays), singular_values=s, residual=residual,
                     dt=None if dt is None else float(dt), unit="steps" if dt is None else "s", tls=tls,
                     dominant=int(pos[0]) if pos.size else None)
