"""A small conditional U-Net: the network of a diffusion model's denoiser.

Residual blocks whose group norms take their scale and shift from a conditioning vector (adaptive
group norm, as in DIAMOND's and ADM's U-Nets), a stride-2 convolution down between levels and a
nearest-neighbour upsampling plus convolution up, with a skip from every block of the way down to
the way up. Frames whose sides do not halve ``levels - 1`` times (MinAtar's 10x10) are padded to the
next size that does and cropped back, so any frame size works. Random Fourier features embed a
scalar noise level (:class:`FourierFeatures`).

Shapes: ``x [N, C_in, H, W]``, ``cond [N, cond_dim]`` -> ``[N, C_out, H, W]``.
"""

from __future__ import annotations

import math
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["AdaGroupNorm", "CondResBlock", "FourierFeatures", "UNet"]


def _groups(channels: int, most: int = 32) -> int:
    """The largest group count up to ``most`` that divides ``channels``."""
    return next(g for g in range(min(most, channels), 0, -1) if channels % g == 0)


def _zero(conv: nn.Conv2d) -> None:
    nn.init.zeros_(conv.weight)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


class FourierFeatures(nn.Module):
    """``[N]`` scalars -> ``[N, dim]`` cosines and sines at fixed random frequencies (std 1)."""

    weight: Tensor

    def __init__(self, dim: int):
        super().__init__()
        if dim % 2:
            raise ValueError(f"FourierFeatures needs an even dim, got {dim}")
        self.register_buffer("weight", torch.randn(1, dim // 2))

    def forward(self, x: Tensor) -> Tensor:
        f = 2 * math.pi * x[:, None].float() @ self.weight                       # [N, dim / 2]
        return torch.cat([f.cos(), f.sin()], -1)


class AdaGroupNorm(nn.Module):
    """GroupNorm without its own affine, scaled by ``1 + s`` and shifted by ``b`` with ``(s, b)`` a linear map
    of the conditioning vector."""

    def __init__(self, channels: int, cond_dim: int):
        super().__init__()
        self.groups = _groups(channels)
        self.linear = nn.Linear(cond_dim, 2 * channels)

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        x = F.group_norm(x, self.groups, eps=1e-5)
        scale, shift = self.linear(cond)[:, :, None, None].chunk(2, 1)          # [N, C, 1, 1] each
        return x * (1 + scale) + shift


class CondResBlock(nn.Module):
    """norm -> SiLU -> conv3x3 -> norm -> SiLU -> conv3x3 (zero-initialised), plus a (1x1 projected) skip."""

    def __init__(self, in_channels: int, out_channels: int, cond_dim: int):
        super().__init__()
        self.norm1 = AdaGroupNorm(in_channels, cond_dim)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = AdaGroupNorm(out_channels, cond_dim)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        _zero(self.conv2)       # each block starts as its skip: a deep U-Net starts stable
        self.skip = nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x, cond)))
        h = self.conv2(F.silu(self.norm2(h, cond)))
        return self.skip(x) + h


class UNet(nn.Module):
    """A U-Net with ``len(channels)`` levels; level i has ``depths[i]`` residual blocks of ``channels[i]``.

    Args:
        in_channels, out_channels: channels of the input and the output.
        channels: channels per level, e.g. DIAMOND's ``(64, 64, 64, 64)``.
        depths: residual blocks per level (the same count again on the way up).
        cond_dim: size of the conditioning vector every block reads.
    """

    def __init__(self, in_channels: int, out_channels: int, channels: tuple[int, ...], depths: tuple[int, ...],
                 cond_dim: int):
        super().__init__()
        if not channels or len(channels) != len(depths) or min(depths) < 1 or min(channels) < 1:
            raise ValueError(f"UNet needs as many positive channels as depths (at least one level), got "
                             f"channels={channels}, depths={depths}")
        self.levels = len(channels)
        self.conv_in = nn.Conv2d(in_channels, channels[0], 3, padding=1)
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        skips, width = [], channels[0]
        for i, (ch, depth) in enumerate(zip(channels, depths)):
            blocks = nn.ModuleList()
            for _ in range(depth):
                blocks.append(CondResBlock(width, ch, cond_dim))
                width = ch
                skips.append(width)
            self.down.append(blocks)
            if i < self.levels - 1:
                self.downsample.append(nn.Conv2d(width, channels[i + 1], 3, stride=2, padding=1))
                width = channels[i + 1]
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i in reversed(range(self.levels)):
            blocks = nn.ModuleList()
            for _ in range(depths[i]):
                blocks.append(CondResBlock(width + skips.pop(), channels[i], cond_dim))
                width = channels[i]
            self.up.append(blocks)
            if i > 0:
                self.upsample.append(nn.Conv2d(width, channels[i - 1], 3, padding=1))
                width = channels[i - 1]
        self.norm_out = nn.GroupNorm(_groups(width), width)
        self.conv_out = nn.Conv2d(width, out_channels, 3, padding=1)
        _zero(self.conv_out)

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        height, width = x.shape[-2:]
        multiple = 2 ** (self.levels - 1)
        pad_h, pad_w = (-height) % multiple, (-width) % multiple
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        h = self.conv_in(x)
        skips = []
        for i, blocks in enumerate(self.down):
            for block in cast(nn.ModuleList, blocks):
                h = block(h, cond)
                skips.append(h)
            if i < self.levels - 1:
                h = self.downsample[i](h)
        for i, blocks in enumerate(self.up):
            for block in cast(nn.ModuleList, blocks):
                h = block(torch.cat([h, skips.pop()], 1), cond)
            if i < self.levels - 1:
                h = self.upsample[i](F.interpolate(h, scale_factor=2.0, mode="nearest"))
        out = self.conv_out(F.silu(self.norm_out(h)))
        return out[..., :height, :width]
