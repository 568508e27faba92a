"""EDM diffusion (Karras et al., 2022), as DIAMOND uses it to generate the next frame.

A network ``F`` is wrapped into a denoiser by the preconditioning of EDM's Table 1:

    D(x; sigma) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x, c_noise(sigma))
    c_skip = sigma_data^2 / (sigma^2 + sigma_data^2)      c_out = sigma sigma_data / sqrt(sigma^2 + sigma_data^2)
    c_in   = 1 / sqrt(sigma^2 + sigma_data^2)             c_noise = log(sigma) / 4

Training draws ``ln sigma ~ N(loc, scale^2)`` and regresses ``F`` on ``(x0 - c_skip x) / c_out``, which is
the denoising loss weighted by EDM's ``lambda(sigma) = 1 / c_out^2``. DIAMOND adds *offset noise*: a
per-image, per-channel constant of std ``offset`` added with the noise (so the model learns to change a
frame's mean brightness), the coefficients being taken at ``sqrt(sigma^2 + offset^2)``.

Sampling integrates the probability-flow ODE ``dx/dsigma = (x - D(x; sigma)) / sigma`` over Karras'
schedule ``sigma_i = (s_max^(1/rho) + i/(n-1) (s_min^(1/rho) - s_max^(1/rho)))^rho``, then 0, with Euler
steps (DIAMOND's default, 3 of them) or Heun's second-order correction (not on the last step to 0).
Unlike DIAMOND (which starts from unit noise), the start is ``sigma_max`` times unit noise, EDM's own.

A *network* here is ``net(x_in [N, ...], noise [N]) -> [N, ...]``: the conditioning (past frames,
actions) is bound by the caller, so the same process serves any conditional model
(:class:`~reverie.models.ddpm.DDPM` has the same two methods).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

import torch
from torch import Tensor

from reverie.config import NonNegativeFloat, PositiveFloat, PositiveInt, check_ranges

#: ``net(x_in [N, ...], noise level [N]) -> [N, ...]``: a diffusion model's network, conditioning bound.
Network = Callable[[Tensor, Tensor], Tensor]
#: ``denoise(x [N, ...], sigma [N]) -> [N, ...]``: an estimate of the clean sample.
Denoiser = Callable[[Tensor, Tensor], Tensor]

__all__ = ["EDM", "EDMConfig", "Denoiser", "Network", "edm_coefficients", "karras_sigmas", "ode_sample"]


@dataclass(frozen=True)
class EDMConfig:
    """EDM's settings; the defaults are DIAMOND's (Atari)."""

    sigma_data: PositiveFloat = 0.5
    """Standard deviation of the data (frames in [-1, 1])."""
    offset_noise: NonNegativeFloat = 0.3
    """Std of the per-channel constant added with the training noise (DIAMOND's ``sigma_offset_noise``)."""
    loc: float = -0.4
    """Mean of ln(sigma) in training."""
    scale: PositiveFloat = 1.2
    """Std of ln(sigma) in training."""
    train_sigma_min: PositiveFloat = 2e-3
    """Smallest training sigma (draws are clipped)."""
    train_sigma_max: PositiveFloat = 20.0
    """Largest training sigma."""
    sigma_min: PositiveFloat = 2e-3
    """Last nonzero sigma of the sampling schedule."""
    sigma_max: PositiveFloat = 5.0
    """First sigma of the sampling schedule."""
    rho: PositiveFloat = 7.0
    """Curvature of Karras' schedule."""
    steps: PositiveInt = 3
    """Denoising steps per sample (network calls: ``steps`` for Euler, ``2 steps - 1`` for Heun)."""
    order: Literal["euler", "heun"] = "euler"
    """ODE solver: Euler (first order) or Heun (second order)."""

    def __post_init__(self):
        check_ranges(self)


def edm_coefficients(sigma: Tensor, sigma_data: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(c_skip, c_out, c_in, c_noise)`` at noise levels ``sigma [...]`` (EDM's Table 1)."""
    total = sigma ** 2 + sigma_data ** 2
    return sigma_data ** 2 / total, sigma * sigma_data / total.sqrt(), 1 / total.sqrt(), sigma.log() / 4


def karras_sigmas(steps: int, sigma_min: float, sigma_max: float, rho: float,
                  device: torch.device | str = "cpu") -> Tensor:
    """``[steps + 1]`` decreasing noise levels from ``sigma_max`` to ``sigma_min``, then 0 (one level, ``sigma_max``,
    for a single step)."""
    ramp = torch.linspace(0, 1, steps, dtype=torch.float64) if steps > 1 else torch.zeros(1, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sigmas = (hi + ramp * (lo - hi)) ** rho
    return torch.cat([sigmas, sigmas.new_zeros(1)]).float().to(device)


def ode_sample(denoise: Denoiser, x: Tensor, sigmas: Tensor, order: str = "euler") -> Tensor:
    """Integrate the probability-flow ODE from ``x [N, ...]`` at ``sigmas[0]`` down ``sigmas [S + 1]`` (last 0).

    Euler: ``x += (sigma' - sigma) (x - D(x; sigma)) / sigma``; Heun averages that slope with the one at the
    Euler estimate, except on the step to 0 (where the slope is undefined)."""
    ones = x.new_ones(x.shape[0])
    for sigma, nxt in zip(sigmas[:-1], sigmas[1:]):
        slope = (x - denoise(x, sigma * ones)) / sigma
        euler = x + (nxt - sigma) * slope
        if order == "heun" and float(nxt) > 0:
            slope2 = (euler - denoise(euler, nxt * ones)) / nxt
            x = x + (nxt - sigma) * (slope + slope2) / 2
        else:
            x = euler
    return x


def _bcast(v: Tensor, like: Tensor) -> Tensor:
    return v.reshape(-1, *[1] * (like.dim() - 1))


class EDM:
    """EDM's training loss and sampler for a network (see the module docstring)."""

    def __init__(self, cfg: EDMConfig):
        self.cfg = cfg

    def coefficients(self, sigma: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The preconditioning at ``sigma [N]``, offset noise included (DIAMOND's convention)."""
        return edm_coefficients((sigma ** 2 + self.cfg.offset_noise ** 2).sqrt(), self.cfg.sigma_data)

    def denoiser(self, net: Network) -> Denoiser:
        """``D(x; sigma)`` of ``net`` (clamped to the data's range [-1, 1])."""
        def denoise(x: Tensor, sigma: Tensor) -> Tensor:
            c_skip, c_out, c_in, c_noise = self.coefficients(sigma)
            out = _bcast(c_skip, x) * x + _bcast(c_out, x) * net(_bcast(c_in, x) * x, c_noise)
            return out.clamp(-1, 1)
        return denoise

    def loss(self, net: Network, x0: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Per-sample denoising loss ``[N]`` of ``net`` on clean samples ``x0 [N, C, ...]``."""
        cfg, n = self.cfg, x0.shape[0]
        log_sigma = cfg.loc + cfg.scale * torch.randn(n, generator=generator, device=x0.device)
        sigma = log_sigma.exp().clamp(cfg.train_sigma_min, cfg.train_sigma_max)
        offset = cfg.offset_noise * torch.randn(n, x0.shape[1], *[1] * (x0.dim() - 2), generator=generator,
                                                device=x0.device)
        noisy = x0 + offset + _bcast(sigma, x0) * torch.randn(x0.shape, generator=generator, device=x0.device)
        c_skip, c_out, c_in, c_noise = self.coefficients(sigma)
        target = (x0 - _bcast(c_skip, x0) * noisy) / _bcast(c_out, x0)
        pred = net(_bcast(c_in, x0) * noisy, c_noise)
        return ((pred - target) ** 2).flatten(1).mean(1)

    def sample(self, net: Network, shape: tuple[int, ...], device: torch.device | str = "cpu",
               generator: torch.Generator | None = None, start: Tensor | None = None) -> Tensor:
        """A sample ``[*shape]`` (``shape[0]`` = N) from ``cfg.steps`` solver steps; ``start``: the unit noise to
        begin from (drawn with ``generator`` when None)."""
        cfg = self.cfg
        sigmas = karras_sigmas(cfg.steps, cfg.sigma_min, cfg.sigma_max, cfg.rho, device)
        noise = start if start is not None else torch.randn(shape, generator=generator, device=device)
        return ode_sample(self.denoiser(net), noise * sigmas[0], sigmas, cfg.order)

    @property
    def calls_per_sample(self) -> int:
        """Network evaluations per sample."""
        return self.cfg.steps if self.cfg.order == "euler" else 2 * self.cfg.steps - 1

