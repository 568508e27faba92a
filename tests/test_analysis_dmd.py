"""Dynamic mode decomposition, checked against linear systems whose eigenvalues are known."""

import math

import numpy as np
import pytest

from reverie.analysis.dmd import dmd, hankel

DT = 0.05


def rotation(theta: float, r: float) -> np.ndarray:
    return r * np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])


def simulate(a: np.ndarray, windows: int, steps: int, seed: int) -> np.ndarray:
    """``[W, T, n]`` trajectories of ``z' = a z`` from standard normal starts."""
    rng = np.random.default_rng(seed)
    z = np.zeros((windows, steps, a.shape[0]))
    z[:, 0] = rng.normal(size=(windows, a.shape[0]))
    for t in range(1, steps):
        z[:, t] = z[:, t - 1] @ a.T
    return z


def test_a_damped_rotation_seen_through_a_noisy_linear_embedding_is_recovered_within_one_percent():
    theta, r = 2 * math.pi / 32.4, 0.985            # period 32.4 steps = 1.62 s, decay ln(0.985)/dt per second
    z = simulate(rotation(theta, r), windows=16, steps=80, seed=0)
    rng = np.random.default_rng(1)
    c = rng.normal(size=(2, 10))                     # 2-D state seen in 10 dimensions, away from the origin
    x = z @ c + rng.normal(size=10) * 3 + 0.01 * rng.normal(size=(16, 80, 10))
    result = dmd(x, DT, delays=4)
    true_period, true_rate = 2 * math.pi / theta * DT, math.log(r) / DT
    assert result.dominant_period == pytest.approx(true_period, rel=0.01)
    assert result.dominant_decay_rate == pytest.approx(true_rate, rel=0.01)
    assert result.dominant_energy > 0.95 and result.unit == "s"
    # the mode moves the observation dimensions as the embedding says: |mode| proportional to |c^T (1, -i)|
    expected = np.abs(c.T @ np.array([1.0, -1.0j]))
    found = np.abs(result.modes[:, result.dominant])
    assert np.allclose(found / found.max(), expected / expected.max(), atol=0.02)


def test_without_noise_every_eigenvalue_is_exact_and_the_offset_is_the_constant_mode():
    a = np.zeros((4, 4))
    a[:2, :2] = rotation(2 * math.pi / 20, 0.97)
    a[2, 2], a[3, 3] = 0.8, -0.5
    basis = np.random.default_rng(2).normal(size=(4, 4))
    a = basis @ a @ np.linalg.inv(basis)
    x = simulate(a, windows=6, steps=40, seed=3) + np.array([1.0, -2.0, 0.5, 3.0])
    result = dmd(x, None, energy=1 - 1e-12)
    expected = np.concatenate([np.linalg.eigvals(a), [1.0]])
    assert result.rank == 5 and result.residual < 1e-8 and result.unit == "steps"
    assert np.allclose(np.sort_complex(np.round(result.eigenvalues, 8)), np.sort_complex(np.round(expected, 8)))
    assert result.dominant_period == pytest.approx(20.0)
    assert result.dominant_decay_rate == pytest.approx(math.log(0.97))


def test_the_dominant_oscillation_is_the_one_with_the_most_motion_not_the_largest_modulus():
    # a slow pair on the unit circle with a tiny amplitude, a faster decaying pair carrying the motion
    a = np.zeros((4, 4))
    a[:2, :2], a[2:, 2:] = rotation(2 * math.pi / 25, 0.99), rotation(2 * math.pi / 400, 1.0)
    z = simulate(a, windows=8, steps=100, seed=4)
    z[..., 2:] *= 1e-3
    x = z @ np.random.default_rng(5).normal(size=(4, 6))               # both pairs move every dimension
    result = dmd(x, DT, energy=1 - 1e-12)                                # keep the tiny pair too
    assert result.dominant_period == pytest.approx(25 * DT, rel=1e-6)
    slow = np.argmin(np.abs(result.period - 400 * DT))
    assert result.period[slow] == pytest.approx(400 * DT, rel=1e-4) and result.energy[slow] < 1e-4


def test_one_observed_dimension_needs_delays_to_show_its_oscillation():
    z = simulate(rotation(2 * math.pi / 16, 0.995), windows=4, steps=64, seed=5)[..., :1]   # only the first coordinate
    assert dmd(z, DT).dominant is None                                  # one dimension: one real eigenvalue
    with_delays = dmd(z, DT, delays=3)
    assert with_delays.dominant_period == pytest.approx(16 * DT, rel=1e-6)
    assert with_delays.dominant_decay_rate == pytest.approx(math.log(0.995) / DT, rel=1e-6)


def test_a_pair_that_dies_within_a_fraction_of_its_period_is_not_an_oscillation():
    z = simulate(rotation(2 * math.pi / 40, 0.7), windows=4, steps=30, seed=6)   # falls by e^-14 per period
    result = dmd(z, DT)
    assert result.dominant is None and np.isnan(result.dominant_period)
    assert np.isfinite(result.period).sum() == 2                        # the pair is still reported


def test_hankel_stacks_the_newest_snapshot_first():
    x = np.arange(2 * 5 * 2, dtype=float).reshape(2, 5, 2)
    h = hankel(x, 3)
    assert h.shape == (2, 3, 6)
    assert np.array_equal(h[1, 0], np.concatenate([x[1, 2], x[1, 1], x[1, 0]]))
    with pytest.raises(ValueError, match="delays must be between 1 and the trajectory length 5"):
        hankel(x, 6)


def test_bad_trajectories_are_one_sentence():
    with pytest.raises(ValueError, match="NaN or infinity"):
        dmd(np.full((2, 10, 3), np.nan))
    with pytest.raises(ValueError, match="fewer than two snapshots"):
        dmd(np.zeros((2, 4, 3)), delays=4)
    with pytest.raises(ValueError, match=r"must be \[W, T, D\] or \[T, D\]"):
        dmd(np.zeros(5))
