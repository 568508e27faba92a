"""Transforms and distributions against hand-computed values and reference implementations."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from reverie.nn import (BoundedNormal, ConvDecoder, ConvEncoder, OneHotDist, TwoHotDist, categorical_kl,
                        lambda_returns, symexp, symlog, symlog_bins, twohot)


@settings(max_examples=200, deadline=None)
@given(st.floats(min_value=-1e6, max_value=1e6, allow_nan=False))
def test_symexp_inverts_symlog(x):
    t = torch.tensor(x, dtype=torch.float64)
    assert torch.allclose(symexp(symlog(t)), t, rtol=1e-9, atol=1e-9)


def test_symlog_hand_values():
    x = torch.tensor([-(math.e - 1), 0.0, math.e ** 2 - 1])
    assert torch.allclose(symlog(x), torch.tensor([-1.0, 0.0, 2.0]), atol=1e-6)


@settings(max_examples=200, deadline=None)
@given(st.floats(min_value=-25, max_value=25, allow_nan=False))
def test_twohot_encodes_value_exactly(x):
    bins = symlog_bins(255)
    enc = twohot(torch.tensor([x]), bins)[0]
    assert torch.isclose(enc.sum(), torch.tensor(1.0), atol=1e-6)
    assert (enc > 0).sum() <= 2
    assert torch.isclose((enc * bins).sum(), torch.tensor(x).clamp(-20, 20), atol=1e-4)


def test_twohot_hand_example():
    bins = torch.tensor([0.0, 1.0, 2.0])
    enc = twohot(torch.tensor([0.25, 2.0, 5.0]), bins)
    expected = torch.tensor([[0.75, 0.25, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    assert torch.allclose(enc, expected)


def test_twohot_dist_fits_a_target_by_gradient_descent():
    bins = symlog_bins(255)
    logits = torch.zeros(255, requires_grad=True)
    opt = torch.optim.Adam([logits], lr=0.5)
    for _ in range(400):
        loss = TwoHotDist(logits, bins).loss(torch.tensor(123.0))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert abs(float(TwoHotDist(logits.detach(), bins).mean()) - 123.0) < 0.01 * 123.0


def test_lambda_returns_hand_computed():
    # Two steps, gamma folded into discount=0.5.
    reward = torch.tensor([1.0, 2.0])
    value = torch.tensor([10.0, 20.0, 40.0])
    discount = torch.tensor([0.5, 0.5])
    lam = 0.5
    r1 = 2.0 + 0.5 * 40.0                                   # R_1 = r_1 + d v_2 (bootstrap R_2 = v_2)
    r0 = 1.0 + 0.5 * ((1 - lam) * 20.0 + lam * r1)
    assert torch.allclose(lambda_returns(reward, value, discount, lam), torch.tensor([r0, r1]))


def test_lambda_returns_extremes():
    torch.manual_seed(0)
    reward, value = torch.randn(5, 3), torch.randn(6, 3)
    disc = torch.full((5, 3), 0.9)
    td0 = lambda_returns(reward, value, disc, 0.0)
    assert torch.allclose(td0, reward + 0.9 * value[1:])
    mc = lambda_returns(reward, value, disc, 1.0)
    expected = value[-1]
    for t in reversed(range(5)):
        expected = reward[t] + 0.9 * expected
    assert torch.allclose(mc[0], expected, atol=1e-5)


def test_onehot_unimix_bounds_and_straight_through():
    logits = torch.tensor([[10.0, -10.0, -10.0, -10.0]], requires_grad=True)
    dist = OneHotDist(logits, unimix=0.01)
    assert float(dist.probs.detach().min()) >= 0.01 / 4 - 1e-7
    sample = dist.sample()
    assert torch.equal(sample.detach().sum(-1), torch.ones(1)) and set(sample.detach().flatten().tolist()) <= {0.0, 1.0}
    (sample * torch.arange(4.0)).sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_categorical_kl_matches_torch():
    a, b = torch.randn(3, 5), torch.randn(3, 5)
    la, lb = torch.log_softmax(a, -1), torch.log_softmax(b, -1)
    ref = torch.distributions.kl_divergence(torch.distributions.Categorical(logits=a),
                                            torch.distributions.Categorical(logits=b))
    assert torch.allclose(categorical_kl(la, lb), ref, atol=1e-6)


def test_bounded_normal_matches_torch_normal():
    mean, std = torch.randn(4, 2), torch.randn(4, 2)
    dist = BoundedNormal(mean, std, 0.1, 1.0)
    ref = torch.distributions.Normal(dist.loc, dist.scale)
    x = torch.rand(4, 2) * 2 - 1
    assert torch.allclose(dist.log_prob(x), ref.log_prob(x).sum(-1), atol=1e-5)
    assert torch.allclose(dist.entropy(), ref.entropy().sum(-1), atol=1e-5)
    s = dist.sample()
    assert s.min() >= -1 and s.max() <= 1
    assert ((dist.scale >= 0.1) & (dist.scale <= 1.0)).all()


def test_conv_codec_round_trip_shapes_and_bad_size():
    enc = ConvEncoder((64, 64, 3), depth=4)
    img = torch.randint(0, 255, (2, 64, 64, 3), dtype=torch.uint8)
    feat = enc(img)
    assert feat.shape == (2, enc.out_dim)
    dec = ConvDecoder(enc.out_dim, (64, 64, 3), depth=4)
    assert dec(feat).shape == (2, 64, 64, 3)
    with pytest.raises(ValueError, match="power-of-two"):
        ConvEncoder((60, 60, 3))
