"""An image encoder and decoder for small grids of object channels (MinAtar's ``[10, 10, C]``).

:class:`~reverie.nn.layers.ConvEncoder` halves a square power-of-two image down to 4x4, which a 10x10 grid
cannot be; and on a grid each cell is an object, so it should not be blurred away by early striding. Here a
3x3 convolution reads the grid at full resolution, one stride-2 3x3 convolution halves it (rounding up:
10x10 -> 5x5), and the features are flattened. The decoder mirrors it: a linear map to the half-size
feature map, a nearest-neighbour doubling cropped to the grid, and two 3x3 convolutions to one output per
cell and channel (a mean for :class:`~reverie.nn.distributions.ImageMSE`, a logit for
:class:`~reverie.nn.distributions.ImageBernoulli`).
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn

from reverie.nn.layers import ChannelNorm

__all__ = ["GridDecoder", "GridEncoder", "needs_grid_codec"]


def needs_grid_codec(height: int, width: int) -> bool:
    """Whether images of this size need the grid codec: they are not square with a power-of-two side >= 8,
    the sizes :class:`~reverie.nn.layers.ConvEncoder` reads."""
    return height != width or height < 8 or bool(height & (height - 1))


def _half(size: int) -> int:
    return math.ceil(size / 2)


class GridEncoder(nn.Module):
    """Images ``[N, H, W, C]`` uint8 -> features ``[N, 2 depth * ceil(H / 2) * ceil(W / 2)]``."""

    def __init__(self, shape: tuple[int, int, int], depth: int = 16):
        super().__init__()
        h, w, c = shape
        self.net = nn.Sequential(
            nn.Conv2d(c, depth, 3, 1, 1, bias=False), ChannelNorm(depth), nn.SiLU(),
            nn.Conv2d(depth, 2 * depth, 3, 2, 1, bias=False), ChannelNorm(2 * depth), nn.SiLU())
        self.out_dim = 2 * depth * _half(h) * _half(w)

    def forward(self, image: Tensor) -> Tensor:
        x = image.float() / 255.0 - 0.5                     # [N, H, W, C]
        return self.net(x.permute(0, 3, 1, 2).contiguous()).flatten(1)   # [N, 2d * H/2 * W/2]


class GridDecoder(nn.Module):
    """Features ``[N, F]`` -> one output per cell and channel ``[N, H, W, C]`` (mirror of :class:`GridEncoder`)."""

    def __init__(self, in_dim: int, shape: tuple[int, int, int], depth: int = 16):
        super().__init__()
        h, w, c = shape
        self.size = (h, w)
        self.start = (2 * depth, _half(h), _half(w))
        self.linear = nn.Linear(in_dim, math.prod(self.start))
        self.net = nn.Sequential(
            ChannelNorm(2 * depth), nn.SiLU(), nn.Conv2d(2 * depth, depth, 3, 1, 1, bias=False),
            ChannelNorm(depth), nn.SiLU(), nn.Conv2d(depth, c, 3, 1, 1))

    def forward(self, feat: Tensor) -> Tensor:
        x = self.linear(feat).reshape(-1, *self.start)                     # [N, 2d, H/2, W/2]
        x = F.interpolate(x, scale_factor=2, mode="nearest")[..., :self.size[0], :self.size[1]]
        return self.net(x).permute(0, 2, 3, 1)                             # [N, H, W, C]
