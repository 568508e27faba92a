"""Open-loop error against the horizon: zero for the true simulator, the hand-computed growth for a biased
one, realised returns by hand, the continuation score by hand, and the no-decoder path on MuZero's model."""

import numpy as np
import pytest
import torch

from reverie.analysis.open_loop import _realised_returns, open_loop_error, windows_of
from reverie.models.base import CONT, DECODER, REWARD, VALUE, WorldModel
from reverie.models.muzero import MuZeroModel, MuZeroModelConfig
from reverie.specs import ActionSpec, ArraySpec

THETA = 0.3
A = 0.95 * np.array([[np.cos(THETA), -np.sin(THETA)], [np.sin(THETA), np.cos(THETA)]])
B = np.array([[0.0], [0.5]])
C = np.array([1.0, -2.0])          # reward for arriving in x: C . x
GAMMA = 0.9


class LinearModel:
    """A hand-written world model of x' = A x + B u (+ bias), fully observed, reward C . x, never ending.

    With ``value`` it knows the zero-action value ``C A (I - gamma A)^-1 x``."""

    def __init__(self, bias=(0.0, 0.0), capabilities=(REWARD, DECODER, CONT), value=False):
        self.obs_spec = {"vector": ArraySpec((2,), np.dtype(np.float32))}
        self.act_spec = ActionSpec(False, 1)
        self.feat_size = 2
        self.capabilities = frozenset(capabilities) | ({VALUE} if value else set())
        self.A, self.B = torch.tensor(A), torch.tensor(B)
        self.bias, self.C = torch.tensor(bias, dtype=torch.float64), torch.tensor(C)
        self.V = torch.tensor(C @ A @ np.linalg.inv(np.eye(2) - GAMMA * A))

    def initial(self, batch):
        return {"x": torch.zeros(batch, 2, dtype=torch.float64)}

    def observe(self, obs, action, is_first, state=None):
        x = obs["vector"].double()
        return {"x": x}, {"x": x[:, -1]}

    def step(self, state, action):
        return {"x": state["x"] @ self.A.T + action.double() @ self.B.T + self.bias}

    def features(self, state):
        return state["x"]

    def reward(self, state):
        return state["x"] @ self.C

    def cont(self, state):
        return torch.ones(state["x"].shape[:-1], dtype=torch.float64)

    def decode(self, state):
        return {"vector": state["x"]}

    def value(self, state):
        return state["x"] @ self.V


def episodes(n=3, length=40, seed=0, zero_actions=False, terminal_last=False):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        x = rng.normal(size=2)
        u = np.zeros((length, 1)) if zero_actions else rng.uniform(-1, 1, (length, 1))
        u[0] = 0.0
        xs, rewards = [x], [0.0]
        for t in range(1, length):
            x = A @ x + B @ u[t]
            xs.append(x)
            rewards.append(float(C @ x))
        term = np.zeros(length, bool)
        term[-1] = terminal_last
        out.append({"vector": np.array(xs, np.float32).astype(np.float64), "action": u.astype(np.float32),
                    "reward": np.array(rewards), "is_terminal": term})
    return out


def test_the_hand_written_model_keeps_the_contract():
    assert isinstance(LinearModel(), WorldModel)


def test_windows_cover_each_episode_and_end_at_its_last_step():
    assert windows_of([20, 5], context=3, horizon=6, stride=5) == [(0, 3), (0, 8), (0, 13), (0, 14)]
    assert windows_of([20], context=3, horizon=6, max_windows=2) == [(0, 3), (0, 14)]


def test_the_true_simulator_has_zero_open_loop_error():
    r = open_loop_error(LinearModel(), episodes(), context=3, horizon=10, stride=4)
    assert r.n_windows > 10 and not r.skipped.get("observations")
    np.testing.assert_allclose(r.obs_mse["vector"], 0.0, atol=1e-10)
    np.testing.assert_allclose(r.obs_mse_per_dim["vector"], 0.0, atol=1e-10)
    np.testing.assert_allclose(r.reward_mse, 0.0, atol=1e-10)
    np.testing.assert_allclose(r.latent_distance, 0.0, atol=1e-6)
    np.testing.assert_allclose(r.cont_brier, 0.0)
    assert r.real["vector"].shape == (r.n_windows, 10, 2) == r.predicted["vector"].shape


def test_a_biased_model_shows_the_hand_computed_error_growth():
    b = np.array([0.1, -0.2])
    r = open_loop_error(LinearModel(bias=b), episodes(), context=2, horizon=8)
    # the error after h imagined steps is e_h = sum_{k<h} A^k b, the same in every window
    e = np.array([sum(np.linalg.matrix_power(A, k) @ b for k in range(h)) for h in range(1, 9)])
    np.testing.assert_allclose(r.obs_mse_per_dim["vector"], e ** 2, rtol=1e-5, atol=1e-12)
    np.testing.assert_allclose(r.obs_mse["vector"], (e ** 2).mean(1), rtol=1e-5)
    np.testing.assert_allclose(r.reward_mse, (e @ C) ** 2, rtol=1e-5)
    np.testing.assert_allclose(r.latent_distance, np.linalg.norm(e, axis=1), rtol=1e-5)
    assert np.all(np.diff(r.latent_distance_relative) > 0)


def test_realised_returns_by_hand():
    g, tail = _realised_returns(np.array([0.0, 1.0, 2.0, 3.0]), terminal_last=True, bootstrap=99.0, discount=0.5)
    np.testing.assert_allclose(g, [1 + 0.5 * 2 + 0.25 * 3, 2 + 0.5 * 3, 3, 0])
    np.testing.assert_allclose(tail, 0.0)
    g, tail = _realised_returns(np.array([0.0, 1.0, 2.0]), terminal_last=False, bootstrap=10.0, discount=0.5)
    np.testing.assert_allclose(g, [1 + 0.5 * 2 + 0.25 * 10, 2 + 0.5 * 10, 10])
    np.testing.assert_allclose(tail, [0.25, 0.5, 1.0])


def test_an_exact_value_matches_the_bootstrapped_realised_return():
    # zero actions, truncated episodes: the bootstrap at the end is the exact value, so every target is exact
    eps = episodes(zero_actions=True)
    r = open_loop_error(LinearModel(value=True), eps, context=2, horizon=6, discount=GAMMA)
    np.testing.assert_allclose(r.value_mse, 0.0, atol=1e-8)
    assert 0 < r.value_bootstrap_weight < 1
    # and a value off by a constant 1 everywhere has value MSE 1
    model = LinearModel(value=True)
    model.value = lambda state: state["x"] @ model.V + 1.0
    r = open_loop_error(model, eps, context=2, horizon=6, discount=GAMMA)
    # the bootstrap moves by 1 too, so target_t moves by discount^(T-1-t): the error is 1 - discount^(T-1-t)
    tails = np.array([[GAMMA ** (40 - 1 - (s + h)) for h in range(6)] for _, s in windows_of([40] * 3, 2, 6)])
    np.testing.assert_allclose(r.value_mse, ((1 - tails) ** 2).mean(0), rtol=1e-6)


def test_continuation_calibration_by_hand():
    eps = episodes(n=1, length=20, terminal_last=True)
    r = open_loop_error(LinearModel(), eps, context=2, horizon=5, stride=5)
    pairs = windows_of([20], 2, 5, 5)             # starts 2, 7, 12, 15: only the last ends on the terminal
    assert pairs == [(0, 2), (0, 7), (0, 12), (0, 15)]
    np.testing.assert_allclose(r.cont_pred_mean, 1.0)
    np.testing.assert_allclose(r.cont_real_mean, [1, 1, 1, 1, 0.75])
    np.testing.assert_allclose(r.cont_brier, [0, 0, 0, 0, 0.25])


def test_only_the_declared_capabilities_are_asked_for():
    model = LinearModel(capabilities=(REWARD,))
    model.decode = model.cont = None              # asking for them would fail
    r = open_loop_error(model, episodes(), context=2, horizon=4)
    assert "decoder" in r.skipped["observations"] and "cont" in r.skipped["continuation"]
    assert r.obs_mse == {} and r.cont_brier is None and r.value_mse is None
    np.testing.assert_allclose(r.reward_mse, 0.0, atol=1e-10)


def test_too_short_episodes_are_one_sentence():
    with pytest.raises(ValueError, match="long enough"):
        open_loop_error(LinearModel(), episodes(length=5), context=3, horizon=5)


def test_muzero_without_a_decoder_gets_reward_value_and_latent_parts():
    torch.manual_seed(0)
    model = MuZeroModel({"vector": ArraySpec((3,), np.dtype(np.float32))}, ActionSpec(True, 2),
                        MuZeroModelConfig(latent=8, units=16, layers=1, bins=21)).eval()
    rng = np.random.default_rng(0)
    eps = []
    for length in (30, 25):
        a = np.eye(2, dtype=np.float32)[rng.integers(0, 2, length)]
        eps.append({"vector": rng.normal(size=(length, 3)).astype(np.float32), "action": a,
                    "reward": rng.normal(size=length), "is_terminal": np.arange(length) == length - 1})
    r = open_loop_error(model, eps, context=1, horizon=6, discount=0.97)
    assert "no decoder" in r.skipped["observations"] and r.obs_mse == {}
    for series in (r.reward_mse, r.value_mse, r.latent_distance, r.latent_distance_relative):
        assert series.shape == (6,) and np.all(np.isfinite(series))
    assert r.latent_distance.max() > 0          # an untrained model's dynamics do not match its representation
    assert r.value_bootstrap_weight == 0.0      # every episode terminated: no bootstrap


class StillImageModel:
    """Pixels that never change, imagined with a constant brightness offset (in pixel units)."""

    capabilities = frozenset({DECODER})

    def __init__(self, offset):
        self.obs_spec = {"image": ArraySpec((4, 4, 3), np.dtype(np.uint8))}
        self.act_spec = ActionSpec(False, 1)
        self.feat_size = 48
        self.offset = offset

    def initial(self, batch):
        return torch.zeros(batch, 4, 4, 3)

    def observe(self, obs, action, is_first, state=None):
        x = obs["image"].float()
        return x, x[:, -1]

    def step(self, state, action):
        return state + self.offset

    def features(self, state):
        return state.flatten(-3)

    def decode(self, state):
        return {"image": state}


def test_pixels_get_mse_and_psnr_by_hand():
    frames = np.full((12, 4, 4, 3), 100, np.uint8)
    eps = [{"image": frames, "action": np.zeros((12, 1), np.float32), "reward": np.zeros(12)}]
    r = open_loop_error(StillImageModel(25.5), eps, context=2, horizon=3)
    # after h steps every pixel is off by 25.5 h, i.e. 0.1 h of the [0, 1] range
    np.testing.assert_allclose(r.obs_mse["image"], [(0.1 * h) ** 2 for h in (1, 2, 3)], rtol=1e-6)
    np.testing.assert_allclose(r.psnr["image"], [-20 * np.log10(0.1 * h) for h in (1, 2, 3)], rtol=1e-6)
    assert r.real == {} and r.obs_mse_per_dim == {}      # images are not kept as trajectories
    exact = open_loop_error(StillImageModel(0.0), eps, context=2, horizon=3)
    assert np.all(exact.obs_mse["image"] == 0) and np.all(np.isinf(exact.psnr["image"]))
