"""C-SWM's model: the hinge loss by hand, the GNN's slot-permutation equivariance, the world-model contract, and
bad configurations answered in one sentence."""

import numpy as np
import pytest
import torch

from reverie.config import ConfigError
from reverie.models.base import CapabilityError, WorldModel, capabilities_of, imagine
from reverie.models.cswm import CSWMModel, CSWMModelConfig, TransitionGNN, contrastive_loss, energy
from reverie.planning import plan
from reverie.specs import ActionSpec, ArraySpec

IMAGE = {"image": ArraySpec((50, 50, 3), np.dtype(np.uint8))}
SMALL = CSWMModelConfig(hidden=16, channels=4)


def tiny(cfg=SMALL, act=ActionSpec(True, 20), obs=IMAGE, seed=0):
    torch.manual_seed(seed)
    return CSWMModel(obs, act, cfg).eval()


def images(*lead, seed=0):
    return torch.as_tensor(np.random.default_rng(seed).integers(0, 256, (*lead, 50, 50, 3), dtype=np.uint8))


def test_the_energy_is_the_mean_over_slots_of_half_the_squared_distance_over_sigma_squared():
    x = torch.tensor([[[0.0, 0.0], [1.0, 1.0]]])
    y = torch.tensor([[[3.0, 4.0], [1.0, 1.0]]])
    assert float(energy(x, y, sigma=1.0)) == pytest.approx((25 / 2 + 0) / 2)
    assert float(energy(x, y, sigma=0.5)) == pytest.approx((25 * 2 + 0) / 2)


def test_the_hinge_loss_equals_its_hand_computed_value_on_a_two_sample_batch():
    z = torch.tensor([[[0.0], [1.0]], [[2.0], [0.0]]])              # [B=2, K=2, D=1]
    predicted = torch.tensor([[[0.5], [1.0]], [[2.0], [1.0]]])
    z_next = torch.tensor([[[0.0], [1.0]], [[2.0], [0.0]]])
    negative = z.flip(0)                                             # each sample's negative is the other one
    # positive energies, sigma = 1: sample 0: (0.25 + 0) / 2 / 2 = 0.0625; sample 1: (0 + 1) / 2 / 2 = 0.25
    # negative energy of both: (4 + 1) / 2 / 2 = 1.25; hinge at margin 2: 0.75
    loss, terms = contrastive_loss(z, predicted, z_next, negative, sigma=1.0, margin=2.0)
    assert float(terms["positive"]) == pytest.approx((0.0625 + 0.25) / 2)
    assert float(terms["hinge"]) == pytest.approx(0.75)
    assert float(loss) == pytest.approx(0.15625 + 0.75)
    # at margin 1 the negatives are already far enough apart: no hinge term
    loss, terms = contrastive_loss(z, predicted, z_next, negative, sigma=1.0, margin=1.0)
    assert float(terms["hinge"]) == 0.0 and float(loss) == pytest.approx(0.15625)


def test_the_models_loss_is_that_hinge_on_its_own_encodings_with_the_batch_shuffled():
    model = tiny()
    obs, nxt = images(6), images(6, seed=1)
    action = torch.nn.functional.one_hot(torch.arange(6) * 3, 20).float()
    loss, terms = model.loss({"image": obs}, action, {"image": nxt}, torch.Generator().manual_seed(4))
    z, z_next = model.encode({"image": obs}), model.encode({"image": nxt})   # eval mode: the same BatchNorm
    perm = torch.randperm(6, generator=torch.Generator().manual_seed(4))
    expected, _ = contrastive_loss(z, model.next(z, action), z_next, z[perm], 0.5, 1.0)
    torch.testing.assert_close(loss, expected)
    assert set(terms) == {"positive", "hinge", "slot_spread"}


@pytest.mark.parametrize("mode", ["factored", "copy"])
def test_the_gnn_is_equivariant_to_permuting_the_slots(mode):
    torch.manual_seed(0)
    K, D, A = 5, 3, 4
    gnn = TransitionGNN(D, A, hidden=32, interactions=True)
    z = torch.randn(7, K, D)
    slot_actions = (torch.randn(7, K, A) if mode == "factored" else torch.randn(7, 1, A).expand(7, K, A))
    perm = torch.tensor([3, 0, 4, 1, 2])
    out = gnn(z, slot_actions)
    torch.testing.assert_close(gnn(z[:, perm], slot_actions[:, perm]), out[:, perm])
    # and the slots do interact: moving slot 0 changes what slot 1 does, unless the edges are dropped
    moved = z.clone()
    moved[:, 0] += 1.0
    assert not torch.allclose(gnn(moved, slot_actions)[:, 1], out[:, 1])
    alone = TransitionGNN(D, A, hidden=32, interactions=False)
    torch.testing.assert_close(alone(moved, slot_actions)[:, 1], alone(z, slot_actions)[:, 1])


def test_factored_actions_reach_only_their_object_and_copied_ones_reach_every_slot():
    model = tiny()
    action = torch.nn.functional.one_hot(torch.tensor([4 * 2 + 1]), 20).float()      # object 2, direction 1
    blocks = model.slot_actions(action)
    assert blocks.shape == (1, 5, 4) and blocks[0, 2, 1] == 1 and blocks.sum() == 1
    copy = tiny(CSWMModelConfig(hidden=16, channels=4, action="copy"), act=ActionSpec(True, 6))
    blocks = copy.slot_actions(torch.eye(6)[[3]])
    assert blocks.shape == (1, 5, 6) and torch.equal(blocks[0], torch.eye(6)[[3]].expand(5, 6))


def test_the_model_implements_the_contract_and_declares_only_a_transition():
    model = tiny()
    assert isinstance(model, WorldModel) and capabilities_of(model) == {"transition"} and model.feat_size == 10
    obs = images(2, 3)
    is_first = torch.tensor([[True, False, False]] * 2)
    with torch.no_grad():
        states, last = model.observe({"image": obs}, torch.zeros(2, 3, 20), is_first, model.initial(2))
        assert states["objects"].shape == (2, 3, 5, 2) and model.features(states).shape == (2, 3, 10)
        torch.testing.assert_close(last["objects"], model.encode({"image": obs[:, -1]}))   # not recurrent
        actions = torch.nn.functional.one_hot(torch.tensor([[1, 5, 9]] * 2), 20).float()
        rolled = imagine(model, last, actions)
        z = last["objects"]
        for t in range(3):
            z = z + model.gnn(z, model.slot_actions(actions[:, t]))
        torch.testing.assert_close(rolled["objects"][:, -1], z)
        flat, f = model.transition(last, actions[:, 0])
        torch.testing.assert_close(f(flat), model.features(model.step(last, actions[:, 0])))
        _, g = model.transition(last, actions[0, 0])                # one action row serves any number of rows
        assert g(flat).shape == (2, 10) and g(flat[:1]).shape == (1, 10)
    with pytest.raises(CapabilityError, match="needs a model with reward, but CSWMModel has only transition"):
        plan("cem", model, last, horizon=2, candidates=8, elites=2, iterations=1)


def test_object_maps_come_one_per_slot_at_the_extractors_resolution():
    for size, side in (("small", 5), ("medium", 10), ("large", 50)):
        model = tiny(CSWMModelConfig(hidden=8, channels=2, extractor=size))
        with torch.no_grad():
            maps = model.object_maps({"image": images(3)})
        assert maps.shape == (3, 5, side, side) and maps.min() >= 0 and maps.max() <= 1
        assert model.map_size == side * side


def test_bad_configurations_are_one_sentence():
    with pytest.raises(ConfigError, match=r"C-SWM finds objects in images, but the observations are \['vector'\] "
                                          r"\(no images\); use --obs pixels"):
        tiny(obs={"vector": ArraySpec((4,), np.dtype(np.float32))})
    with pytest.raises(ConfigError, match=r"image sides must be multiples of 10; got 64 x 64 \(set run.image_size\)"):
        tiny(obs={"image": ArraySpec((64, 64, 3), np.dtype(np.uint8))})
    with pytest.raises(ConfigError, match=r"model.slots=3 objects .* actions have 20 entries; set model.slots to a "
                                          r"divisor of 20 or model.action=copy"):
        tiny(CSWMModelConfig(slots=3, hidden=8, channels=2))
    with pytest.raises(ConfigError, match="CSWMModelConfig.sigma must be above 0"):
        CSWMModelConfig(sigma=0.0)
