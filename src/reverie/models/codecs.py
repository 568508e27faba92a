"""Observation encoders and decoders for dictionaries of vector and image entries.

Vector entries (any non-image array) are flattened, concatenated, symlog'd and
fed to one MLP; image entries (uint8 ``[H, W, C]``) of equal size are stacked
on the channel axis and fed to one CNN: :class:`~reverie.nn.layers.ConvEncoder` for square power-of-two
sides >= 8, else the small-grid codec of :mod:`reverie.nn.grid` (MinAtar's 10x10). The embedding is their
concatenation. Decoded images are a mean per cell and channel (``image_loss="mse"``) or, for binary images,
a Bernoulli logit (``"bernoulli"``).
"""

from __future__ import annotations

import math
from typing import Literal, Mapping

import torch
from torch import Tensor, nn

from reverie.specs import ArraySpec
from reverie.nn import (MLP, ConvDecoder, ConvEncoder, GridDecoder, GridEncoder, ImageBernoulli, ImageMSE, SymlogMSE,
                        needs_grid_codec, symlog)


def split_keys(obs_spec: Mapping[str, ArraySpec]) -> tuple[list[str], list[str]]:
    """(vector keys, image keys) of an observation spec, sorted for a stable layout."""
    images = sorted(k for k, s in obs_spec.items() if s.is_image)
    vectors = sorted(k for k in obs_spec if k not in images)
    if images:
        sizes = {obs_spec[k].shape[:2] for k in images}
        if len(sizes) > 1:
            raise ValueError(f"image observations {images} have different sizes {sorted(sizes)}; "
                             "render them at one size")
    return vectors, images


class MultiEncoder(nn.Module):
    """obs ``{key: [N, *shape]}`` -> embedding ``[N, E]``."""

    def __init__(self, obs_spec: Mapping[str, ArraySpec], units: int, layers: int, cnn_depth: int):
        super().__init__()
        self.vector_keys, self.image_keys = split_keys(obs_spec)
        self.shapes = {k: tuple(obs_spec[k].shape) for k in obs_spec}
        self.vector_dims = [int(math.prod(obs_spec[k].shape)) for k in self.vector_keys]
        self.out_dim = 0
        self.mlp: MLP | None = None
        self.cnn: ConvEncoder | GridEncoder | None = None
        if self.vector_keys:
            self.mlp = MLP(sum(self.vector_dims), None, units, layers)
            self.out_dim += self.mlp.out_dim
        if self.image_keys:
            h, w = obs_spec[self.image_keys[0]].shape[:2]
            channels = sum(obs_spec[k].shape[2] for k in self.image_keys)
            codec = GridEncoder if needs_grid_codec(h, w) else ConvEncoder
            self.cnn = codec((h, w, channels), cnn_depth)
            self.out_dim += self.cnn.out_dim

    def forward(self, obs: Mapping[str, Tensor]) -> Tensor:
        parts = []
        if self.mlp is not None:
            first = self.vector_keys[0]
            lead = obs[first].shape[:obs[first].dim() - len(self.shapes[first])]
            x = torch.cat([obs[k].reshape(*lead, -1).float() for k in self.vector_keys], -1)
            parts.append(self.mlp(symlog(x)))
        if self.cnn is not None:
            img = torch.cat([obs[k] for k in self.image_keys], -1)  # [..., H, W, C]
            lead = img.shape[:-3]
            parts.append(self.cnn(img.reshape(-1, *img.shape[-3:])).reshape(*lead, -1))
        return torch.cat(parts, -1)


class MultiDecoder(nn.Module):
    """features ``[N, F]`` -> ``{key: distribution}`` with a ``loss(target)`` per key."""

    def __init__(self, obs_spec: Mapping[str, ArraySpec], feat_dim: int, units: int, layers: int, cnn_depth: int,
                 image_loss: Literal["mse", "bernoulli"] = "mse"):
        super().__init__()
        self.vector_keys, self.image_keys = split_keys(obs_spec)
        self.shapes = {k: tuple(obs_spec[k].shape) for k in obs_spec}
        self.vector_dims = [int(math.prod(obs_spec[k].shape)) for k in self.vector_keys]
        self.image_dist = ImageBernoulli if image_loss == "bernoulli" else ImageMSE
        self.mlp: MLP | None = None
        self.cnn: ConvDecoder | GridDecoder | None = None
        if self.vector_keys:
            self.mlp = MLP(feat_dim, sum(self.vector_dims), units, layers)
        if self.image_keys:
            h, w = obs_spec[self.image_keys[0]].shape[:2]
            self.channels = [obs_spec[k].shape[2] for k in self.image_keys]
            codec = GridDecoder if needs_grid_codec(h, w) else ConvDecoder
            self.cnn = codec(feat_dim, (h, w, sum(self.channels)), cnn_depth)

    def forward(self, feat: Tensor) -> dict[str, SymlogMSE | ImageMSE | ImageBernoulli]:
        lead = feat.shape[:-1]
        out: dict[str, SymlogMSE | ImageMSE | ImageBernoulli] = {}
        if self.mlp is not None:
            flat = self.mlp(feat)
            for k, part in zip(self.vector_keys, flat.split(self.vector_dims, -1)):
                out[k] = SymlogMSE(part.reshape(*lead, *self.shapes[k]), event_dims=len(self.shapes[k]))
        if self.cnn is not None:
            img = self.cnn(feat.reshape(-1, feat.shape[-1]))
            img = img.reshape(*lead, *img.shape[1:])
            for k, part in zip(self.image_keys, img.split(self.channels, -1)):
                out[k] = self.image_dist(part)
        return out
