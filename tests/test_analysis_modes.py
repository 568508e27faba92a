"""DMD of a model's free-running imagination: which signal it decomposes, which action it holds."""

import math

import numpy as np
import pytest
import torch

from reverie.analysis.modes import default_delays, held_action, imagined_modes
from reverie.models.base import DECODER
from reverie.specs import ActionSpec, ArraySpec

DT, PERIOD, RATE = 0.1, 2.5, -0.2


class Rotator:
    """z' = R z + b u (a damped rotation in z[:2], z[2] driven by the action); decodes z[:2] when it may."""

    obs_spec = {"vector": ArraySpec((2,), np.dtype(np.float32)), "image": ArraySpec((8, 8, 3), np.dtype(np.uint8))}
    feat_size = 3

    def __init__(self, decoder: bool, act_spec: ActionSpec, growth: float = RATE):
        w = 2 * math.pi / PERIOD * DT
        a = np.eye(3)
        a[:2, :2] = math.exp(growth * DT) * np.array([[math.cos(w), -math.sin(w)], [math.sin(w), math.cos(w)]])
        self.a = torch.tensor(a, dtype=torch.float32)
        self.act_spec = act_spec
        self.capabilities = frozenset({DECODER}) if decoder else frozenset()

    def step(self, state, action):
        push = torch.zeros(action.shape[0], 3)
        push[:, 2] = action.sum(-1)
        return {"z": state["z"] @ self.a.T + push}

    def features(self, state):
        return state["z"]

    def decode(self, state):
        z = state["z"]
        return {"vector": z[:, :2] * torch.tensor([1.0, 3.0]), "image": torch.zeros(z.shape[0], 8, 8, 3)}


def starts(n=32):
    return {"z": torch.tensor(np.random.default_rng(0).normal(size=(n, 3)), dtype=torch.float32)}


def test_a_model_with_a_decoder_is_decomposed_through_its_vector_observations():
    model = Rotator(True, ActionSpec(False, 1))
    m = imagined_modes(model, starts(), torch.ones(32, 1), horizon=40, dt=DT)
    assert m.method == "observable DMD" and m.signal == "decoded observations 'vector'"   # images skipped
    assert m.names == ("vector[0]", "vector[1]") and m.held == "zero (no input), held"
    assert m.dmd.dominant_period == pytest.approx(PERIOD, rel=1e-3)
    assert m.dmd.dominant_decay_rate == pytest.approx(RATE, rel=1e-3)
    assert m.trajectories.shape == (8, 41, 2) and m.n_states == 32


def test_a_model_without_one_is_decomposed_through_its_features():
    model = Rotator(False, ActionSpec(False, 1))
    m = imagined_modes(model, starts(), torch.zeros(32, 1), horizon=40, dt=DT, max_states=10)
    assert m.method == "latent DMD" and m.names == ("feature 0", "feature 1", "feature 2") and m.n_states == 10
    assert m.dmd.dominant_period == pytest.approx(PERIOD, rel=1e-3)


def test_continuous_actions_are_held_at_zero_and_discrete_ones_as_taken():
    taken = torch.tensor([[0.3], [-0.7]])
    zero, said = held_action(ActionSpec(False, 1), taken)
    assert torch.equal(zero, torch.zeros(1, 1)) and "zero" in said
    onehot = torch.eye(3)[[2, 0]]
    same, said = held_action(ActionSpec(True, 3), onehot)
    assert torch.equal(same, onehot) and "taken" in said
    # held as taken: the feature driven by the action grows by the action's index sum each step
    model = Rotator(False, ActionSpec(True, 3))
    m = imagined_modes(model, {"z": torch.zeros(2, 3)}, onehot, horizon=5, dt=DT)
    assert np.allclose(m.trajectories[:, -1, 2], [5.0, 5.0])


def test_a_diverging_imagination_is_one_sentence():
    model = Rotator(True, ActionSpec(False, 1), growth=800.0)
    with pytest.raises(ValueError, match="every imagined trajectory left the finite numbers"):
        imagined_modes(model, starts(4), torch.zeros(4, 1), horizon=64, dt=DT)


def test_delays_embed_few_dimensions_in_about_thirty_two():
    assert default_delays(3, 65) == 11 and default_delays(64, 65) == 1 and default_delays(1, 20) == 5
