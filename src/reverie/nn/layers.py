"""Network building blocks: MLPs, image encoder/decoder, LayerNorm GRU cell.

DreamerV3-style: linear layers without bias followed by LayerNorm and SiLU,
convolutions with channel LayerNorm, output layers optionally zero-initialised
(reward and critic heads start by predicting zero).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from reverie.nn.functional import simnorm


class ChannelNorm(nn.Module):
    """LayerNorm over the channel axis of ``[N, C, H, W]`` feature maps."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.LayerNorm(channels, eps=1e-3)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class MLP(nn.Module):
    """``layers`` x (Linear -> LayerNorm -> SiLU), then an optional output Linear.

    in: ``[..., in_dim]`` -> out: ``[..., out_dim]`` (or ``[..., units]`` when
    ``out_dim`` is None). ``zero_out`` starts the output layer at zero.
    """

    def __init__(self, in_dim: int, out_dim: int | None, units: int, layers: int, zero_out: bool = False):
        super().__init__()
        mods: list[nn.Module] = []
        dim = in_dim
        for _ in range(layers):
            mods += [nn.Linear(dim, units, bias=False), nn.LayerNorm(units, eps=1e-3), nn.SiLU()]
            dim = units
        self.body = nn.Sequential(*mods)
        self.out = None
        if out_dim is not None:
            self.out = nn.Linear(dim, out_dim)
            if zero_out:
                nn.init.zeros_(self.out.weight)
                nn.init.zeros_(self.out.bias)
        self.out_dim = out_dim if out_dim is not None else dim

    def forward(self, x: Tensor) -> Tensor:
        x = self.body(x)
        return self.out(x) if self.out is not None else x


class SimNorm(nn.Module):
    """Softmax over each group of ``group`` consecutive features (TD-MPC2's latent normalisation), see
    :func:`reverie.nn.functional.simnorm`."""

    def __init__(self, group: int = 8):
        super().__init__()
        self.group = group

    def forward(self, x: Tensor) -> Tensor:
        return simnorm(x, self.group)


class GRUCell(nn.Module):
    """GRU with LayerNorm on the fused gate pre-activations (DreamerV2/V3).

    The update gate's bias of -1 makes the cell keep its memory by default,
    which helps long-horizon credit at the start of training.
    """

    def __init__(self, in_dim: int, size: int):
        super().__init__()
        self.linear = nn.Linear(in_dim + size, 3 * size, bias=False)
        self.norm = nn.LayerNorm(3 * size, eps=1e-3)
        self.size = size

    def forward(self, x: Tensor, h: Tensor) -> Tensor:
        parts = self.norm(self.linear(torch.cat([x, h], -1)))  # [N, 3 * size]
        reset, cand, update = parts.split(self.size, -1)
        reset = torch.sigmoid(reset)
        cand = torch.tanh(reset * cand)
        update = torch.sigmoid(update - 1)
        return update * cand + (1 - update) * h


class ConvEncoder(nn.Module):
    """Images ``[N, H, W, C]`` uint8 -> features ``[N, F]``.

    Stride-2 4x4 convolutions halve the resolution until it is 4x4 (64x64 in:
    4 stages with depth, 2 depth, 4 depth, 8 depth channels).
    """

    def __init__(self, shape: tuple[int, int, int], depth: int = 32):
        super().__init__()
        h, w, c = shape
        if h != w or h < 8 or (h & (h - 1)):
            raise ValueError(f"image observations must be square with a power-of-two side >= 8, got {shape}; "
                             "resize them with the environment's size setting")
        stages = int(math.log2(h)) - 2
        mods: list[nn.Module] = []
        ch = c
        for i in range(stages):
            out = depth * 2 ** i
            mods += [nn.Conv2d(ch, out, 4, 2, 1, bias=False), ChannelNorm(out), nn.SiLU()]
            ch = out
        self.net = nn.Sequential(*mods)
        self.out_dim = ch * 4 * 4

    def forward(self, image: Tensor) -> Tensor:
        x = image.float() / 255.0 - 0.5                     # [N, H, W, C]
        x = self.net(x.permute(0, 3, 1, 2).contiguous())    # [N, 8d, 4, 4]
        return x.flatten(1)


class ConvDecoder(nn.Module):
    """Features ``[N, F]`` -> images ``[N, H, W, C]`` in [-0.5, 0.5] (mirror of :class:`ConvEncoder`)."""

    def __init__(self, in_dim: int, shape: tuple[int, int, int], depth: int = 32):
        super().__init__()
        h, w, c = shape
        stages = int(math.log2(h)) - 2
        ch = depth * 2 ** (stages - 1)
        self.start = (ch, 4, 4)
        self.linear = nn.Linear(in_dim, ch * 16)
        mods: list[nn.Module] = []
        for i in reversed(range(stages)):
            out = depth * 2 ** (i - 1) if i > 0 else c
            mods.append(nn.ConvTranspose2d(ch, out, 4, 2, 1, bias=i == 0))
            if i > 0:
                mods += [ChannelNorm(out), nn.SiLU()]
            ch = out
        self.net = nn.Sequential(*mods)

    def forward(self, feat: Tensor) -> Tensor:
        x = self.linear(feat).reshape(-1, *self.start)  # [N, 8d, 4, 4]
        x = self.net(x)                                 # [N, C, H, W]
        return x.permute(0, 2, 3, 1)


class ResidualBlock(nn.Module):
    """``x + conv(act(norm(conv(act(norm(x))))))`` on ``[N, C, H, W]`` (pre-activation, 3x3, same size)."""

    def __init__(self, channels: int):
        super().__init__()
        self.net = nn.Sequential(ChannelNorm(channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, 1, 1, bias=False),
                                 ChannelNorm(channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, 1, 1, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.net(x)


class ResidualTower(nn.Module):
    """Images ``[N, H, W, C]`` uint8 -> features ``[N, F]`` through a residual conv tower (MuZero's
    representation for small images).

    Two stride-2 convolutions, each followed by ``blocks`` residual blocks, bring the image down by 4 in
    each direction; a final stride-2 convolution and flattening give ``F = 2 * channels * (H / 8) * (W / 8)``.
    """

    def __init__(self, shape: tuple[int, int, int], channels: int = 32, blocks: int = 1):
        super().__init__()
        h, w, c = shape
        if h % 8 or w % 8:
            raise ValueError(f"image observations need sides divisible by 8 for the residual tower, got {shape}")
        mods: list[nn.Module] = [nn.Conv2d(c, channels, 3, 2, 1, bias=False)]
        mods += [ResidualBlock(channels) for _ in range(blocks)]
        mods += [nn.Conv2d(channels, channels, 3, 2, 1, bias=False)]
        mods += [ResidualBlock(channels) for _ in range(blocks)]
        mods += [ChannelNorm(channels), nn.SiLU(), nn.Conv2d(channels, 2 * channels, 3, 2, 1, bias=False),
                 ChannelNorm(2 * channels), nn.SiLU()]
        self.net = nn.Sequential(*mods)
        self.out_dim = 2 * channels * (h // 8) * (w // 8)

    def forward(self, image: Tensor) -> Tensor:
        x = image.float() / 255.0 - 0.5                     # [N, H, W, C]
        return self.net(x.permute(0, 3, 1, 2).contiguous()).flatten(1)
