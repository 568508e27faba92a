"""The `transition` capability and the spectrum of a model's learned transition."""

import numpy as np
import pytest
import torch

from reverie.analysis import model_spectrum
from reverie.models import RSSMWorldModel, WorldModelConfig
from reverie.models.base import REWARD, TRANSITION, CapabilityError, transition_map
from reverie.models.muzero import MuZeroModel, MuZeroModelConfig
from reverie.models.rssm import RSSMConfig
from reverie.specs import ActionSpec, ArraySpec


class LinearModel:
    """z' = A z + B u: a hand-written model of a known system, declaring only what it has."""

    act_spec = ActionSpec(False, 1)
    capabilities = frozenset({TRANSITION})

    def __init__(self, a: np.ndarray):
        self.a = torch.tensor(a, dtype=torch.float64)
        self.b = torch.ones(a.shape[0], 1, dtype=torch.float64)

    def transition(self, state, action):
        return state["z"], transition_map(lambda z, u: z @ self.a.T + u @ self.b.T, action)


def test_the_spectrum_of_a_known_linear_model_is_exact():
    angle, radius = 2 * np.pi / 40, 0.95
    block = radius * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    a = np.zeros((4, 4))
    a[:2, :2], a[2, 2], a[3, 3] = block, 0.5, -0.3
    basis = np.random.default_rng(0).normal(size=(4, 4))
    a = basis @ a @ np.linalg.inv(basis)
    model = LinearModel(a)
    z = torch.tensor(np.random.default_rng(1).normal(size=(16, 4)))
    summary = model_spectrum(model, {"z": z}, torch.zeros(1, 1, dtype=torch.float64), dt=0.05)
    expected = sorted(np.linalg.eigvals(a), key=lambda x: -abs(x))
    assert np.allclose(summary.eigenvalues[0], expected, atol=1e-8)
    assert np.allclose(summary.dominant_period, 40 * 0.05) and np.allclose(summary.spectral_radius, 0.95)


def rssm_model(latent):
    cfg = WorldModelConfig(rssm=RSSMConfig(deter=16, hidden=16, stoch=4, classes=4, latent=latent), units=16,
                           layers=1)
    torch.manual_seed(0)
    return RSSMWorldModel({"vector": ArraySpec((3,), np.float32)}, ActionSpec(False, 2), cfg)


@pytest.mark.parametrize("latent", ["categorical", "gaussian"])
def test_the_rssm_transition_is_the_mean_field_prior_step_and_its_jacobian_is_right(latent):
    wm = rssm_model(latent)
    assert TRANSITION in wm.capabilities
    state = wm.initial(5)
    state = wm.step(state, torch.eye(2)[torch.tensor([0, 1, 0, 1, 1])])
    action = torch.tensor([[1.0, 0.0]])
    z, f = wm.transition(state, action)
    assert torch.equal(z, state["deter"])
    assert torch.allclose(f(z), wm.rssm.mean_step(z, action.expand(5, -1)))
    assert model_spectrum(wm, state, action).eigenvalues.shape == (5, 16)
    # the eigenvalues against those of a central-difference Jacobian at the first state (in float64)
    wm.double()
    state, action = {k: v.double() for k, v in state.items()}, action.double()
    summary = model_spectrum(wm, state, action)
    z, f = wm.transition(state, action)
    z0, eps = z[:1], 1e-6
    fd = torch.stack([(f(z0 + eps * e) - f(z0 - eps * e))[0] / (2 * eps) for e in torch.eye(16).double()], 1)
    assert np.allclose(sorted(np.abs(np.linalg.eigvals(fd.detach().numpy())))[::-1],
                       np.abs(summary.eigenvalues[0]), atol=1e-6)
    assert summary.dim == 16 and summary.eigenvalues.shape == (5, 16)


def test_muzero_declares_its_dynamics_and_a_model_without_transition_is_named():
    cfg = MuZeroModelConfig(latent=8, units=16, layers=1)
    model = MuZeroModel({"vector": ArraySpec((3,), np.float32)}, ActionSpec(True, 2), cfg)
    state = model.initial(3)
    action = torch.eye(2)[:1]
    z, f = model.transition(state, action)
    assert torch.equal(f(z), model.recurrent(z, action.expand(3, -1))[0])
    assert model_spectrum(model, state, action).dim == 8

    class RewardOnly(LinearModel):
        capabilities = frozenset({REWARD})

    with pytest.raises(CapabilityError, match="spectral analysis of the learned transition needs a model with "
                                              "transition, but RewardOnly has only reward"):
        model_spectrum(RewardOnly(np.eye(2)), {"z": torch.zeros(1, 2)}, torch.zeros(1, 1))
