"""DDPM (Ho et al., 2020) behind the same two methods as :class:`~reverie.models.edm.EDM`, for comparison.

DIAMOND's ablation pits EDM against DDPM at few denoising steps (DDPM's frames fall apart over an
imagined trajectory there). This is that baseline: a linear beta schedule over ``train_steps`` noise
levels, the network predicting the noise ``eps`` from ``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps`` and
the level ``t / train_steps``, an MSE on ``eps``; sampling is ancestral over ``steps`` levels evenly spaced
in ``[0, train_steps)`` (the schedule *respaced*, Nichol & Dhariwal 2021: between kept levels s < t,
``beta = 1 - abar_t / abar_s``), the clean estimate clipped to [-1, 1] at every step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from reverie.config import PositiveFloat, PositiveInt, check_ranges
from reverie.models.edm import Network

__all__ = ["DDPM", "DDPMConfig"]


@dataclass(frozen=True)
class DDPMConfig:
    """DDPM's settings: Ho et al.'s schedule, sampled in DIAMOND's few steps."""

    train_steps: PositiveInt = 1000
    """Noise levels of the training schedule."""
    beta_start: PositiveFloat = 1e-4
    """beta of the first level."""
    beta_end: PositiveFloat = 0.02
    """beta of the last level."""
    steps: PositiveInt = 3
    """Denoising steps per sample (levels kept from the training schedule)."""

    def __post_init__(self):
        check_ranges(self)


class DDPM:
    """DDPM's training loss and ancestral sampler for a network (see the module docstring)."""

    def __init__(self, cfg: DDPMConfig):
        if cfg.steps > cfg.train_steps:
            raise ValueError(f"DDPM samples with at most train_steps={cfg.train_steps} levels, got steps={cfg.steps}")
        self.cfg = cfg
        betas = torch.linspace(cfg.beta_start, cfg.beta_end, cfg.train_steps, dtype=torch.float64)
        self.abar = torch.cumprod(1 - betas, 0)                                  # [train_steps]

    def level(self, t: Tensor) -> Tensor:
        """What the network reads as its noise level: ``t / train_steps`` in [0, 1)."""
        return t.float() / self.cfg.train_steps

    def loss(self, net: Network, x0: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Per-sample noise-prediction loss ``[N]`` on clean samples ``x0 [N, ...]``."""
        n = x0.shape[0]
        t = torch.randint(0, self.cfg.train_steps, (n,), generator=generator).to(x0.device)
        abar = self.abar.to(x0.device)[t].float().reshape(-1, *[1] * (x0.dim() - 1))
        eps = torch.randn(x0.shape, generator=generator, device=x0.device)
        noisy = abar.sqrt() * x0 + (1 - abar).sqrt() * eps
        return ((net(noisy, self.level(t)) - eps) ** 2).flatten(1).mean(1)

    def kept_levels(self) -> list[int]:
        """The training levels the sampler steps through, from the noisiest down to 0."""
        cfg = self.cfg
        if cfg.steps == 1:
            return [cfg.train_steps - 1]
        return sorted({round(i * (cfg.train_steps - 1) / (cfg.steps - 1)) for i in range(cfg.steps)}, reverse=True)

    def sample(self, net: Network, shape: tuple[int, ...], device: torch.device | str = "cpu",
               generator: torch.Generator | None = None, start: Tensor | None = None) -> Tensor:
        """A sample ``[*shape]`` by ancestral sampling over :meth:`kept_levels`; ``start``: the unit noise to begin
        from (drawn with ``generator`` when None; the later noises are drawn with it too)."""
        x = start if start is not None else torch.randn(shape, generator=generator, device=device)
        levels = self.kept_levels()
        ones = torch.ones(shape[0], dtype=torch.long, device=device)
        for i, t in enumerate(levels):
            abar_t = float(self.abar[t])
            abar_s = float(self.abar[levels[i + 1]]) if i + 1 < len(levels) else 1.0
            beta = 1 - abar_t / abar_s
            eps = net(x, self.level(t * ones))
            x0 = ((x - (1 - abar_t) ** 0.5 * eps) / abar_t ** 0.5).clamp(-1, 1)
            # the Gaussian posterior q(x_s | x_t, x0) of the respaced chain
            mean = (abar_s ** 0.5 * beta / (1 - abar_t)) * x0 + ((1 - beta) ** 0.5 * (1 - abar_s) / (1 - abar_t)) * x
            var = beta * (1 - abar_s) / (1 - abar_t)
            x = mean + var ** 0.5 * torch.randn(x.shape, generator=generator, device=device) if i + 1 < len(levels) \
                else mean
        return x

    @property
    def calls_per_sample(self) -> int:
        """Network evaluations per sample."""
        return len(self.kept_levels())
