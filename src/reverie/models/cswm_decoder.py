"""C-SWM's reconstruction baseline: a decoder from the slot embeddings back to the image.

The C-SWM paper (Kipf, van der Pol and Welling, ICLR 2020) contrasts its decoder-free, contrastive training
with models trained in pixel space; its reference code (tkipf/c-swm, ``train.py --decoder``) trains the same
encoder and transition GNN with a decoder instead of the hinge loss. This module holds that decoder and its
loss, for the ``small`` object extractor (the 2D shapes worlds):

- :class:`SlotDecoder`: each slot's embedding ``[D]`` passes one MLP shared by the slots (the encoder's
  shape: Linear, ReLU, Linear, LayerNorm, ReLU, Linear) to a map at the extractor's resolution
  ``[H / 10, W / 10]``; the K maps, stacked as channels, pass a 1 x 1 transposed convolution to
  ``channels``, a ReLU and a 10 x 10 transposed convolution of stride 10 back to the image's channels:
  the small extractor run backwards. The output is logits of every pixel channel.
- :func:`reconstruction_loss`: the binary cross-entropy of the sigmoid of those logits against the image
  scaled to [0, 1], summed over the pixels of an image and averaged over the batch (as the reference).

The training objective (:meth:`reverie.models.cswm.CSWMModel.loss` with ``objective="decoder"``) is the
reconstruction of the observation from its encoding plus the reconstruction of the next observation from
the predicted next state ``z + T(z, a)``: the transition is trained through the decoder, in pixel space.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["SlotDecoder", "reconstruction_loss", "to_image"]


class SlotDecoder(nn.Module):
    """Slot states ``[N, K, D]`` -> image logits ``[N, C, H, W]`` (see the module docstring)."""

    def __init__(self, embedding: int, slots: int, hidden: int, channels: int, out_channels: int,
                 map_shape: tuple[int, int], stride: int):
        super().__init__()
        self.slots, self.map_shape = slots, map_shape
        cells = map_shape[0] * map_shape[1]
        self.mlp = nn.Sequential(nn.Linear(embedding, hidden), nn.ReLU(), nn.Linear(hidden, hidden),
                                 nn.LayerNorm(hidden), nn.ReLU(), nn.Linear(hidden, cells))
        self.up = nn.Sequential(nn.ConvTranspose2d(slots, channels, 1), nn.ReLU(),
                                nn.ConvTranspose2d(channels, out_channels, stride, stride=stride))

    def forward(self, z: Tensor) -> Tensor:
        lead = z.shape[:-2]
        maps = self.mlp(z.reshape(-1, *z.shape[-2:]))                           # [N, K, h * w]
        logits = self.up(maps.reshape(-1, self.slots, *self.map_shape))         # [N, C, H, W]
        return logits.reshape(*lead, *logits.shape[1:])


def reconstruction_loss(logits: Tensor, image: Tensor) -> Tensor:
    """``sum over pixels of BCE(sigmoid(logits), image / 255)``, averaged over the batch: logits ``[N, C, H, W]``,
    image ``[N, H, W, C]`` (uint8) -> ``[]``."""
    target = image.permute(0, 3, 1, 2).to(logits.dtype) / 255.0
    return F.binary_cross_entropy_with_logits(logits, target, reduction="sum") / logits.shape[0]


def to_image(logits: Tensor) -> Tensor:
    """Logits ``[..., C, H, W]`` -> an image ``[..., H, W, C]`` in [0, 255] (float)."""
    return torch.sigmoid(logits).movedim(-3, -1) * 255.0
