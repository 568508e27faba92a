"""The paper's ablations as options of the cswm model: no GNN (no edge model), one slot (K = 1) and the
reconstruction baseline (a decoder from the slots, trained in pixel space), each built from its preset and
trained a step; the decoder learns to reconstruct shapes images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reverie.agents.cswm import CSWM, CSWMConfig, transitions_of
from reverie.api import make_config
from reverie.config import ConfigError
from reverie.envs.shapes import Shapes
from reverie.models.base import DECODER, TRANSITION, capabilities_of
from reverie.models.cswm import CSWMModel, CSWMModelConfig
from reverie.specs import ActionSpec, ArraySpec

SPEC = {"image": ArraySpec((50, 50, 3), np.dtype(np.uint8))}


def shapes_chunk(steps: int, seed: int = 0) -> dict[str, np.ndarray]:
    """One random-policy episode of the shapes world as a replay chunk."""
    env, rng = Shapes(), np.random.default_rng(seed)
    frames, actions = [env.reset(seed=seed)[0]], [0]
    for _ in range(steps - 1):
        actions.append(int(rng.integers(20)))
        frames.append(env.step(actions[-1])[0])
    return {"image": np.stack(frames), "is_first": np.arange(steps) == 0,
            "action": np.eye(20, dtype=np.float32)[actions]}


def agent_of(preset: str) -> CSWM:
    cfg = make_config("cswm", preset, ["model.hidden=16", "model.channels=4"])
    assert isinstance(cfg, CSWMConfig)
    torch.manual_seed(0)
    agent = CSWM(SPEC, ActionSpec(True, 20), cfg)
    agent._data = transitions_of([shapes_chunk(12)], ["image"])
    return agent


def one_step(agent: CSWM) -> dict[str, float]:
    before = [p.detach().clone() for p in agent.cswm.parameters()]
    assert agent._data is not None
    metrics = agent.update_on(agent._data, torch.arange(8), torch.Generator().manual_seed(0))
    assert np.isfinite(metrics["cswm/loss"]) and agent.gradient_steps == 1
    assert any(not torch.equal(a, b) for a, b in zip(before, agent.cswm.parameters()))
    return metrics


def test_no_gnn_has_no_edge_model_and_trains_a_step():
    agent = agent_of("default-no-gnn")
    assert agent.cfg.model.interactions is False and agent.cswm.gnn.edge is None
    assert not [n for n, _ in agent.cswm.named_parameters() if "edge" in n]
    with_gnn = agent_of("default")
    assert [n for n, _ in with_gnn.cswm.named_parameters() if "edge" in n]
    one_step(agent)


def test_one_slot_encodes_the_whole_image_into_one_embedding_and_trains_a_step():
    agent = agent_of("default-k1")
    assert agent.cfg.model.slots == 1 and agent.cfg.model.embedding == 10
    assert agent._data is not None
    z = agent.cswm.encode({"image": agent._data.frames["image"][:4]})
    assert z.shape == (4, 1, 10)
    # the one slot reads the whole action (20 = 1 x 20), and no slot sends it a message
    assert agent.cswm.slot_actions(torch.eye(20)[:2]).shape == (2, 1, 20)
    one_step(agent)


def test_the_reconstruction_baseline_declares_a_decoder_and_trains_a_step_without_the_hinge():
    agent = agent_of("default-ae")
    assert capabilities_of(agent.cswm) == {TRANSITION, DECODER}
    metrics = one_step(agent)
    assert {"cswm/reconstruction", "cswm/prediction"} <= set(metrics) and "cswm/hinge" not in metrics
    assert metrics["cswm/loss"] == pytest.approx(metrics["cswm/reconstruction"] + metrics["cswm/prediction"],
                                                 rel=1e-6)
    with torch.no_grad():
        image = agent.cswm.decode({"objects": torch.zeros(3, 5, 2)})["image"]
    assert image.shape == (3, 50, 50, 3) and 0 <= float(image.min()) and float(image.max()) <= 255


def test_the_decoder_learns_to_reconstruct_shapes_images():
    torch.manual_seed(0)
    model = CSWMModel(SPEC, ActionSpec(True, 20), CSWMModelConfig(hidden=32, channels=8, objective="decoder"))
    chunk = shapes_chunk(9, seed=3)
    obs = {"image": torch.as_tensor(chunk["image"][:-1])}
    nxt = {"image": torch.as_tensor(chunk["image"][1:])}
    action = torch.as_tensor(chunk["action"][1:])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(150):
        loss, terms = model.loss(obs, action, nxt)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(terms["reconstruction"].detach()))
    # per image: 7,500 binary cross-entropies; the loss falls fivefold, and below that of the best uniform
    # grey (the mean intensity everywhere), so the slots tell the decoder where the coloured objects are
    assert losses[-1] < 0.2 * losses[0]
    x = obs["image"].float() / 255
    grey = torch.nn.functional.binary_cross_entropy(x.mean().expand_as(x), x, reduction="sum") / len(x)
    assert losses[-1] < 0.6 * float(grey)


def test_the_decoder_is_refused_for_extractors_it_does_not_invert():
    with pytest.raises(ConfigError, match="decoder for the small object extractor only"):
        CSWMModel(SPEC, ActionSpec(True, 20), CSWMModelConfig(extractor="large", objective="decoder"))
