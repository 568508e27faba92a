"""RSSM and world-model behaviour: resets, consistency of the fast paths, KL oracles, learning."""

import numpy as np
import pytest
import torch

from reverie.specs import ActionSpec, ArraySpec
from reverie.models import RSSM, Batch, RSSMConfig, RSSMWorldModel, WorldModelConfig

SMALL = RSSMConfig(deter=16, hidden=16, stoch=4, classes=4)


@pytest.mark.parametrize("latent", ["categorical", "gaussian"])
def test_is_first_resets_the_memory(latent):
    torch.manual_seed(0)
    rssm = RSSM(RSSMConfig(deter=16, hidden=16, stoch=4, classes=4, latent=latent), embed_dim=6, action_dim=2)
    embed, action = torch.randn(1, 8, 6), torch.randn(1, 8, 2)
    is_first = torch.zeros(1, 8, dtype=torch.bool)
    is_first[0, 5] = True
    post, _ = rssm.observe(embed, action, is_first, sample=False)
    fresh_first = torch.zeros(1, 3, dtype=torch.bool)
    fresh_first[0, 0] = True
    fresh, _ = rssm.observe(embed[:, 5:], action[:, 5:], fresh_first, sample=False)
    assert torch.allclose(post["deter"][:, 5:], fresh["deter"], atol=1e-6)
    assert torch.allclose(post["stoch"][:, 5:], fresh["stoch"], atol=1e-6)
    # ...and without the flag the past matters.
    other, _ = rssm.observe(embed, action, torch.zeros(1, 8, dtype=torch.bool), sample=False)
    assert not torch.allclose(other["deter"][:, 5:], fresh["deter"], atol=1e-4)


def test_prior_outside_the_loop_equals_the_stepwise_prior():
    torch.manual_seed(0)
    rssm = RSSM(SMALL, embed_dim=6, action_dim=2)
    embed, action = torch.randn(2, 5, 6), torch.randn(2, 5, 2)
    is_first = torch.zeros(2, 5, dtype=torch.bool)
    post, _ = rssm.observe(embed, action, is_first, sample=False)
    prior = rssm.prior(post["deter"], sample=False)
    for t in range(1, 5):
        prev = {k: v[:, t - 1] for k, v in post.items()}
        step = rssm.img_step(prev, action[:, t], sample=False)
        assert torch.allclose(step["deter"], post["deter"][:, t], atol=1e-6)
        assert torch.allclose(step["logit"], prior["logit"][:, t], atol=1e-5)


def test_gaussian_kl_matches_torch():
    rssm = RSSM(RSSMConfig(deter=8, hidden=8, stoch=3, latent="gaussian"), embed_dim=2, action_dim=1)
    p = {"mean": torch.randn(4, 3), "std": torch.rand(4, 3) + 0.2}
    q = {"mean": torch.randn(4, 3), "std": torch.rand(4, 3) + 0.2}
    dyn, rep = rssm.kl(p, q)
    ref = torch.distributions.kl_divergence(torch.distributions.Normal(p["mean"], p["std"]),
                                            torch.distributions.Normal(q["mean"], q["std"])).sum(-1)
    assert torch.allclose(dyn, ref, atol=1e-5) and torch.allclose(rep, ref, atol=1e-5)


def test_kl_terms_train_different_sides():
    rssm = RSSM(SMALL, embed_dim=2, action_dim=1)
    post = {"logit": torch.log_softmax(torch.randn(2, 4, 4), -1).requires_grad_()}
    prior = {"logit": torch.log_softmax(torch.randn(2, 4, 4), -1).requires_grad_()}
    dyn, rep = rssm.kl(post, prior)
    gp, gq = torch.autograd.grad(dyn.sum(), [post["logit"], prior["logit"]], allow_unused=True)
    assert gp is None and gq.abs().sum() > 0
    gp, gq = torch.autograd.grad(rep.sum(), [post["logit"], prior["logit"]], allow_unused=True)
    assert gp.abs().sum() > 0 and gq is None


def _linear_system_batch(rng, b=8, t=16):
    """x' = A x + B a with reward = -x0^2: a small deterministic system the model must learn."""
    a_mat = np.array([[0.9, 0.2], [-0.2, 0.9]], np.float32)
    x = rng.normal(size=(b, 2)).astype(np.float32)
    obs, acts, rews = [], [], []
    prev = np.zeros((b, 1), np.float32)
    for _ in range(t):
        obs.append(x.copy())
        acts.append(prev.copy())
        rews.append(-x[:, 0] ** 2)
        prev = rng.uniform(-1, 1, size=(b, 1)).astype(np.float32)
        x = x @ a_mat.T + 0.5 * np.concatenate([prev, np.zeros_like(prev)], 1)
    first = np.zeros((b, t), bool)
    first[:, 0] = True
    return {"vector": np.stack(obs, 1), "action": np.stack(acts, 1), "reward": np.stack(rews, 1).astype(np.float32),
            "is_first": first, "is_terminal": np.zeros((b, t), bool)}


def test_world_model_learns_a_linear_system():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    cfg = WorldModelConfig(rssm=RSSMConfig(deter=64, hidden=64, stoch=8, classes=8), units=64, layers=1, lr=1e-3)
    wm = RSSMWorldModel({"vector": ArraySpec((2,), np.float32)}, ActionSpec(False, 1), cfg)
    opt = torch.optim.Adam(wm.parameters(), lr=cfg.lr)

    def losses():
        data = _linear_system_batch(rng)
        batch = Batch.build({**data, "is_last": data["is_terminal"]}, wm.obs_spec, wm.act_spec)
        out, _, _, _ = wm.loss(batch)
        return out

    first = {k: float(v.detach().mean()) for k, v in losses().items()}
    for _ in range(150):
        total = sum(v.mean() for v in losses().values())
        opt.zero_grad()
        total.backward()
        opt.step()
    with torch.no_grad():
        last = {k: float(v.mean()) for k, v in losses().items()}
    assert last["rec"] < 0.3 * first["rec"]
    assert last["reward"] < 0.5 * first["reward"]


def test_wrong_observation_shape_is_a_clear_error():
    wm = RSSMWorldModel({"vector": ArraySpec((4,), np.float32)}, ActionSpec(True, 2),
                        WorldModelConfig(rssm=SMALL, units=8, layers=1))
    with pytest.raises(ValueError, match=r"'vector' has shape \(1, 3, 5\).*\[\.\.\., 4\]"):
        wm.observe({"vector": torch.zeros(1, 3, 5)}, torch.zeros(1, 3, 2), torch.zeros(1, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="missing key 'vector'"):
        wm.observe({"state": torch.zeros(1, 3, 4)}, torch.zeros(1, 3, 2), torch.zeros(1, 3, dtype=torch.bool))
