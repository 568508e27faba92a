"""The vision model of World Models (Ha & Schmidhuber, 2018): a convolutional VAE on 64x64 frames.

A frame is encoded to a diagonal Gaussian over ``z`` (32 dimensions in the
paper) and decoded back from a sample. The loss is the summed squared error
of the reconstruction plus the KL divergence to a unit Gaussian in closed
form, with the paper's tolerance: the KL is not pushed below ``kl_tolerance *
z_size`` nats (0.5 per dimension), so the code is not squeezed to nothing.
The convolution stacks are reverie's :class:`~reverie.nn.layers.ConvEncoder`
and :class:`~reverie.nn.layers.ConvDecoder` (stride-2 4x4 convolutions).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from reverie.config import NonNegativeFloat, PositiveFloat, PositiveInt, check_ranges
from reverie.nn.layers import ConvDecoder, ConvEncoder

__all__ = ["ConvVAE", "VAEConfig", "gaussian_kl"]


@dataclass(frozen=True)
class VAEConfig:
    """The convolutional VAE and its optimiser."""

    z_size: PositiveInt = 32
    """Dimensions of the latent code z (the paper: 32)."""
    depth: PositiveInt = 32
    """Channels of the first convolution; each stride-2 stage doubles them (the paper: 32, 64, 128, 256)."""
    kl_tolerance: NonNegativeFloat = 0.5
    """Free nats per latent dimension: the KL term is max(KL, kl_tolerance * z_size) (the paper: 0.5)."""
    lr: PositiveFloat = 1e-3
    """Adam learning rate (the paper: 1e-4 over a 10,000-rollout data set; larger for small budgets)."""
    batch_size: PositiveInt = 64
    """Frames per gradient step."""

    def __post_init__(self) -> None:
        check_ranges(self)


def gaussian_kl(mean: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mean, exp(logvar)) || N(0, 1)) summed over the last axis, in closed form: ``[...]``."""
    return 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).sum(-1)


class ConvVAE(nn.Module):
    """Images ``[N, H, W, 3]`` uint8 <-> latent codes ``[N, z_size]``."""

    def __init__(self, image_shape: tuple[int, int, int], cfg: VAEConfig):
        super().__init__()
        self.cfg = cfg
        height, width, channels = image_shape
        self.image_shape = (height, width, channels)
        self.encoder = ConvEncoder(self.image_shape, cfg.depth)
        self.to_stats = nn.Linear(self.encoder.out_dim, 2 * cfg.z_size)
        self.decoder = ConvDecoder(cfg.z_size, self.image_shape, cfg.depth)

    @property
    def z_size(self) -> int:
        return self.cfg.z_size

    def encode(self, image: Tensor) -> tuple[Tensor, Tensor]:
        """(mean, log-variance), each ``[N, z_size]``, of q(z | image) for uint8 images ``[N, H, W, C]``."""
        mean, logvar = self.to_stats(self.encoder(image)).chunk(2, -1)
        return mean, logvar.clamp(-10.0, 5.0)

    def decode(self, z: Tensor) -> Tensor:
        """Images ``[..., H, W, C]`` in [0, 255] (float) from codes ``[..., z_size]``."""
        lead = z.shape[:-1]
        x = self.decoder(z.reshape(-1, z.shape[-1]))
        return ((x + 0.5) * 255.0).clamp(0.0, 255.0).reshape(*lead, *x.shape[1:])

    def loss(self, image: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, float]]:
        """Mean over frames of summed squared error (pixels in [0, 1]) plus the tolerated KL; and metrics."""
        mean, logvar = self.encode(image)
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        z = mean + (0.5 * logvar).exp() * noise
        target = image.float() / 255.0 - 0.5
        rec = (self.decoder(z) - target).pow(2).flatten(1).sum(-1)
        kl = gaussian_kl(mean, logvar)
        floor = self.cfg.kl_tolerance * self.cfg.z_size
        loss = (rec + kl.clamp(min=floor)).mean()
        return loss, {"vae/rec": float(rec.detach().mean()), "vae/kl": float(kl.detach().mean()),
                      "vae/loss": float(loss.detach())}
