"""Drawing candidate action sequences: uniform, Gaussian with colored noise, categorical.

Every function takes an optional ``torch.Generator`` (None draws from torch's
global generator) and returns float32 tensors on the device of its inputs.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def colored_noise(
    shape: tuple[int, ...],
    beta: float,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Gaussian noise whose power spectrum along the LAST axis falls off as 1 / f^beta.

    ``beta = 0`` is white noise, ``beta = 1`` pink, ``beta = 2`` red (Brownian-like);
    iCEM (Pinneri et al., 2020) uses beta around 2-3 so that sampled action
    sequences are smooth in time. Each element has zero mean and unit variance
    (the spectral scaling is normalised exactly), so the result can be used as
    ``mean + std * noise``.

    Args:
        shape: [..., T], time on the last axis.
        beta: power-law exponent, >= 0.

    Returns:
        [..., T] float32 noise.
    """
    if beta < 0:
        raise ValueError(f"colored noise needs an exponent beta >= 0; got {beta}.")
    if beta == 0 or shape[-1] < 2:
        return torch.randn(shape, generator=generator, device=device)
    steps = shape[-1]
    freqs = torch.fft.rfftfreq(steps, device=device)  # [F], F = T // 2 + 1, 0 .. 0.5
    # the DC term has no finite 1/f^beta scale; give it the lowest nonzero frequency's
    freqs[0] = freqs[1]
    scale = freqs.pow(-beta / 2.0)  # amplitude = sqrt(power)
    real = torch.randn((*shape[:-1], freqs.shape[0]), generator=generator, device=device)
    imag = torch.randn((*shape[:-1], freqs.shape[0]), generator=generator, device=device)
    # the DC term (and the Nyquist term for even T) of a real signal is real: draw it with the
    # same expected power 2 * scale^2 as a complex coefficient
    real_only = torch.zeros(freqs.shape[0], dtype=torch.bool, device=device)
    real_only[0] = True
    if steps % 2 == 0:
        real_only[-1] = True
    real = torch.where(real_only, real * math.sqrt(2.0), real)
    imag = torch.where(real_only, torch.zeros_like(imag), imag)
    spectrum = torch.complex(real * scale, imag * scale)
    signal = torch.fft.irfft(spectrum, n=steps, dim=-1)
    # exact variance of irfft's output: real-only terms contribute 2 s^2 / T^2,
    # conjugate pairs 4 s^2 / T^2
    power = torch.where(real_only, 2.0 * scale**2, 4.0 * scale**2).sum()
    return signal / torch.sqrt(power / steps**2)


def uniform_candidates(
    batch: int,
    count: int,
    horizon: int,
    action_size: int,
    *,
    discrete: bool,
    generator: torch.Generator | None,
    device: torch.device,
) -> Tensor:
    """Uniform random sequences [B, C, H, A]: in [-1, 1], or uniformly chosen one-hot actions."""
    if discrete:
        index = torch.randint(action_size, (batch, count, horizon), generator=generator, device=device)
        return torch.nn.functional.one_hot(index, action_size).float()
    unit = torch.rand((batch, count, horizon, action_size), generator=generator, device=device)
    return unit * 2.0 - 1.0


def gaussian_candidates(
    mean: Tensor,
    std: Tensor,
    count: int,
    *,
    beta: float = 0.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Sequences ``clamp(mean + std * noise, -1, 1)``: mean, std [B, H, A] -> [B, count, H, A].

    The noise is white (``beta = 0``) or colored along time (``beta > 0``).
    Clipping keeps every candidate inside the action bounds; the mass it puts
    on the bounds is what bang-bang optima need.
    """
    batch, horizon, action_size = mean.shape
    # time last so the spectrum is shaped along the horizon, then back to [B, C, H, A]
    noise = colored_noise((batch, count, action_size, horizon), beta, generator=generator, device=mean.device)
    noise = noise.transpose(2, 3)
    return (mean.unsqueeze(1) + std.unsqueeze(1) * noise).clamp(-1.0, 1.0)


def categorical_candidates(probs: Tensor, count: int, *, generator: torch.Generator | None = None) -> Tensor:
    """One-hot sequences drawn step by step from probs [B, H, K] -> [B, count, H, K]."""
    batch, horizon, choices = probs.shape
    index = torch.multinomial(probs.reshape(batch * horizon, choices), count, replacement=True, generator=generator)
    index = index.reshape(batch, horizon, count).transpose(1, 2)  # [B, C, H]
    return torch.nn.functional.one_hot(index, choices).float()


def gather_candidates(actions: Tensor, index: Tensor) -> Tensor:
    """Pick candidates per start state: actions [B, C, H, A], index [B, E] -> [B, E, H, A]."""
    batch, _, horizon, action_size = actions.shape
    expanded = index[:, :, None, None].expand(batch, index.shape[1], horizon, action_size)
    return actions.gather(1, expanded)
