"""Random projections of latents, checked against the Johnson-Lindenstrauss bound and chi-square."""

import math

import numpy as np
import pytest
from sklearn.random_projection import (
    GaussianRandomProjection,
    johnson_lindenstrauss_min_dim,
)

from reverie.analysis.projection import jl_eps, projection_distortion, projection_r2


def _latents(n, d, seed=0):
    return np.random.default_rng(seed).normal(size=(n, d))


def test_jl_eps_inverts_sklearns_formula():
    for n, eps in [(60, 0.5), (1000, 0.2), (10**6, 0.1)]:
        k = int(johnson_lindenstrauss_min_dim(n, eps=eps))
        e = jl_eps(n, k)
        assert jl_eps(n, k + 1) < eps <= e              # sklearn rounds k down: e is a hair above eps
        assert johnson_lindenstrauss_min_dim(n, eps=e) <= k
        assert 4 * math.log(n) / (e**2 / 2 - e**3 / 3) == pytest.approx(k, rel=1e-9)
    many = jl_eps(100, [10, 100, 1000, 10_000])
    assert math.isinf(many[0]) and np.all(np.diff(many[1:]) < 0)  # 10 dims guarantee nothing
    assert jl_eps(1, 5) == 0.0


def test_at_the_jl_dimension_every_pair_keeps_its_distance_within_eps():
    n, d, eps, draws = 60, 400, 0.5, 20
    x = _latents(n, d)
    k = int(johnson_lindenstrauss_min_dim(n, eps=eps))       # 196
    ok = []
    for seed in range(draws):
        rep = projection_distortion(x, [k], random_state=seed, eps=eps)
        assert rep.n_pairs == n * (n - 1) // 2 and rep.jl_min_dim == k  # every pair measured
        ok.append(rep.max_distortion[0] <= eps)
    # guaranteed: each draw succeeds with probability >= 1/n; the union bound is loose,
    # and with these seeds 19 of 20 draws succeed (the one miss: 0.55)
    assert np.mean(ok) >= 1 / n
    assert np.mean(ok) >= 0.9


def test_distortion_falls_with_k_as_chi_square_predicts():
    x = _latents(80, 500, seed=1)
    ks = [10, 40, 160]
    reps = [projection_distortion(x, ks, random_state=s) for s in range(5)]
    mean = np.mean([r.mean_distortion for r in reps], axis=0)
    worst = np.mean([r.max_distortion for r in reps], axis=0)
    med = np.mean([r.quantiles["q50"] for r in reps], axis=0)
    assert np.all(np.diff(mean) < 0) and np.all(np.diff(worst) < 0) and np.all(np.diff(med) < 0)
    # ||P u||^2 / ||u||^2 ~ chi2_k / k: for large k, E|ratio - 1| ~ sqrt(2/k) * sqrt(2/pi)
    np.testing.assert_allclose(mean[-1], math.sqrt(2 / 160) * math.sqrt(2 / math.pi), rtol=0.2)
    assert set(reps[0].quantiles) == {"q50", "q90", "q99"}


def test_many_points_are_measured_on_a_seeded_sample_of_pairs():
    x = _latents(300, 20, seed=2)
    x[1] = x[0]                                              # a duplicate state: skipped, not 0/0
    a = projection_distortion(x, [8], random_state=3, max_pairs=500)
    b = projection_distortion(x, [8], random_state=3, max_pairs=500)
    assert a.n_pairs <= 500 and a.n_pairs >= 495
    assert a.max_distortion[0] == b.max_distortion[0] and np.isfinite(a.max_distortion[0])
    full = projection_distortion(x[:40], [8], random_state=3)
    assert full.n_pairs == 40 * 39 // 2 - 1
    with pytest.raises(ValueError):
        projection_distortion(np.ones((5, 3)), [2])


def test_r2_of_a_linear_target_approaches_the_full_dimensional_r2_as_k_grows():
    n, d = 4000, 64
    ks = [4, 16, 32, 128]
    r2s = []
    for seed in range(3):
        rng = np.random.default_rng(10 + seed)
        x = rng.normal(size=(n, d))
        w = rng.normal(size=d)
        y = x @ w + 0.01 * rng.normal(size=n)
        rep = projection_r2(x, y, ks, random_state=seed)
        assert rep.n_test == 1000 and rep.n_train == 3000 and rep.full_r2 > 0.999
        # isotropic latents: a projection P keeps exactly the part of w in P's row space,
        # so R^2 -> ||proj_row(P) w||^2 / ||w||^2 (up to held-out sampling noise)
        for k, r2 in zip(ks[:3], rep.r2[:3]):
            P = GaussianRandomProjection(n_components=k, random_state=seed).fit(x).components_
            q = np.linalg.qr(P.T)[0]
            assert r2 == pytest.approx(np.sum((q.T @ w) ** 2) / np.sum(w**2), abs=0.08)
        # k = 2D: a well-conditioned injective map loses nothing
        assert rep.r2[-1] == pytest.approx(rep.full_r2, abs=0.005)
        r2s.append(rep.r2)
    r2 = np.mean(r2s, axis=0)
    assert np.all(np.diff(r2) > 0)
    np.testing.assert_allclose(r2[:3], np.array(ks[:3]) / d, atol=0.1)  # on average, k/D of it
    two = projection_r2(x, np.stack([y, -y], axis=1), [2 * d])  # several targets: R^2 averaged
    assert two.r2[0] == pytest.approx(two.full_r2, abs=0.005)
