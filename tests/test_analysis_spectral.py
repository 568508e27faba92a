"""Spectral analysis of a transition, checked against matrices with known eigenvalues."""

import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from reverie.analysis.spectral import (
    analyze_matrix,
    analyze_transition,
    effective_rank,
    eigen_timescales,
    jacobians,
)

RHO, ANGLE = 0.95, 2 * math.pi / 40          # one rotation-scaling pair: period 40 steps
REALS = [0.5, -0.3, 0.8, 0.1]                 # plus real eigenvalues


def _known_matrix(seed=0):
    """A = V diag-block(...) V^-1 with eigenvalues RHO e^{+-i ANGLE} and REALS; returns (A, eigenvalues)."""
    d = 2 + len(REALS)
    block = np.zeros((d, d))
    c, s = RHO * math.cos(ANGLE), RHO * math.sin(ANGLE)
    block[:2, :2] = [[c, -s], [s, c]]
    block[2:, 2:] = np.diag(REALS)
    V = np.random.default_rng(seed).normal(size=(d, d)) + 2 * np.eye(d)
    A = V @ block @ np.linalg.inv(V)
    lam = np.array([RHO * np.exp(1j * ANGLE), RHO * np.exp(-1j * ANGLE), *REALS])
    return A, lam


def _match(found, expected):
    return np.sort_complex(np.round(found, 8)), np.sort_complex(np.round(expected, 8))


def test_linear_map_eigenvalues_timescales_and_period_match_the_formulas():
    A, lam = _known_matrix()
    z = torch.randn(7, A.shape[0], dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    At = torch.as_tensor(A)
    res = analyze_transition(lambda x: x @ At.T, z)
    assert res.method == "batched" and res.eigenvalues.shape == (7, 6)
    for row in res.eigenvalues:                          # the same at every state of a linear map
        a, b = _match(row, lam)
        np.testing.assert_allclose(a, b, atol=1e-5)
    np.testing.assert_allclose(res.spectral_radius, RHO, atol=1e-5)
    np.testing.assert_allclose(res.dominant_pair, RHO * np.exp(1j * ANGLE), atol=1e-5)
    np.testing.assert_allclose(res.dominant_period, 40.0, rtol=1e-5)
    np.testing.assert_allclose(res.dominant_timescale, -1 / math.log(RHO), rtol=1e-5)
    assert abs(-1 / math.log(RHO) - 19.5) < 0.05
    # the real eigenvalues: positive ones do not oscillate, a negative one flips every step
    ex = analyze_matrix(A)
    reals = {round(float(v.real), 6): (t, p) for v, t, p in
             zip(ex.eigenvalues[0], ex.timescale[0], ex.period[0]) if abs(v.imag) < 1e-9}
    assert set(reals) == set(REALS)
    for v, (t, p) in reals.items():
        assert t == pytest.approx(-1 / math.log(abs(v)), rel=1e-6)
        assert p == (2.0 if v < 0 else math.inf)
    assert not ex.unstable.any() and not ex.collapsed and ex.method == "exact"


def test_dt_converts_steps_to_seconds():
    A, _ = _known_matrix()
    res = analyze_matrix(A, dt=0.05)
    assert res.unit == "seconds"
    assert res.dominant_period[0] == pytest.approx(40 * 0.05, rel=1e-6)
    assert res.dominant_timescale[0] == pytest.approx(-0.05 / math.log(RHO), rel=1e-6)


def test_unstable_and_edge_eigenvalues():
    t, p = eigen_timescales(np.array([1.0, 1.2, -1.0, 0.0, 0.5j]))
    assert np.isinf(t[:3]).all() and t[3] == 0.0 and t[4] == pytest.approx(-1 / math.log(0.5))
    assert p[0] == math.inf and p[2] == 2.0 and p[4] == pytest.approx(4.0)
    res = analyze_matrix(np.diag([1.1, 0.5, 1.0]))
    assert res.unstable[0].tolist() == [True, True, False]
    assert np.isnan(res.dominant_pair).all()            # no complex pair


def test_nonlinear_jacobians_match_finite_differences_for_every_method():
    g = torch.Generator().manual_seed(0)
    D, N = 5, 6
    W = torch.randn(D, D, dtype=torch.float64, generator=g) / math.sqrt(D)
    b = torch.randn(D, dtype=torch.float64, generator=g)
    def f(x):
        return torch.tanh(x @ W + b)
    z = torch.randn(N, D, dtype=torch.float64, generator=g)
    h = 1e-6
    ref = np.zeros((N, D, D))
    for j in range(D):
        e = torch.zeros(D, dtype=torch.float64)
        e[j] = h
        ref[:, :, j] = ((f(z + e) - f(z - e)) / (2 * h)).numpy()
    for method in ("auto", "batched", "vmap", "loop"):
        J, used = jacobians(f, z, method=method)
        assert used == ("batched" if method == "auto" else method)
        assert J.shape == (N, D, D)
        np.testing.assert_allclose(J.numpy(), ref, atol=1e-7, err_msg=method)
    # the analysis takes the eigenvalues of those very Jacobians
    res = analyze_transition(f, z)
    for n in range(N):
        a, b2 = _match(res.eigenvalues[n], np.linalg.eigvals(ref[n]))
        np.testing.assert_allclose(a, b2, atol=1e-6)


def test_rows_coupled_across_the_batch_fall_back_to_per_state_jacobians():
    def f(x):                                           # row n depends on the other rows
        return x * x.mean(0, keepdim=True)

    z = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    J, used = jacobians(f, z)
    assert used == "vmap"
    # alone in its batch a state maps to x * x: J_n = diag(2 z_n)
    np.testing.assert_allclose(J.numpy(), np.stack([np.diag(2 * r) for r in z.numpy()]), atol=1e-12)


def test_functions_vmap_cannot_handle_still_get_jacobians():
    W = torch.randn(3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(3))

    def f(x):
        if float(x.detach().sum()) > 1e9:                 # data-dependent Python control flow
            return x
        return x @ W.T + x * x.mean(0, keepdim=True)
    z = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    J, used = jacobians(f, z)
    assert used == "loop"
    expected = np.stack([W.numpy() + np.diag(2 * r) for r in z.numpy()])   # J_n = W + diag(2 z_n)
    np.testing.assert_allclose(J.numpy(), expected, atol=1e-10)


def test_effective_rank_oracles():
    assert effective_rank(np.eye(8)) == pytest.approx(8.0)
    assert effective_rank(np.outer(np.arange(1, 6), np.ones(4))) == pytest.approx(1.0)
    assert effective_rank(np.zeros((3, 3))) == 0.0
    assert effective_rank(np.diag([1.0, 1.0, 0.0])) == pytest.approx(2.0)
    np.testing.assert_allclose(effective_rank(np.stack([np.eye(4), np.diag([1.0, 0, 0, 0])])), [4.0, 1.0])


def test_collapsed_maps_are_flagged_with_the_right_reason():
    rng = np.random.default_rng(0)
    D = 16
    near_zero = analyze_matrix(1e-5 * rng.normal(size=(D, D)))
    assert near_zero.collapsed and "eigenvalues near zero" in near_zero.collapse_reasons[0]
    assert len(near_zero.collapse_reasons) == 1          # tiny but full rank
    rank1 = analyze_matrix(0.9 * np.outer(rng.normal(size=D), rng.normal(size=D)) / D)
    assert rank1.collapsed
    assert any("low-rank transition" in r for r in rank1.collapse_reasons)
    assert rank1.jacobian_effective_rank[0] == pytest.approx(1.0)
    # a healthy transition whose visited states lie on a line: the latent is collapsed
    A = torch.as_tensor(np.linalg.qr(rng.normal(size=(D, D)))[0] * 0.9)
    line = torch.as_tensor(rng.normal(size=(50, 1)) * rng.normal(size=(1, D)))
    res = analyze_transition(lambda x: x @ A.T, line)
    assert res.collapsed and res.collapse_reasons == tuple(
        r for r in res.collapse_reasons if "low-rank latent" in r)
    assert res.state_effective_rank == pytest.approx(1.0)
    assert res.summary()["collapse_reason"].startswith("low-rank latent")


def test_healthy_map_is_not_collapsed():
    rng = np.random.default_rng(1)
    D = 16
    A = torch.as_tensor(np.linalg.qr(rng.normal(size=(D, D)))[0] * 0.9, dtype=torch.float32)
    z = torch.as_tensor(rng.normal(size=(64, D)), dtype=torch.float32)
    res = analyze_transition(lambda x: torch.tanh(x @ A.T), z)
    assert not res.collapsed and res.collapse_reasons == ()
    assert res.state_effective_rank > 0.8 * D
    s = res.summary()
    assert s["collapsed"] is False and s["dim"] == D and s["n_states"] == 64
    assert 0 < s["spectral_radius"]["median"] <= 0.9 + 1e-5


def test_importing_the_analysis_loads_no_environment_library():
    code = ("import sys, reverie.analysis, reverie.analysis.spectral, reverie.analysis.fourier, "
            "reverie.analysis.projection; "
            "print(sorted(m for m in ('gymnasium', 'dm_control', 'ale_py') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
