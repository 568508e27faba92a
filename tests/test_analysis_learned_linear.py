"""A linear system with known eigenvalues, learned by the PETS ensemble: the learned Jacobian's spectrum is A's.

x' = A x + B u with A's eigenvalues 0.95 e^{+-0.3 i} (a damped rotation, period 2 pi / 0.3 = 20.9 steps)
and 0.8, in a skewed basis; 3-D state, 1-D action. The ensemble learns it from random actions with its
own training code (``fit_ensemble``), and ``model_spectrum`` linearises its ``transition`` capability
(the members' average predicted next state) at visited states.
"""

import math

import numpy as np
import pytest
import torch

from reverie.agents.pets import Transitions, fit_ensemble
from reverie.analysis import analyze_matrix, jacobians, model_spectrum
from reverie.models.base import TRANSITION, capabilities_of
from reverie.models.ensemble import EnsembleConfig
from reverie.models.ensemble_model import EnsembleWorldModel
from reverie.specs import ActionSpec, ArraySpec

RHO, ANGLE, REAL = 0.95, 0.3, 0.8
#: The stated tolerance: every learned eigenvalue within this of A's, in modulus and in angle (rad).
MOD_TOL, ANGLE_TOL = 0.02, 0.02


def known_system():
    """(A [3, 3], B [3, 1], eigenvalues sorted by decreasing modulus, the pair's + member first)."""
    c, s = RHO * math.cos(ANGLE), RHO * math.sin(ANGLE)
    block = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, REAL]])
    V = np.array([[1.0, 0.4, -0.3], [0.2, 1.0, 0.5], [-0.1, 0.3, 1.0]])   # skewed, well conditioned
    A = V @ block @ np.linalg.inv(V)
    B = np.array([[0.5], [-0.3], [0.4]])
    lam = np.array([RHO * np.exp(1j * ANGLE), RHO * np.exp(-1j * ANGLE), REAL])
    return A, B, lam


def random_action_data(A, B, episodes, steps, rng):
    """Transitions of ``episodes`` runs of ``steps`` uniform random actions from random starts."""
    xs, us, nxt = [], [], []
    for _ in range(episodes):
        x = rng.uniform(-2, 2, 3)
        for _ in range(steps):
            u = rng.uniform(-1, 1, 1)
            x2 = A @ x + B @ u
            xs.append(x), us.append(u), nxt.append(x2)
            x = x2
    xs, us, nxt = (np.asarray(v, np.float32) for v in (xs, us, nxt))
    return Transitions(xs, us, nxt, np.zeros(len(xs), np.float32))


def ensemble_model(cfg, particles=3):
    return EnsembleWorldModel({"x": ArraySpec((3,), np.dtype(np.float32))}, ActionSpec(False, 1), cfg, particles)


def test_the_ensemble_transition_is_its_mean_prediction_and_its_jacobian_matches_finite_differences():
    torch.manual_seed(0)
    wm = ensemble_model(EnsembleConfig(members=3, units=16, layers=2))
    assert TRANSITION in capabilities_of(wm)
    with torch.no_grad():   # a non-trivial normaliser, so the units conversion is part of what is checked
        wm.ensemble.in_mean.copy_(torch.tensor([0.3, -0.2, 0.1, 0.05]))
        wm.ensemble.in_std.copy_(torch.tensor([1.5, 0.7, 2.0, 0.5]))
        wm.ensemble.out_mean.copy_(torch.tensor([0.1, -0.1, 0.2, 0.0]))
        wm.ensemble.out_std.copy_(torch.tensor([0.4, 0.9, 1.3, 1.0]))
    wm.double()
    obs = torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    state = wm.ensemble.start_state(obs, wm.particles)           # what observe gives, kept in float64
    action = torch.tensor([[0.4]], dtype=torch.float64)
    z, f = wm.transition(state, action)
    torch.testing.assert_close(z, obs)                            # filtered particles sit at the observation
    mean, _ = wm.ensemble.predict(z, action.expand(5, 1))          # [E, N, D + 1]: every member's mean
    torch.testing.assert_close(f(z), z + mean[..., :3].mean(0))
    J, _ = jacobians(f, z)
    eps = 1e-6
    fd = torch.stack([(f(z + eps * e) - f(z - eps * e)) / (2 * eps) for e in torch.eye(3, dtype=torch.float64)], -1)
    torch.testing.assert_close(J, fd, atol=1e-7, rtol=1e-6)
    assert not torch.allclose(J[0], J[1])                          # a nonlinear map: the Jacobian varies
    summary = model_spectrum(wm, state, action)
    np.testing.assert_allclose(np.sort(np.abs(summary.eigenvalues[0])),
                               np.sort(np.abs(np.linalg.eigvals(fd[0].detach().numpy()))), atol=1e-7)


@pytest.mark.parametrize("seed", [0, 1])
def test_a_learned_linear_system_has_the_eigenvalues_of_a(seed):
    A, B, lam = known_system()
    exact = analyze_matrix(A)
    np.testing.assert_allclose(exact.eigenvalues[0][:2], np.sort_complex(lam[:2])[::-1], atol=1e-12)
    assert exact.dominant_period[0] == pytest.approx(2 * math.pi / ANGLE, rel=1e-12)

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    cfg = EnsembleConfig(members=3, units=32, layers=2, lr=3e-3, weight_decay=0.0)
    wm = ensemble_model(cfg)
    train = random_action_data(A, B, 40, 50, rng)
    holdout = random_action_data(A, B, 8, 50, rng)
    fit_ensemble(wm.ensemble, wm.ensemble.optimizer(), train, holdout, max_epochs=60, patience=60,
                 batch_size=64, rng=rng)
    visited = torch.as_tensor(holdout.obs[rng.choice(len(holdout), 64, replace=False)])
    _, state = wm.observe({"x": visited[:, None]}, torch.zeros(64, 1, 1), torch.ones(64, 1, dtype=torch.bool))
    learned = model_spectrum(wm, state, torch.zeros(1, 1))
    assert learned.dim == 3 and learned.eigenvalues.shape == (64, 3)
    for row in learned.eigenvalues:
        pair = row[np.argmax(row.imag)]                          # the learned + member of the pair
        real = row[np.argmin(np.abs(row.imag))]                  # a real 3x3 matrix has one real eigenvalue
        assert abs(abs(pair) - RHO) < MOD_TOL and abs(np.angle(pair) - ANGLE) < ANGLE_TOL, row
        assert abs(abs(real) - REAL) < MOD_TOL and abs(np.angle(real)) < ANGLE_TOL, row
    # the summary's dominant pair is the rotation, its period 2 pi / 0.3 steps within the angle tolerance
    period = np.median(learned.dominant_period)
    assert 2 * math.pi / (ANGLE + ANGLE_TOL) < period < 2 * math.pi / (ANGLE - ANGLE_TOL)
