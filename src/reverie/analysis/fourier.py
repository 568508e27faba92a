"""Power spectra of real and predicted trajectories, and which frequencies a model learned first.

Trajectories are arrays ``[E, T, D]``: ``E`` episodes of ``T`` steps of ``D``
dimensions, sampled every ``dt`` seconds (``dt = 1`` gives frequencies in
cycles per step). Spectra are Welch power spectral densities
(:func:`scipy.signal.welch`, Hann window, ``nperseg = min(T, 256)``, 50 %
overlap, each segment's mean removed, one-sided), computed per episode and
dimension and averaged over episodes.

Units: frequencies in Hz (cycles per second) and PSD in ``units^2 / Hz``, where
``units`` are the trajectories' own. Band power integrates the PSD over the
band (``sum(psd) * df``), so it is in ``units^2``.

Bands: the default edges split ``[0, Nyquist]`` into thirds (low, mid, high);
any increasing edges may be passed. A frequency ``f`` belongs to band ``b`` when
``edges[b] <= f < edges[b+1]``; the last band also holds its upper edge.

The *error spectrum* is the spectrum of ``pred - real``; its band power divided by
the real signal's band power is the *relative error* of the band (0: the band is
reproduced exactly; 1: as much error as signal, e.g. the band is missing).

Pure functions: no file I/O, no clocks, no logging; numpy out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

import numpy as np

__all__ = ["BandLearningOrder", "SpectrumComparison", "band_power", "compare_spectra",
           "default_band_edges", "learning_order", "power_spectrum"]


@dataclass(frozen=True)
class SpectrumComparison:
    """Spectra of real, predicted and error (``pred - real``) trajectories, and per-band error."""

    freqs: np.ndarray               # [F] Hz
    real_psd: np.ndarray            # [F, D] units^2/Hz
    pred_psd: np.ndarray            # [F, D]
    error_psd: np.ndarray           # [F, D] spectrum of pred - real
    band_edges: np.ndarray          # [B+1] Hz
    band_real: np.ndarray           # [B, D] units^2, real power per band
    band_error: np.ndarray          # [B, D] units^2, error power per band
    relative_error: np.ndarray      # [B, D] band_error / band_real (NaN where real power is 0)
    relative_error_total: np.ndarray  # [B] error power / real power summed over dimensions


@dataclass(frozen=True)
class BandLearningOrder:
    """Per-band relative error over training checkpoints, and when each band was learned.

    ``first_below[b]`` is the first checkpoint step (in the order given) at which
    band ``b``'s total relative error is ``<= threshold``, or None if never.
    ``low_before_high`` is True when no band was learned strictly before a lower
    one (a band never learned counts as learned at infinity), False otherwise,
    and None when no band was ever learned.
    """

    steps: np.ndarray               # [C] checkpoint steps
    band_edges: np.ndarray          # [B+1] Hz
    relative_error: np.ndarray      # [C, B] total relative error per checkpoint and band
    threshold: float
    first_below: tuple              # [B] of int or None
    low_before_high: bool | None


def default_band_edges(dt: float = 1.0, n_bands: int = 3) -> np.ndarray:
    """``n_bands + 1`` equal-width edges from 0 to the Nyquist frequency ``1 / (2 dt)`` Hz."""
    if n_bands < 1:
        raise ValueError(f"n_bands must be >= 1, got {n_bands}")
    return np.linspace(0.0, 0.5 / float(dt), n_bands + 1)


def _check(x, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 3:
        raise ValueError(f"{name} must be [E, T, D], got shape {x.shape}")
    if x.shape[1] < 2:
        raise ValueError(f"{name} needs at least 2 time steps, got {x.shape[1]}")
    return x


def power_spectrum(x, dt: float = 1.0, nperseg: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Welch PSD of ``x [E, T, D]`` per dimension, averaged over episodes: ``(freqs [F], psd [F, D])``.

    ``freqs`` in Hz (``fs = 1/dt``), ``psd`` in ``units^2/Hz``; ``F = nperseg // 2 + 1``.
    """
    from scipy.signal import welch

    x = _check(x, "x")
    nperseg = min(x.shape[1], 256) if nperseg is None else min(int(nperseg), x.shape[1])
    freqs, psd = welch(x, fs=1.0 / float(dt), nperseg=nperseg, axis=1)   # psd [E, F, D]
    return freqs, psd.mean(axis=0)


def band_power(freqs, psd, band_edges) -> np.ndarray:
    """Integrate ``psd [F, ...]`` over each band of ``band_edges [B+1]``: ``[B, ...]`` in ``units^2``."""
    freqs = np.asarray(freqs, dtype=np.float64)
    psd = np.asarray(psd, dtype=np.float64)
    edges = np.asarray(band_edges, dtype=np.float64)
    if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) <= 0):
        raise ValueError(f"band_edges must be at least 2 increasing values, got {edges}")
    df = freqs[1] - freqs[0] if freqs.size > 1 else 1.0
    out = []
    for b, (lo, hi) in enumerate(pairwise(edges)):
        last = b == edges.size - 2
        mask = (freqs >= lo) & ((freqs <= hi) if last else (freqs < hi))
        out.append(psd[mask].sum(axis=0) * df)
    return np.stack(out)


def _ratio(num, den):
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.full(np.broadcast(num, den).shape, np.nan), where=den > 0)


def compare_spectra(real, pred, dt: float = 1.0, band_edges=None,
                    nperseg: int | None = None) -> SpectrumComparison:
    """Spectra of ``real`` and ``pred`` ``[E, T, D]``, of their difference, and the error per band.

    ``band_edges`` default: :func:`default_band_edges` (thirds of Nyquist).
    """
    real, pred = _check(real, "real"), _check(pred, "pred")
    if real.shape != pred.shape:
        raise ValueError(f"real {real.shape} and pred {pred.shape} must have the same shape")
    edges = default_band_edges(dt) if band_edges is None else np.asarray(band_edges, dtype=np.float64)
    freqs, real_psd = power_spectrum(real, dt, nperseg)
    _, pred_psd = power_spectrum(pred, dt, nperseg)
    _, error_psd = power_spectrum(pred - real, dt, nperseg)
    band_real = band_power(freqs, real_psd, edges)
    band_error = band_power(freqs, error_psd, edges)
    return SpectrumComparison(
        freqs=freqs, real_psd=real_psd, pred_psd=pred_psd, error_psd=error_psd, band_edges=edges,
        band_real=band_real, band_error=band_error, relative_error=_ratio(band_error, band_real),
        relative_error_total=_ratio(band_error.sum(axis=1), band_real.sum(axis=1)))


def learning_order(checkpoints: Sequence[tuple[int, np.ndarray]], real, dt: float = 1.0,
                   band_edges=None, threshold: float = 0.1,
                   nperseg: int | None = None) -> BandLearningOrder:
    """Relative error per band at each checkpoint, and the first checkpoint each band is learned at.

    ``checkpoints``: ``(step, pred [E, T, D])`` pairs, each prediction of the same
    ``real [E, T, D]``; they are sorted by step. A band counts as learned at the
    first checkpoint where its total relative error (summed over dimensions) is
    ``<= threshold``.
    """
    if not checkpoints:
        raise ValueError("checkpoints is empty")
    real = _check(real, "real")
    edges = default_band_edges(dt) if band_edges is None else np.asarray(band_edges, dtype=np.float64)
    ordered = sorted(checkpoints, key=lambda c: c[0])
    steps = np.array([int(s) for s, _ in ordered])
    rel = np.stack([compare_spectra(real, pred, dt, edges, nperseg).relative_error_total
                    for _, pred in ordered])                               # [C, B]
    first: list[int | None] = []
    for b in range(rel.shape[1]):
        hit = np.flatnonzero(rel[:, b] <= threshold)
        first.append(int(steps[hit[0]]) if hit.size else None)
    when = [np.inf if s is None else s for s in first]
    low_first = None if all(s is None for s in first) else all(a <= b for a, b in pairwise(when))
    return BandLearningOrder(steps=steps, band_edges=edges, relative_error=rel,
                             threshold=float(threshold), first_below=tuple(first),
                             low_before_high=low_first)
