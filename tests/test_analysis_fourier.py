"""Trajectory spectra, checked on sinusoids and on predictions that miss known frequency bands."""

import numpy as np
import pytest

from reverie.analysis.fourier import (
    band_power,
    compare_spectra,
    default_band_edges,
    learning_order,
    power_spectrum,
)


def _noise(E=3, T=2048, D=2, seed=0):
    return np.random.default_rng(seed).normal(size=(E, T, D))


def _keep(x, lo, hi, dt=1.0):
    """``x`` with only the frequencies in [lo, hi) Hz left (an exact FFT mask along time)."""
    X = np.fft.rfft(x, axis=1)
    f = np.fft.rfftfreq(x.shape[1], d=dt)
    X[:, (f < lo) | (f >= hi), :] = 0.0
    return np.fft.irfft(X, n=x.shape[1], axis=1)


def test_a_sinusoid_peaks_at_its_frequency_within_one_bin():
    dt, T = 0.01, 1500                                  # 100 Hz sampling, 15 s episodes
    f0 = np.array([7.3, 21.0, 40.2])                    # one frequency per dimension, Hz
    t = np.arange(T) * dt
    phase = np.random.default_rng(1).uniform(0, 2 * np.pi, size=(4, 1, 3))
    x = 2.0 * np.sin(2 * np.pi * f0 * t[None, :, None] + phase)
    freqs, psd = power_spectrum(x, dt)
    assert psd.shape == (freqs.size, 3) and freqs[-1] == pytest.approx(50.0)
    df = freqs[1] - freqs[0]
    assert df == pytest.approx(100 / 256)
    peaks = freqs[np.argmax(psd, axis=0)]
    assert np.all(np.abs(peaks - f0) <= df)
    # Parseval: the integrated PSD is the signal's variance, amplitude^2 / 2 = 2
    np.testing.assert_allclose(band_power(freqs, psd, [0, 50])[0], 2.0, rtol=0.02)


def test_default_bands_are_thirds_of_nyquist():
    np.testing.assert_allclose(default_band_edges(0.02), [0, 25 / 3, 50 / 3, 25])
    np.testing.assert_allclose(default_band_edges(1.0, n_bands=2), [0, 0.25, 0.5])
    with pytest.raises(ValueError):
        band_power(np.arange(5.0), np.ones(5), [0.0, 2.0, 1.0])


def test_a_low_passed_prediction_has_error_only_above_the_cutoff():
    real = _noise()
    fc = 0.2                                            # cycles per step (dt = 1)
    pred = _keep(real, 0.0, fc)
    res = compare_spectra(real, pred, band_edges=[0.0, fc, 0.5])
    assert res.relative_error.shape == (2, 2) and res.relative_error_total.shape == (2,)
    assert np.all(res.relative_error[0] < 0.01)         # below fc: reproduced
    np.testing.assert_allclose(res.relative_error[1], 1.0, atol=0.02)  # above fc: all missing
    # the error spectrum is the real spectrum above fc (up to the window's leakage) and ~0 below
    above, below = res.freqs > fc + 0.02, res.freqs < fc - 0.02
    np.testing.assert_allclose(res.error_psd[above], res.real_psd[above], rtol=1e-2)
    assert res.error_psd[below].max() < 1e-3 * res.real_psd[below].mean()
    # white noise of variance 1 has equal power per unit of frequency: 2 * width per band
    np.testing.assert_allclose(res.band_real, [[0.4] * 2, [0.6] * 2], rtol=0.1)


def test_a_perfect_prediction_has_zero_error_and_mismatched_shapes_are_refused():
    real = _noise(E=2, T=300, D=1)
    res = compare_spectra(real, real.copy())
    np.testing.assert_allclose(res.relative_error_total, 0.0, atol=1e-20)
    with pytest.raises(ValueError):
        compare_spectra(real, real[:, :-1])


def _learning_checkpoints(real, pattern):
    return [(step, _keep(real, lo, hi)) for step, (lo, hi) in pattern]


def test_learning_order_reports_low_before_high():
    real = _noise(E=2, T=1024, D=3, seed=2)
    # bands (defaults, thirds of Nyquist 0.5): [0, 1/6), [1/6, 1/3), [1/3, 1/2]
    pattern = [(300, (0, 1.0)), (0, (0, 0.05)), (100, (0, 0.2)), (200, (0, 0.36))]  # unsorted on purpose
    res = learning_order(_learning_checkpoints(real, pattern), real, threshold=0.05)
    assert res.steps.tolist() == [0, 100, 200, 300]
    assert res.relative_error.shape == (4, 3)
    assert res.first_below == (100, 200, 300) and res.low_before_high is True
    assert np.all(np.diff(res.relative_error, axis=0) <= 1e-9)   # error only falls here
    # the highest band never learned: None, still low before high
    res = learning_order(_learning_checkpoints(real, pattern[1:]), real, threshold=0.05)
    assert res.first_below == (100, 200, None) and res.low_before_high is True


def test_learning_order_reports_high_before_low():
    real = _noise(E=2, T=1024, D=3, seed=3)
    pattern = [(0, (0.45, 1.0)), (100, (0.3, 1.0)), (200, (0.15, 1.0)), (300, (0.0, 1.0))]
    res = learning_order(_learning_checkpoints(real, pattern), real, threshold=0.05)
    assert res.first_below == (300, 200, 100) and res.low_before_high is False
    nothing = learning_order([(0, np.zeros_like(real))], real, threshold=0.05)
    assert nothing.first_below == (None, None, None) and nothing.low_before_high is None
