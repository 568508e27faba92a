"""The latent objective for the RSSM world model: no decoder, a stop-gradient embedding target, learning."""

import numpy as np
import pytest
import torch

from reverie.cli import main
from reverie.models import Batch, RSSMConfig, RSSMWorldModel, WorldModelConfig
from reverie.models.base import CapabilityError, DECODER, has, require
from reverie.models.world_model import latent_prediction_loss, loss_scales, variance_hinge
from reverie.specs import ActionSpec, ArraySpec

SMALL = RSSMConfig(deter=16, hidden=16, stoch=4, classes=4)
OBS = {"vector": ArraySpec((3,), np.float32)}


def _batch(wm, rng, b=4, t=8):
    data = {"vector": rng.normal(size=(b, t, 3)).astype(np.float32),
            "action": rng.uniform(-1, 1, size=(b, t, 1)).astype(np.float32),
            "reward": rng.normal(size=(b, t)).astype(np.float32),
            "is_first": np.zeros((b, t), bool), "is_last": np.zeros((b, t), bool),
            "is_terminal": np.zeros((b, t), bool)}
    data["is_first"][:, 0] = True
    return Batch.build(data, wm.obs_spec, wm.act_spec)


def test_the_loss_is_zero_for_an_exact_prediction_of_any_scale_and_its_target_gets_no_gradient():
    target = torch.randn(5, 7, requires_grad=True)
    predicted = (3.0 * target).detach().requires_grad_(True)    # same direction, other length
    loss = latent_prediction_loss(predicted, target)
    assert loss.shape == (5,) and torch.allclose(loss, torch.zeros(5), atol=1e-6)
    other = torch.randn(5, 7, requires_grad=True)
    loss = latent_prediction_loss(other, target).sum()
    loss.backward()
    assert target.grad is None and other.grad is not None and other.grad.abs().sum() > 0
    # hand value: orthogonal unit vectors are sqrt(2) apart
    e1, e2 = torch.eye(2)
    assert float(latent_prediction_loss(e1[None], e2[None])) == pytest.approx(2.0)


@pytest.mark.parametrize("objective, keys, decoder", [
    ("reconstruction", {"rec"}, True), ("latent", {"latent"}, False), ("both", {"rec", "latent"}, True)])
def test_each_objective_has_its_loss_terms_and_declares_a_decoder_only_when_it_has_one(objective, keys, decoder):
    torch.manual_seed(0)
    wm = RSSMWorldModel(OBS, ActionSpec(False, 1), WorldModelConfig(rssm=SMALL, units=16, layers=1,
                                                                    objective=objective))
    losses, metrics, _, _ = wm.loss(_batch(wm, np.random.default_rng(0)))
    assert set(losses) == keys | {"reward", "cont", "dyn", "rep"}
    assert set(losses) <= set(loss_scales(wm.cfg))
    assert has(wm, DECODER) == decoder and (wm.decoder is not None) == decoder
    if not decoder:
        assert not any(name.startswith("decoder") for name, _ in wm.named_parameters())
        with pytest.raises(CapabilityError, match="decoder"):
            require(wm, [DECODER], "drawing a dream")
    if "latent" in keys:   # the term is the loss of the predictor on the prior's features, redone by hand
        batch = _batch(wm, np.random.default_rng(0))
        with torch.no_grad():
            torch.manual_seed(1)
            losses, _, _, _ = wm.loss(batch)
            torch.manual_seed(1)                                    # the same posterior and prior draws
            post, _ = wm.observe(batch.obs, batch.action, batch.is_first)
            prior = wm.rssm.prior(post["deter"])
            expected = latent_prediction_loss(wm.predictor(wm.features(prior)), wm.embed(batch.obs))
        assert losses["latent"].shape == batch.reward.shape
        torch.testing.assert_close(losses["latent"], expected)


def test_the_latent_objective_learns_to_predict_the_next_embedding():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    wm = RSSMWorldModel(OBS, ActionSpec(False, 1), WorldModelConfig(rssm=SMALL, units=32, layers=1,
                                                                    objective="latent", lr=1e-3))
    opt = torch.optim.Adam(wm.parameters(), lr=1e-3)

    def batch():   # x' = 0.9 R x + 0.5 a, a rotation: predictable from the past
        b, t = 8, 12
        x = np.zeros((b, t, 3), np.float32)
        a = rng.uniform(-1, 1, size=(b, t, 1)).astype(np.float32)
        x[:, 0] = rng.normal(size=(b, 3))
        c, s = np.cos(0.4), np.sin(0.4)
        rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]], np.float32) * 0.9
        for i in range(1, t):
            x[:, i] = x[:, i - 1] @ rot.T + 0.5 * a[:, i]
        data = {"vector": x, "action": a, "reward": x[..., 0].copy(), "is_first": np.zeros((b, t), bool),
                "is_last": np.zeros((b, t), bool), "is_terminal": np.zeros((b, t), bool)}
        data["is_first"][:, 0] = True
        return Batch.build(data, wm.obs_spec, wm.act_spec)

    scales = loss_scales(wm.cfg)
    first = None
    for _ in range(150):
        losses, _, _, _ = wm.loss(batch())
        if first is None:
            first = {k: float(v.detach().mean()) for k, v in losses.items()}
        opt.zero_grad()
        sum(scales[k] * v.mean() for k, v in losses.items()).backward()
        opt.step()
    with torch.no_grad():
        last = {k: float(v.mean()) for k, v in wm.loss(batch())[0].items()}
    assert last["latent"] < 0.5 * first["latent"]
    assert last["reward"] < 0.5 * first["reward"]
    # not collapsed: different observations keep different embeddings
    with torch.no_grad():
        emb = wm.embed({"vector": torch.randn(64, 3)})
    assert float(torch.nn.functional.normalize(emb, dim=-1).std(0).mean()) > 0.01


def test_dreamer_trains_without_a_decoder_from_the_command_line(tmp_path, capsys):
    run_dir = tmp_path / "latent"
    assert main(["train", "--preset", "tiny", "--run-dir", str(run_dir), "--steps", "120",
                 "model.objective=latent"]) == 0
    files = {p.name for p in run_dir.iterdir()}
    assert "dream.png" not in files and "learning_curve.png" in files
    assert main(["eval", str(run_dir), "--episodes", "1", "--planner", "cem"]) == 0
    assert main(["dream", str(run_dir)]) == 2
    assert "decoder" in capsys.readouterr().err


def test_without_a_guard_the_target_gets_gradient_too():
    target = torch.randn(5, 7, requires_grad=True)
    latent_prediction_loss(torch.randn(5, 7), target, stop_gradient=False).sum().backward()
    assert target.grad is not None and target.grad.abs().sum() > 0


def test_the_variance_term_by_hand():
    rng = np.random.default_rng(0)
    # columns of spread 0, 0.5 and 2 over 4 positions: unbiased variances 0, 1/3 and 16/3
    x = torch.tensor([[0.0, 0.5, 2.0], [0.0, -0.5, -2.0], [0.0, 0.5, 2.0], [0.0, -0.5, -2.0]])
    var = x.var(0)
    expected = ((1 - torch.sqrt(var + 1e-4)).clamp(min=0)).mean()
    assert float(variance_hinge(x)) == pytest.approx(float(expected))
    assert float(variance_hinge(x)) == pytest.approx(((1 - 0.01) + (1 - np.sqrt(1 / 3 + 1e-4))) / 3, abs=1e-6)
    wide = torch.as_tensor(rng.normal(0, 3, size=(2, 500, 4)), dtype=torch.float32)   # [B, T, E]
    assert float(variance_hinge(wide)) == 0.0


def test_the_ema_target_encoder_moves_by_exactly_its_decay_per_update_and_is_the_target():
    from reverie.agents.rssm_update import rssm_update

    torch.manual_seed(0)
    cfg = WorldModelConfig(rssm=SMALL, units=16, layers=1, objective="latent", latent_target="ema",
                           latent_target_decay=0.9, latent_variance=0.5)
    wm = RSSMWorldModel(OBS, ActionSpec(False, 1), cfg)
    assert wm.target_encoder is not None
    assert not any(p.requires_grad for p in wm.target_encoder.parameters())
    before = [p.detach().clone() for p in wm.target_encoder.parameters()]
    opt = torch.optim.Adam([p for p in wm.parameters() if p.requires_grad], lr=1e-2)
    batch = _batch(wm, np.random.default_rng(0))
    losses, _, _, _ = wm.loss(batch)
    assert set(losses) == {"latent", "variance", "reward", "cont", "dyn", "rep"}
    rssm_update(wm, batch, opt, cfg, "fp32")
    for old, target, online in zip(before, wm.target_encoder.parameters(), wm.encoder.parameters()):
        assert not torch.equal(old, online)                       # the encoder moved, so the check has teeth
        assert torch.allclose(target, 0.9 * old + 0.1 * online.detach(), atol=1e-6)
    # the loss's target is the slow encoder's embedding: replacing the slow encoder changes the loss
    with torch.no_grad():
        torch.manual_seed(1)
        a = wm.loss(batch)[0]["latent"]
        for p in wm.target_encoder.parameters():
            p.add_(1.0)
        torch.manual_seed(1)
        b = wm.loss(batch)[0]["latent"]
    assert not torch.allclose(a, b)
