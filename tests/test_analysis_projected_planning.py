"""What planning keeps under a random projection: the ridge model in projected space, checked on a linear system.

Oracle: x' = A x + B u with the linear reward r = c . x' (received on arriving at x'). A ridge fit in the
full space recovers (A, B, c) exactly (R^2 = 1), and a planner acting through the fitted model earns the
return of the same planner acting through the true model.
"""

import numpy as np
import pytest
import torch

from reverie.analysis.projection import (
    ProjectedModel,
    fit_projected_model,
    projected_model_r2,
    projection_r2,
)
from reverie.models.base import VALUE, CapabilityError, Dynamics
from reverie.planning import plan
from reverie.specs import ActionSpec

ACT = ActionSpec(False, 2)


def system():
    """A [4, 4] (a damped rotation and two decays), B [4, 2], reward weights c [4]."""
    c, s = 0.97 * np.cos(0.4), 0.97 * np.sin(0.4)
    A = np.array([[c, -s, 0, 0], [s, c, 0, 0], [0, 0, 0.9, 0.1], [0, 0, 0, 0.7]])
    B = np.array([[0.3, 0.0], [0.0, 0.2], [0.1, -0.2], [0.0, 0.4]])
    return A, B, np.array([0.2, 0.0, 1.0, 0.5])


def data(n, rng):
    A, B, c = system()
    x = rng.uniform(-2, 2, (n, 4))
    u = rng.uniform(-1, 1, (n, 2))
    nxt = x @ A.T + u @ B.T
    return x, u, nxt, nxt @ c


def true_model(quadratic=False):
    """The known system as a ProjectedModel with its exact weights (no projection): reward c . x', or with
    ``quadratic`` the regulation reward -(|x'|^2 + 0.1 |u|^2) of u = [x, a]."""
    A, B, c = system()
    W = np.concatenate([A.T, B.T])                                # [x, a] @ W = A x + B a
    if not quadratic:
        return ProjectedModel(ACT, None, W, np.zeros(4), (None, W @ c, 0.0))
    Q = -(W @ W.T + 0.1 * np.diag([0, 0, 0, 0, 1.0, 1.0]))
    return ProjectedModel(ACT, None, W, np.zeros(4), (Q, np.zeros(6), 0.0))


def regulation_reward(x_next, u):
    return -((x_next ** 2).sum(1) + 0.1 * (u ** 2).sum(1))


def planned_return(model, starts, steps=25, seed=0, reward=None):
    """Act ``steps`` times in the true system with MPPI planning through ``model``; returns ``[B]``
    (reward c . x' unless ``reward(x', u)`` is given)."""
    A, B, c = system()
    x = starts.copy()
    total = np.zeros(len(x))
    for t in range(steps):
        state = model.start(torch.as_tensor(x))
        u = plan("mppi", model, state, horizon=5, candidates=64, elites=8, iterations=3, init_std=1.0,
                 temperature=0.1, seed=seed + t).action.clamp(-1, 1).numpy().astype(np.float64)
        x = x @ A.T + u @ B.T
        total += x @ c if reward is None else reward(x, u)
    return total


def test_the_full_space_ridge_model_recovers_the_linear_system_and_plans_as_well_as_the_truth():
    rng = np.random.default_rng(0)
    x, u, nxt, r = data(400, rng)
    report = projected_model_r2(x, u, nxt, r, [1, 3, 8], alpha=1e-6)
    assert report.full_next_r2 > 1 - 1e-9 and report.full_reward_r2 > 1 - 1e-9
    # projecting up (k = 8 >= D = 4) is injective: the projected dynamics stay exactly linear
    assert report.next_r2[2] > 1 - 1e-9 and report.reward_r2[2] > 1 - 1e-9
    # fewer than 4 dimensions cannot carry the 4-D system: the reward is the first to suffer
    assert (report.next_r2[:2] < 0.999).all() and report.reward_r2[0] < report.reward_r2[1] < 0.9
    assert report.n_train == 300 and report.n_test == 100 and report.value_r2 is None
    assert report.jl_min_dim == {0.1: 5135, 0.2: 1382}      # 4 ln(400) / (eps^2/2 - eps^3/3), rounded down

    fitted = fit_projected_model(x, u, nxt, r, None, ACT, alpha=1e-6)
    assert isinstance(fitted, Dynamics) and fitted.capabilities == {"reward"}
    truth = true_model()
    np.testing.assert_allclose(fitted.weight.numpy(), truth.weight.numpy(), atol=1e-4)
    np.testing.assert_allclose(fitted.bias.numpy(), 0.0, atol=1e-4)
    np.testing.assert_allclose(fitted.reward_head[1].numpy(), truth.reward_head[1].numpy(), atol=1e-4)

    starts = np.random.default_rng(1).uniform(-1, 1, (6, 4))
    through_truth = planned_return(truth, starts)
    through_fit = planned_return(fitted, starts)
    np.testing.assert_allclose(through_fit, through_truth, rtol=0.02, atol=0.05)
    # planning matters here: doing nothing earns far less than planning through the true model
    A, _, c = system()
    idle, x0 = np.zeros(len(starts)), starts.copy()
    for _ in range(25):
        x0 = x0 @ A.T
        idle += x0 @ c
    assert through_truth.mean() > idle.mean() + 10


def test_quadratic_heads_recover_a_regulation_reward_and_steer_where_linear_heads_cannot():
    rng = np.random.default_rng(4)
    x, u, nxt, _ = data(600, rng)
    r = regulation_reward(nxt, u)
    assert projected_model_r2(x, u, nxt, r, [8], heads="quadratic", alpha=1e-6).reward_r2[0] > 1 - 1e-6
    fitted = fit_projected_model(x, u, nxt, r, None, ACT, heads="quadratic", alpha=1e-6)
    truth = true_model(quadratic=True)
    np.testing.assert_allclose(fitted.reward_head[0].numpy(), truth.reward_head[0].numpy(), atol=1e-3)
    np.testing.assert_allclose(fitted.reward_head[1].numpy(), 0.0, atol=1e-3)
    starts = np.random.default_rng(5).uniform(-2, 2, (6, 4))
    through_truth = planned_return(truth, starts, reward=regulation_reward)
    through_fit = planned_return(fitted, starts, reward=regulation_reward)
    np.testing.assert_allclose(through_fit, through_truth, rtol=0.02, atol=0.1)
    # a linear reward head makes every plan the same whatever the state: it cannot regulate
    linear = fit_projected_model(x, u, nxt, r, None, ACT, alpha=1e-6)
    assert planned_return(linear, starts, reward=regulation_reward).mean() < through_truth.mean() - 5


def test_a_projected_model_steps_in_projected_space_and_reads_values_off_it():
    rng = np.random.default_rng(2)
    x, u, nxt, r = data(300, rng)
    value = x @ np.array([0.5, 0.0, -1.0, 2.0]) + 3.0
    model = fit_projected_model(x, u, nxt, r, 16, ACT, value=value, alpha=1e-6, random_state=5)
    assert model.projection.shape == (16, 4) and model.dim == 16 and VALUE in model.capabilities
    state = model.start(torch.as_tensor(x[:5]))
    assert state["z"].shape == (5, 16) and torch.equal(state["reward"], torch.zeros(5))
    # k = 16 >= 4: the projection is injective, so value and one step are exact in projected space
    torch.testing.assert_close(model.value(state), torch.as_tensor(value[:5], dtype=torch.float32), atol=1e-3, rtol=0)
    nxt_state = model.step(state, torch.as_tensor(u[:5], dtype=torch.float32))
    torch.testing.assert_close(nxt_state["z"], model.project(torch.as_tensor(nxt[:5])), atol=1e-3, rtol=0)
    torch.testing.assert_close(model.reward(nxt_state), torch.as_tensor(r[:5], dtype=torch.float32), atol=1e-3, rtol=0)
    # the projection is the one the distortion and R^2 analyses use (same seed, same draw)
    report = projection_r2(x, value, [16], random_state=5, alpha=1e-6)
    assert report.r2[0] > 1 - 1e-6
    with pytest.raises(CapabilityError, match="value"):
        fit_projected_model(x, u, nxt, r, 3, ACT).value(state)


def test_bad_inputs_are_one_sentence():
    rng = np.random.default_rng(3)
    x, u, nxt, r = data(20, rng)
    with pytest.raises(ValueError, match="next_x has shape"):
        projected_model_r2(x, u, nxt[:, :3], r, [2])
    with pytest.raises(ValueError, match="need N = 20 rows"):
        fit_projected_model(x, u[:10], nxt, r, 2, ACT)
    with pytest.raises(ValueError, match="k must be >= 1"):
        fit_projected_model(x, u, nxt, r, 0, ACT)


def test_bilinear_dynamics_capture_an_action_effect_that_depends_on_the_state():
    rng = np.random.default_rng(6)
    A, B, _ = system()
    C = rng.normal(size=(4, 4, 2)) * 0.2                           # x'_i += sum_jk C_ijk x_j a_k
    x, u = rng.uniform(-2, 2, (500, 4)), rng.uniform(-1, 1, (500, 2))
    nxt = x @ A.T + u @ B.T + np.einsum("ijk,nj,nk->ni", C, x, u)
    r = nxt.sum(1)
    linear = projected_model_r2(x, u, nxt, r, [2], alpha=1e-6)
    bilinear = projected_model_r2(x, u, nxt, r, [2], dynamics="bilinear", alpha=1e-6)
    assert bilinear.full_next_r2 > 1 - 1e-9 and linear.full_next_r2 < 0.95
    model = fit_projected_model(x, u, nxt, r, None, ACT, dynamics="bilinear", alpha=1e-6)
    step = model.step(model.start(torch.as_tensor(x[:7])), torch.as_tensor(u[:7], dtype=torch.float32))
    torch.testing.assert_close(step["z"], torch.as_tensor(nxt[:7], dtype=torch.float32), atol=1e-3, rtol=0)
    with pytest.raises(ValueError, match="dynamics must be 'linear' or 'bilinear'"):
        fit_projected_model(x, u, nxt, r, None, ACT, dynamics="cubic")
