"""The small-grid image codec (MinAtar's 10x10 object channels) and the Bernoulli image decoder: hand-computed
losses, which sizes take which codec, and an autoencoder that learns a few binary grids exactly."""

import math

import numpy as np
import pytest
import torch

from reverie.models.codecs import MultiDecoder, MultiEncoder
from reverie.nn import ConvEncoder, GridDecoder, GridEncoder, ImageBernoulli, needs_grid_codec
from reverie.specs import ArraySpec


def test_the_bernoulli_image_loss_and_mode_by_hand():
    logits = torch.tensor([[[[0.0], [2.0]], [[-1.0], [0.0]]]])                # [1, 2, 2, 1]
    target = torch.tensor([[[[0.5], [-0.5]], [[-0.5], [0.5]]]])              # on, off, off, on
    expected = math.log(2) + math.log(1 + math.e ** 2) + math.log(1 + math.e ** -1) + math.log(2)
    assert float(ImageBernoulli(logits).loss(target)[0]) == pytest.approx(expected, rel=1e-6)
    assert ImageBernoulli(logits).mode().flatten().tolist() == [-0.5, 0.5, -0.5, -0.5]


@pytest.mark.parametrize("size, grid", [((10, 10), True), ((4, 4), True), ((12, 16), True), ((8, 8), False),
                                        ((64, 64), False)])
def test_images_that_do_not_halve_to_4x4_take_the_grid_codec(size, grid):
    assert needs_grid_codec(*size) is grid
    spec = {"image": ArraySpec((*size, 3), np.dtype(np.uint8))}
    encoder, decoder = MultiEncoder(spec, 8, 1, 4), MultiDecoder(spec, 16, 8, 1, 4, "bernoulli")
    assert isinstance(encoder.cnn, GridEncoder if grid else ConvEncoder)
    image = torch.randint(0, 256, (2, 5, *size, 3), dtype=torch.uint8)
    assert encoder({"image": image}).shape == (2, 5, encoder.out_dim)
    out = decoder(torch.zeros(2, 5, 16))["image"]
    assert isinstance(out, ImageBernoulli) and out.logits.shape == (2, 5, *size, 3)


def test_a_grid_autoencoder_learns_four_binary_grids_exactly():
    torch.manual_seed(0)
    grids = (torch.rand(4, 10, 10, 4) > 0.8).to(torch.uint8) * 255              # MinAtar-like 0/255 channels
    encoder, decoder = GridEncoder((10, 10, 4), 8), GridDecoder(16 * 25, (10, 10, 4), 8)
    assert encoder.out_dim == 16 * 5 * 5
    params = [*encoder.parameters(), *decoder.parameters()]
    opt = torch.optim.Adam(params, lr=3e-3)
    target = grids.float() / 255 - 0.5
    for _ in range(300):
        opt.zero_grad()
        ImageBernoulli(decoder(encoder(grids))).loss(target).mean().backward()
        opt.step()
    decoded = (ImageBernoulli(decoder(encoder(grids))).mode() + 0.5) * 255
    assert torch.equal(decoded, grids.float())
