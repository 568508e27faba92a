"""Behaviour of the model-predictive planners against analytic answers.

Oracles: the finite-horizon LQR action from the backward Riccati recursion
(with discount and terminal cost for the value / continuation options), the
brute-force best path of a small decision tree, and hand-computed MPPI weights.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from reverie.models import CapabilityError
from reverie.planning import (
    CEMSettings,
    GradientSettings,
    MPPISettings,
    PlanningError,
    ShootingSettings,
    WarmStart,
    categorical_candidates,
    cem,
    colored_noise,
    gradient,
    mppi,
    mppi_weights,
    plan,
    rollout_returns,
    shooting,
)
from reverie.specs import ActionSpec

CONTINUOUS = ("shooting", "cem", "mppi", "gradient")


@pytest.fixture(autouse=True)
def _one_thread():
    # the planners' tensors here are tiny; extra threads only add overhead on a shared machine
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------------------
# models


class LinearQuadratic:
    """x' = A x + B u, reward = -(x'^T Q x' + u^T R u); the state [N, n + m] carries the last u."""

    capabilities = frozenset({"reward", "value", "cont"})

    def __init__(self, A, B, Q, R, terminal=None, cont=1.0):
        self.A, self.B, self.Q, self.R = A, B, Q, R
        self.terminal = terminal  # value(x) = -x^T M x
        self.continue_prob = cont
        self.n = A.shape[0]
        self.action_size = B.shape[1]
        self.act_spec = ActionSpec(False, self.action_size)

    def step(self, state, action):
        x = state[:, : self.n]
        return torch.cat([x @ self.A.T + action @ self.B.T, action], dim=1)

    def reward(self, state):
        x, u = state[:, : self.n], state[:, self.n :]
        return -((x @ self.Q) * x).sum(1) - ((u @ self.R) * u).sum(1)

    def value(self, state):
        x = state[:, : self.n]
        return -((x @ self.terminal) * x).sum(1)

    def cont(self, state):
        return torch.full((state.shape[0],), self.continue_prob)

    def start(self, x0):
        return torch.cat([x0, torch.zeros(x0.shape[0], self.action_size)], dim=1)


def lqr_actions(model, x0, horizon, discount=1.0, terminal=None):
    """Optimal open-loop actions [B, H, m] by the backward Riccati recursion (float64)."""
    A, B, Q, R = (t.double() for t in (model.A, model.B, model.Q, model.R))
    P = torch.zeros_like(Q) if terminal is None else terminal.double()
    gains = []
    for _ in range(horizon):
        S = Q + discount * P  # cost-to-go seen from the state reached by this step's action
        K = -torch.linalg.solve(R + B.T @ S @ B, B.T @ S @ A)
        P = A.T @ S @ A + A.T @ S @ B @ K
        gains.append(K)
    x, actions = x0.double().T, []
    for K in reversed(gains):
        u = K @ x
        actions.append(u.T)
        x = A @ x + B @ u
    return torch.stack(actions, dim=1).float()


def double_integrator(**kwargs):
    A = torch.tensor([[1.0, 0.1], [0.0, 1.0]])
    B = torch.tensor([[0.005], [0.1]])
    Q = torch.diag(torch.tensor([1.0, 0.1]))
    R = torch.tensor([[0.01]])
    return LinearQuadratic(A, B, Q, R, **kwargs)


X0 = torch.tensor([[0.15, -0.1], [-0.1, 0.2]])  # the optimal actions stay well inside [-1, 1]
HORIZON = 5

# settings accurate enough to compare with the analytic action, and the tolerance for each
ACCURATE = {
    "shooting": (dict(candidates=20000), 0.15),
    "cem": (dict(candidates=1000, elites=50, iterations=10), 0.02),
    "mppi": (dict(candidates=512, elites=64, iterations=8, temperature=0.002), 0.03),
    "gradient": (dict(restarts=2, iterations=60, learning_rate=0.05), 0.01),
}


class PointMass:
    """1-D point mass, state [N, 2] = (position, velocity); the goal is position 1 at rest."""

    act_spec = ActionSpec(False, 1)
    capabilities = frozenset({"reward"})

    def step(self, state, action):
        velocity = state[:, 1] + 0.1 * action[:, 0]
        return torch.stack([state[:, 0] + 0.1 * velocity, velocity], dim=1)

    def reward(self, state):
        return -((state[:, 0] - 1.0) ** 2) - 0.1 * state[:, 1] ** 2


class DecisionTree:
    """K choices per step; state [N, 2] = (tree id, node id) with children node * K + a + 1."""

    capabilities = frozenset({"reward"})

    def __init__(self, rewards, choices):
        self.rewards, self.action_size = rewards, choices  # rewards [trees, nodes]
        self.act_spec = ActionSpec(True, choices)

    def step(self, state, action):
        node = state[:, 1] * self.action_size + action.argmax(-1).float() + 1
        return torch.stack([state[:, 0], node], dim=1)

    def reward(self, state):
        return self.rewards[state[:, 0].long(), state[:, 1].long()]


class CallCounter:
    """Wraps a model and records the batch size of every step call."""

    def __init__(self, model):
        self.model, self.rows = model, []
        self.act_spec, self.capabilities = model.act_spec, model.capabilities

    def step(self, state, action):
        self.rows.append(action.shape[0])
        return self.model.step(state, action)

    def reward(self, state):
        return self.model.reward(state)


def run_planner(name, model, state, warm=None, **settings):
    return plan(name, model, state, warm=warm, horizon=settings.pop("horizon", HORIZON), **settings)


# ---------------------------------------------------------------------------
# analytic optimum of a linear-quadratic system


@pytest.mark.parametrize("name", CONTINUOUS)
def test_first_action_matches_finite_horizon_lqr(name):
    model = double_integrator()
    expected = lqr_actions(model, X0, HORIZON)
    assert expected.abs().max() < 0.9  # the unconstrained optimum is feasible
    settings, tolerance = ACCURATE[name]
    result = run_planner(name, model, model.start(X0), seed=0, **settings)
    assert result.action.shape == (2, 1)
    assert torch.allclose(result.action, expected[:, 0], atol=tolerance), (result.action, expected[:, 0])
    assert result.best_return.dtype == torch.float32


@pytest.mark.parametrize("name", ("cem", "gradient"))
def test_terminal_value_gives_the_riccati_action_with_terminal_cost(name):
    terminal = torch.diag(torch.tensor([8.0, 1.0]))
    model = double_integrator(terminal=terminal)
    discount = 0.9
    expected = lqr_actions(model, X0, HORIZON, discount=discount, terminal=terminal)
    without = lqr_actions(model, X0, HORIZON, discount=discount)
    assert expected.abs().max() < 0.9
    assert (expected[:, 0] - without[:, 0]).abs().min() > 0.1  # the value must matter
    settings, tolerance = ACCURATE[name]
    result = run_planner(name, model, model.start(X0), seed=1, use_value=True, discount=discount, **settings)
    assert torch.allclose(result.action, expected[:, 0], atol=tolerance), (result.action, expected[:, 0])


@pytest.mark.parametrize("name", ("cem", "gradient"))
def test_continuation_probability_acts_as_a_discount(name):
    # with cont = c everywhere, sum_t (prod_{k<t} c) r_t is the return discounted by c
    model = double_integrator(cont=0.5)
    x0 = torch.tensor([[0.15, -0.1], [0.2, 0.1]])
    expected = lqr_actions(model, x0, HORIZON, discount=0.5)
    undiscounted = lqr_actions(model, x0, HORIZON)
    assert expected.abs().max() < 0.9
    assert (expected[:, 0] - undiscounted[:, 0]).abs().min() > 0.3
    settings, tolerance = ACCURATE[name]
    result = run_planner(name, model, model.start(x0), seed=2, use_cont=True, **settings)
    assert torch.allclose(result.action, expected[:, 0], atol=tolerance), (result.action, expected[:, 0])


def test_cem_options_still_find_the_lqr_action():
    model = double_integrator()
    expected = lqr_actions(model, X0, HORIZON)
    result = cem(
        model,
        model.start(X0),
        CEMSettings(horizon=HORIZON, candidates=500, elites=50, momentum=0.1, noise_beta=2.0, keep_elites=0.3, seed=3),
    )
    assert torch.allclose(result.action, expected[:, 0], atol=0.03)


def test_kept_elites_never_lose_the_best_candidate():
    model = double_integrator()
    # few, noisy candidates: without keeping elites the best return of an iteration often drops
    noisy = CEMSettings(horizon=HORIZON, candidates=20, elites=5, iterations=10, min_std=0.5, seed=3)
    dropped = cem(model, model.start(X0), noisy).best_return
    assert (dropped[1:] < dropped[:-1]).any()
    # kept elites are re-imagined by a deterministic model, so the best return cannot drop
    kept = cem(model, model.start(X0), dataclasses.replace(noisy, keep_elites=0.2)).best_return
    assert (kept[1:] >= kept[:-1]).all()


# ---------------------------------------------------------------------------
# closed loop and warm starts


CLOSED_LOOP = {
    "shooting": dict(candidates=200),
    "cem": dict(candidates=100, elites=10, iterations=4),
    "mppi": dict(candidates=100, elites=10, iterations=4, temperature=0.05),
    "gradient": dict(restarts=2, iterations=10),
}


@pytest.mark.parametrize("name", CONTINUOUS)
def test_closed_loop_replanning_drives_the_point_mass_to_the_goal(name):
    model = PointMass()
    state = torch.tensor([[0.0, 0.0], [1.8, 0.0]])  # two environments planned together
    warm, generator = None, torch.Generator().manual_seed(0)
    for _ in range(50):
        result = plan(name, model, state, warm=warm, horizon=10, generator=generator, **CLOSED_LOOP[name])
        assert result.action.abs().max() <= 1.0
        state, warm = model.step(state, result.action), result.warm
    assert (state[:, 0] - 1.0).abs().max() < 0.05, state
    assert state[:, 1].abs().max() < 0.1, state


@pytest.mark.parametrize("name", ("cem", "mppi", "gradient"))
def test_warm_start_reaches_the_same_plan_quality_in_fewer_iterations(name):
    model = PointMass()
    settings = {"cem": dict(candidates=100, elites=10), "mppi": dict(candidates=100, elites=10, temperature=0.05),
                "gradient": dict(restarts=2)}[name]
    state = torch.tensor([[0.0, 0.0]])
    previous = plan(name, model, state, horizon=10, iterations=30, seed=0, **settings)
    state = model.step(state, previous.action)
    reference = plan(name, model, state, horizon=10, iterations=40, seed=1, **settings)

    def quality(result):
        returns, _ = rollout_returns(model, state, result.mean[:, None], CEMSettings(horizon=10))
        return returns.item()

    target = quality(reference) - 0.05

    def iterations_needed(warm):
        for iterations in range(1, 21):
            result = plan(name, model, state, warm=warm, horizon=10, iterations=iterations, seed=2, **settings)
            if quality(result) >= target:
                return iterations
        return math.inf

    warm_needs, cold_needs = iterations_needed(previous.warm), iterations_needed(None)
    assert warm_needs < math.inf and warm_needs < cold_needs, (warm_needs, cold_needs)


def test_warm_start_is_the_plan_shifted_by_one_step():
    model = double_integrator()
    result = cem(model, model.start(X0), CEMSettings(horizon=HORIZON, candidates=100, elites=10, iterations=2, seed=0))
    assert torch.equal(result.warm.mean[:, :-1], result.mean[:, 1:])
    assert torch.equal(result.warm.mean[:, -1], torch.zeros(2, 1))
    assert torch.equal(result.warm.std[:, :-1], result.std[:, 1:])
    assert torch.equal(result.warm.std[:, -1], torch.ones(2, 1))
    # a warm start with another horizon is cut or padded rather than rejected
    longer = cem(model, model.start(X0), CEMSettings(horizon=8, candidates=50, elites=5, iterations=1), result.warm)
    assert longer.mean.shape == (2, 8, 1)


# ---------------------------------------------------------------------------
# discrete actions


def _tree_rewards(choices, depth, trees, seed):
    nodes = sum(choices**d for d in range(depth + 1))
    generator = torch.Generator().manual_seed(seed)
    return torch.rand((trees, nodes), generator=generator)


def _best_paths(rewards, choices, depth):
    """Brute force: the best path of every tree and its margin over the second best."""
    best = []
    for tree in range(rewards.shape[0]):
        totals = {}
        for code in range(choices**depth):
            path = [(code // choices**d) % choices for d in reversed(range(depth))]
            node, total = 0, 0.0
            for choice in path:
                node = node * choices + choice + 1
                total += rewards[tree, node].item()
            totals[tuple(path)] = total
        ranked = sorted(totals, key=totals.get, reverse=True)
        best.append((ranked[0], totals[ranked[0]] - totals[ranked[1]]))
    return best


@pytest.mark.parametrize("name", ("cem", "shooting"))
def test_discrete_planners_find_the_best_path_of_a_decision_tree(name):
    choices, depth = 3, 3
    rewards = _tree_rewards(choices, depth, trees=2, seed=4)
    best = _best_paths(rewards, choices, depth)
    assert min(margin for _, margin in best) > 0.01  # a unique optimum
    model = DecisionTree(rewards, choices)
    state = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    settings = dict(candidates=300, elites=30, iterations=5, smoothing=0.01) if name == "cem" else dict(candidates=300)
    result = plan(name, model, state, horizon=depth, seed=0, **settings)
    paths = result.probs.argmax(-1)  # [B, H]
    for row, (path, _) in enumerate(best):
        assert paths[row].tolist() == list(path)
        assert torch.equal(result.action[row], torch.nn.functional.one_hot(torch.tensor(path[0]), choices).float())
    assert torch.allclose(result.probs.sum(-1), torch.ones(2, depth))
    # the warm start is the plan shifted by one step, with a uniform last step
    assert torch.equal(result.warm.probs[:, :-1], result.probs[:, 1:])
    assert torch.allclose(result.warm.probs[:, -1], torch.full((2, choices), 1 / choices))


class CashOut:
    """Two choices: 0 cashes out (reward 1, episode ends), 1 earns 0.4 and continues.

    After the end the model keeps predicting reward 1 (a learned model's rewards past a
    terminal state are meaningless), so only continuation weighting sees the truth.
    State [N, 1]: 1 once the episode has ended.
    """

    act_spec = ActionSpec(True, 2)
    capabilities = frozenset({"reward", "cont"})

    def step(self, state, action):
        return torch.maximum(state, action[:, :1])

    def reward(self, state):
        return torch.where(state[:, 0] > 0, 1.0, 0.4)

    def cont(self, state):
        return 1.0 - state[:, 0]


@pytest.mark.parametrize("name", ("cem", "shooting"))
def test_continuation_changes_the_discrete_choice_as_the_analytic_answer_says(name):
    model, state = CashOut(), torch.zeros(1, 1)
    settings = dict(candidates=200, elites=20, iterations=4) if name == "cem" else dict(candidates=200)
    # ignoring the end: cash out at once and collect the phantom rewards (3 > 1.8)
    naive = plan(name, model, state, horizon=3, seed=0, **settings)
    assert naive.action.argmax(-1).item() == 0
    # with continuation: earn 0.4 twice, then cash out (0.4 + 0.4 + 1 = 1.8)
    aware = plan(name, model, state, horizon=3, use_cont=True, seed=0, **settings)
    assert aware.probs.argmax(-1)[0].tolist() == [1, 1, 0]
    assert aware.best_return[-1].item() == pytest.approx(1.8)


# ---------------------------------------------------------------------------
# robustness


class Treacherous:
    """reward = last action, but NaN above 0.5 and +inf below -0.8 (a model blowing up)."""

    act_spec = ActionSpec(False, 1)
    capabilities = frozenset({"reward"})

    def step(self, state, action):
        return action

    def reward(self, state):
        a = state[:, 0]
        reward = torch.where(a > 0.5, torch.full_like(a, float("nan")), a)
        return torch.where(a < -0.8, torch.full_like(a, float("inf")), reward)


@pytest.mark.parametrize("name", CONTINUOUS)
def test_candidates_with_nan_or_inf_returns_are_never_selected(name):
    model = Treacherous()
    settings = {"shooting": {}, "cem": dict(candidates=200, elites=20), "mppi": dict(temperature=0.05),
                "gradient": dict(restarts=4, iterations=30)}[name]
    state = torch.zeros(2, 1)
    result = plan(name, model, state, horizon=2, seed=0, **settings)
    chosen = result.mean  # [B, H, A]
    assert ((chosen >= -0.8) & (chosen <= 0.5)).all(), chosen
    assert (result.action > 0.3).all(), result.action  # close to the best finite reward
    returns, _ = rollout_returns(model, state, chosen[:, None], ShootingSettings(horizon=2))
    assert torch.isfinite(returns).all()
    assert torch.isfinite(result.best_return[0]).all()


class PartlyBroken:
    """Finite rewards for start state 0, NaN for every candidate of start state 1."""

    act_spec = ActionSpec(False, 1)
    capabilities = frozenset({"reward"})

    def step(self, state, action):
        return torch.cat([state[:, :1], action], dim=1)

    def reward(self, state):
        return torch.where(state[:, 0] > 0, torch.full_like(state[:, 1], float("nan")), -(state[:, 1] - 0.3) ** 2)


@pytest.mark.parametrize("name", CONTINUOUS)
def test_a_start_state_without_any_finite_return_keeps_a_finite_action(name):
    result = plan(name, PartlyBroken(), torch.tensor([[0.0, 0.0], [1.0, 0.0]]), horizon=2, seed=0,
                  **({"iterations": 3} if name != "shooting" else {}))
    assert torch.isfinite(result.action).all()
    assert result.action[1].item() == 0.0  # falls back to the centre of the bounds
    assert abs(result.action[0].item() - 0.3) < 0.15
    assert result.best_return[-1, 1].item() == float("-inf")


def test_mppi_weights_match_hand_computed_values_and_survive_huge_returns():
    weights = mppi_weights(torch.tensor([[0.0, -1.0, float("-inf")]]), temperature=1.0)
    e = math.exp(-1.0)
    assert torch.allclose(weights, torch.tensor([[1 / (1 + e), e / (1 + e), 0.0]]))
    huge = mppi_weights(torch.tensor([[1e30, 1e30 - 2e23, -1e30]]), temperature=1e23)
    assert torch.isfinite(huge).all() and huge.sum().item() == pytest.approx(1.0)
    assert torch.equal(mppi_weights(torch.full((1, 3), float("-inf")), 1.0), torch.zeros(1, 3))


def test_mppi_with_returns_of_huge_scale_still_finds_the_lqr_action():
    base = double_integrator()
    scale = 1e6  # exp(R / temperature) without the max subtracted would overflow
    model = LinearQuadratic(base.A, base.B, base.Q * scale, base.R * scale)
    expected = lqr_actions(base, X0, HORIZON)
    settings, tolerance = ACCURATE["mppi"]
    settings = dict(settings, temperature=settings["temperature"] * scale)
    result = run_planner("mppi", model, model.start(X0), seed=0, **settings)
    assert torch.allclose(result.action, expected[:, 0], atol=tolerance)


# ---------------------------------------------------------------------------
# model contract: batching, dict states, prior policy, bf16, gradients


@pytest.mark.parametrize(
    "name, settings, calls, rows",
    [
        ("shooting", dict(candidates=64), HORIZON, 2 * 64),
        ("cem", dict(candidates=64, elites=8, iterations=3), 3 * HORIZON, 2 * 64),
        ("mppi", dict(candidates=64, elites=8, iterations=3), 3 * HORIZON, 2 * 64),
        ("gradient", dict(restarts=4, iterations=3), 3 * HORIZON, 2 * 4),
    ],
)
def test_one_batched_model_step_per_horizon_step(name, settings, calls, rows):
    counter = CallCounter(double_integrator())
    with torch.no_grad():  # all planners must work under no_grad (gradient enables it inside)
        plan(name, counter, counter.model.start(X0), horizon=HORIZON, seed=0, **settings)
    assert counter.rows == [rows] * calls


class DictState:
    """The double integrator with an RSSM-like nested dict state."""

    def __init__(self, model):
        self.model, self.act_spec, self.capabilities = model, model.act_spec, model.capabilities

    def _flat(self, state):
        return torch.cat([state["deter"], state["stoch"]["sample"][:, :, 0]], dim=1)

    def step(self, state, action):
        flat = self.model.step(self._flat(state), action)
        logit = state["stoch"]["logit"] + 1.0  # carried along, unused: only its shape matters
        return {"deter": flat[:, :2], "stoch": {"sample": flat[:, 2:, None], "logit": logit}}

    def reward(self, state):
        return self.model.reward(self._flat(state))


@pytest.mark.parametrize("name", CONTINUOUS)
def test_a_dict_state_model_plans_exactly_like_its_tensor_twin(name):
    flat_model = double_integrator()
    dict_model = DictState(flat_model)
    state = {"deter": X0.clone(), "stoch": {"sample": torch.zeros(2, 1, 1), "logit": torch.zeros(2, 4, 4)}}
    settings = {"shooting": dict(candidates=100), "cem": dict(candidates=100, elites=10, iterations=3),
                "mppi": dict(candidates=100, elites=10, iterations=3), "gradient": dict(restarts=2, iterations=5)}[name]
    from_dict = run_planner(name, dict_model, state, seed=5, **settings)
    from_flat = run_planner(name, flat_model, flat_model.start(X0), seed=5, **settings)
    assert torch.allclose(from_dict.action, from_flat.action, atol=1e-6)
    assert torch.allclose(from_dict.best_return, from_flat.best_return, atol=1e-6)


class Reach:
    """state [N, 2] = (target, position); position += action; reward = -(position - target)^2."""

    act_spec = ActionSpec(False, 1)
    capabilities = frozenset({"reward"})

    def step(self, state, action):
        return torch.stack([state[:, 0], state[:, 1] + action[:, 0]], dim=1)

    def reward(self, state):
        return -((state[:, 1] - state[:, 0]) ** 2)


class Deterministic:
    """A point-mass action distribution: what a ``policy`` capability returns, reduced to its mode."""

    def __init__(self, action):
        self.action = action

    def mode(self):
        return self.action


class ReachWithPrior(Reach):
    """Reach with a prior that is perfect only on its own imagined trajectory: the first step reaches the
    target, then it stays."""

    capabilities = frozenset({"reward", "policy"})

    def __init__(self):
        self.seen = []

    def policy(self, states):
        self.seen.append(states.shape[0])
        return Deterministic((states[:, :1] - states[:, 1:]).clamp(-1.0, 1.0))


def test_prior_policy_candidates_roll_out_the_models_policy_on_their_own_states():
    targets = torch.tensor([[-0.5], [0.2], [0.7]])
    state = torch.cat([targets, torch.zeros(3, 1)], dim=1)
    model = ReachWithPrior()
    shot = plan("shooting", model, state, horizon=3, candidates=4, policy_candidates=1, seed=0)
    assert torch.equal(shot.action, targets)
    assert torch.equal(shot.mean[:, 1:], torch.zeros(3, 2, 1))
    assert torch.equal(shot.best_return, torch.zeros(1, 3))
    assert model.seen == [3] * 3  # one call per horizon step, on the B * P policy rows only
    best = plan("cem", model, state, horizon=3, candidates=8, elites=2, iterations=2, policy_candidates=2,
                return_best=True, seed=0)
    assert torch.equal(best.action, targets)
    weighted = plan("mppi", model, state, horizon=3, candidates=16, elites=4, iterations=2, policy_candidates=2,
                    seed=0)
    assert torch.equal(weighted.best_return, torch.zeros(2, 3))  # the policy's rows are optimal each iteration
    refined = plan("gradient", model, state, horizon=3, restarts=2, iterations=3, policy_candidates=1, seed=0)
    assert torch.equal(refined.action, targets)
    with pytest.raises(CapabilityError, match="needs a model with policy, but Reach has only reward"):
        plan("cem", Reach(), state, horizon=3, candidates=8, elites=2, policy_candidates=2)


def test_bf16_autocast_plans_close_to_fp32_and_keeps_fp32_returns():
    model = double_integrator()
    autocast_seen = []

    class Watched(LinearQuadratic):
        def step(self, state, action):
            autocast_seen.append(torch.is_autocast_enabled("cpu"))
            return super().step(state, action)

    watched = Watched(model.A, model.B, model.Q, model.R)
    settings, _ = ACCURATE["cem"]
    fp32 = run_planner("cem", watched, watched.start(X0), seed=0, **settings)
    assert not any(autocast_seen)
    bf16 = run_planner("cem", watched, watched.start(X0), seed=0, bf16=True, **settings)
    assert autocast_seen[-1]
    assert bf16.best_return.dtype == torch.float32 and bf16.action.dtype == torch.float32
    assert torch.allclose(bf16.action, fp32.action, atol=0.05)


def test_gradient_planner_leaves_model_parameters_alone_and_needs_a_differentiable_model():
    class Learned(torch.nn.Module):
        act_spec = ActionSpec(False, 1)
        capabilities = frozenset({"reward"})

        def __init__(self):
            super().__init__()
            self.gain = torch.nn.Parameter(torch.tensor(1.0))

        def step(self, state, action):
            return state + self.gain * action

        def reward(self, state):
            return -((state[:, 0] - 0.4) ** 2)

    model = Learned()
    with torch.no_grad():
        result = gradient(model, torch.zeros(1, 1), GradientSettings(horizon=1, restarts=2, iterations=40, seed=0))
    assert result.action.item() == pytest.approx(0.4, abs=0.01)
    assert model.gain.grad is None

    class Frozen(Learned):
        def step(self, state, action):
            return (state + action).detach()

    with pytest.raises(PlanningError, match="differentiabl"):
        gradient(Frozen(), torch.zeros(1, 1), GradientSettings(horizon=1, restarts=2, iterations=3))
    with torch.inference_mode(), pytest.raises(PlanningError, match="inference_mode"):
        gradient(model, torch.zeros(1, 1), GradientSettings(horizon=1))


# ---------------------------------------------------------------------------
# settings, entry point and errors


def test_defaults_are_planet_cem_and_tdmpc2_mppi():
    c = CEMSettings()
    assert (c.horizon, c.candidates, c.elites, c.iterations) == (12, 1000, 100, 10)
    m = MPPISettings()
    assert (m.horizon, m.candidates, m.elites, m.iterations, m.min_std, m.max_std) == (3, 512, 64, 6, 0.05, 2.0)
    with pytest.raises(Exception):
        c.horizon = 5  # frozen


def test_plan_entry_point_matches_direct_calls_and_explains_mistakes():
    model = double_integrator()
    state = model.start(X0)
    direct = mppi(model, state, MPPISettings(horizon=4, candidates=50, elites=5, iterations=2, seed=7))
    via_name = plan("mppi", model, state, horizon=4, candidates=50, elites=5, iterations=2, seed=7)
    assert torch.equal(direct.action, via_name.action)
    shot = shooting(model, state, ShootingSettings(horizon=4, candidates=50, seed=7))
    assert torch.equal(shot.action, plan("shooting", model, state, horizon=4, candidates=50, seed=7).action)

    with pytest.raises(PlanningError, match="Unknown planner 'mtcs'"):
        plan("mtcs", model, state)
    with pytest.raises(PlanningError, match="no setting 'candidate'"):
        plan("cem", model, state, candidate=10)
    with pytest.raises(PlanningError, match="takes CEMSettings"):
        plan("cem", model, state, MPPISettings())

    class NoSpec:
        step, reward = Reach.step, Reach.reward

    with pytest.raises(PlanningError, match="has no `act_spec`"):
        plan("cem", NoSpec(), state)

    class Undeclared(Reach):
        capabilities = None

    with pytest.raises(CapabilityError, match="declares no `capabilities`"):
        plan("cem", Undeclared(), state)
    with pytest.raises(PlanningError, match="batch size"):
        plan("cem", DictState(model), {"deter": torch.zeros(2, 2), "stoch": torch.zeros(3, 1)})
    with pytest.raises(PlanningError, match="warm start"):
        plan("cem", model, state, warm=WarmStart(mean=torch.zeros(5, 4, 1)))
    with pytest.raises(CapabilityError, match="needs a model with value"):
        plan("cem", Reach(), torch.zeros(1, 2), use_value=True, candidates=10, elites=2, iterations=1)
    with pytest.raises(PlanningError, match="plans continuous actions but this model's are discrete; use 'shooting' or 'cem'"):
        plan("mppi", CashOut(), torch.zeros(1, 1))
    with pytest.raises(PlanningError, match="elites"):
        plan("cem", model, state, candidates=10, elites=20)
    with pytest.raises(PlanningError, match=r"reward\(state\)"):
        class WrongReward(Reach):
            def reward(self, state):
                return torch.zeros(state.shape[0], 2)

        plan("shooting", WrongReward(), torch.zeros(1, 2), candidates=10)


# ---------------------------------------------------------------------------
# colored noise


@pytest.mark.parametrize("beta", [0.0, 1.0, 2.5])
def test_colored_noise_has_unit_variance_and_the_requested_spectrum(beta):
    generator = torch.Generator().manual_seed(0)
    steps = 64
    noise = colored_noise((4000, steps), beta, generator=generator)
    assert noise.var().item() == pytest.approx(1.0, abs=0.05)
    assert noise.mean().abs().item() < 0.05
    power = torch.fft.rfft(noise, dim=-1).abs().pow(2).mean(0)[1:-1]  # drop DC and Nyquist
    freqs = torch.fft.rfftfreq(steps)[1:-1]
    x, y = freqs.log(), power.log()
    slope = ((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum()
    assert slope.item() == pytest.approx(-beta, abs=0.15)
    lag1 = (noise[:, 1:] * noise[:, :-1]).mean().item()
    assert (lag1 < 0.05) if beta == 0 else (lag1 > 0.3)


def test_categorical_candidates_follow_their_probabilities_step_by_step():
    probs = torch.tensor([[[0.7, 0.2, 0.1], [0.0, 0.5, 0.5]]])  # [B=1, H=2, K=3]
    draws = categorical_candidates(probs, 20000, generator=torch.Generator().manual_seed(0))
    assert draws.shape == (1, 20000, 2, 3)
    assert torch.equal(draws.sum(-1), torch.ones(1, 20000, 2))  # one-hot
    assert torch.allclose(draws.mean(1), probs, atol=0.015)


def test_mppi_sample_action_draws_around_the_elites():
    model = Reach()
    state = torch.tensor([[0.7, 0.0]])
    actions = torch.cat([
        plan("mppi", model, state, horizon=1, candidates=64, elites=8, iterations=3, temperature=0.01,
             sample_action=True, seed=seed).action
        for seed in range(40)
    ])
    assert actions.abs().max() <= 1.0
    assert actions.std() > 0.01  # sampled, not the deterministic mean
    assert actions.mean().item() == pytest.approx(0.7, abs=0.1)


class TwoGoals(Reach):
    """Reach where |position| = 0.7 is the goal: +0.7 and -0.7 are equally good, 0 (their mean) is worst."""

    def reward(self, state):
        return -((state[:, 1].abs() - 0.7) ** 2)


def test_mppi_elite_action_commits_to_one_goal_where_the_mean_cancels_them():
    model = TwoGoals()
    state = torch.zeros(40, 2)  # 40 start states, planned side by side with one generator
    kwargs = dict(horizon=1, candidates=256, elites=64, iterations=1, temperature=1.0, seed=3)
    mean = plan("mppi", model, state, **kwargs).action[:, 0]
    elite = plan("mppi", model, state, elite_action=True, **kwargs).action[:, 0]
    assert mean.abs().max() < 0.35                      # the weighted mean of two opposite clusters
    assert elite.abs().min() > 0.3                      # each start executes one elite, on one side
    assert elite.abs().mean().item() == pytest.approx(0.7, abs=0.1)   # near a goal
    assert (elite > 0).any() and (elite < 0).any()      # drawn by weight: both goals get picked
    # no noise is added: the executed action is exactly one elite's first action
    again = plan("mppi", model, state, elite_action=True, **kwargs).action[:, 0]
    assert torch.equal(elite, again)


class Jittered(Deterministic):
    """The policy's action plus N(0, 0.2) noise when sampled (drawn from the planner's generator)."""

    def sample(self, generator=None):
        return (self.action + 0.2 * torch.randn(self.action.shape, generator=generator)).clamp(-1.0, 1.0)


class ReachWithNoisyPrior(ReachWithPrior):
    def policy(self, states):
        return Jittered(super().policy(states).mode())


def test_sampled_policy_candidates_are_distinct_rollouts_and_mode_ones_identical():
    class Recording(ReachWithNoisyPrior):
        def step(self, state, action):
            self.actions = action
            return super().step(state, action)

    state = torch.tensor([[0.5, 0.0]])
    for sample, distinct in ((False, 1), (True, 8)):
        model = Recording()
        plan("shooting", model, state, horizon=1, candidates=9, policy_candidates=8, sample_policy=sample, seed=0)
        policy_rows = model.actions[:8, 0]
        assert len(set(policy_rows.tolist())) == distinct
        assert (policy_rows - 0.5).abs().max() < (0.8 if sample else 1e-6)   # around the policy's action 0.5
    first = Recording()
    plan("shooting", first, state, horizon=1, candidates=9, policy_candidates=8, sample_policy=True, seed=3)
    again = Recording()
    plan("shooting", again, state, horizon=1, candidates=9, policy_candidates=8, sample_policy=True, seed=3)
    assert torch.equal(first.actions, again.actions)       # the samples come from the planner's generator


# ---------------------------------------------------------------------------
# tree search through the planner contract


class SearchableTree(DecisionTree):
    """A decision tree with the value and policy capabilities tree search needs: value 0 and fixed
    per-node logits (a categorical prior)."""

    capabilities = frozenset({"reward", "value", "policy"})

    def __init__(self, rewards, choices, logits):
        super().__init__(rewards, choices)
        self.logits = logits  # [nodes, K]

    def value(self, state):
        return torch.zeros(state.shape[0])

    def policy(self, state):
        nodes = state[:, 1].long().clamp(max=self.logits.shape[0] - 1)
        return torch.distributions.Categorical(logits=self.logits[nodes])


def test_tree_search_planner_hands_its_search_settings_to_the_search():
    from reverie.planning.mcts import MCTSSettings, search
    from reverie.planning.tree_search import recurrent_fn, root_output

    choices, depth = 3, 4
    nodes = sum(choices**d for d in range(depth + 2))  # a search at max_depth still calls the model once more
    g = torch.Generator().manual_seed(0)
    model = SearchableTree(torch.rand(4, nodes, generator=g), choices, torch.randn(nodes, choices, generator=g))
    state = torch.stack([torch.arange(4.0), torch.zeros(4)], dim=1)
    counts = {}
    for transform in ("min_max", "parent_and_siblings"):
        planned = plan("mcts", model, state, num_simulations=30, max_depth=depth, q_transform=transform)
        settings = MCTSSettings(num_simulations=30, max_depth=depth, q_transform=transform)
        direct = search(recurrent_fn(model, 0.997, False), root_output(model, state), settings, explore=False)
        assert torch.equal(planned.extras["visit_counts"], direct.visit_counts)
        counts[transform] = direct.visit_counts
    assert not torch.equal(counts["min_max"], counts["parent_and_siblings"])  # the setting is not ignored


def test_capability_accessors_refuse_in_one_sentence():
    from reverie.planning.capabilities import value_head

    class PlainPrior:
        def mode(self):
            return torch.zeros(1, 3)

    class NoLogits(SearchableTree):
        def policy(self, state):
            return PlainPrior()

    model = NoLogits(torch.zeros(1, 40), 3, torch.zeros(40, 3))
    with pytest.raises(CapabilityError, match="planner 'mcts' needs the logits of a discrete policy prior, but "
                                              "NoLogits.policy returns a PlainPrior without `logits`"):
        plan("mcts", model, torch.zeros(1, 2), num_simulations=2)
    with pytest.raises(CapabilityError, match="bootstrapping needs a model with value, but DecisionTree has only"):
        value_head(DecisionTree(torch.zeros(1, 4), 3), "bootstrapping")
    with pytest.raises(CapabilityError, match=r"imagining returns \(rollout_returns\) needs a model with cont"):
        rollout_returns(DecisionTree(torch.zeros(1, 4), 3), torch.zeros(2, 2), torch.zeros(1, 2, 1, 3),
                        CEMSettings(use_cont=True))
    with pytest.raises(PlanningError, match=r"The warm start has no probs \(discrete\)"):
        WarmStart(mean=torch.zeros(1, 2, 3)).plan(discrete=True)
