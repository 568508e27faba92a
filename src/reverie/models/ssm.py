"""A diagonal linear state-space dynamics core (S5/Mamba-style) for the RSSM's deterministic path.

Each layer keeps a diagonal recurrence over ``P`` channels (complex, S5, by default; real, Mamba,
with ``complex=False``),

    h_t = a_t * h_{t-1} + b_t,    a_t = exp((-lambda + i omega) * dt_t),    b_t = dt_t * (B u_t),

with ``lambda = exp(log_rate) > 0`` and ``dt_t = softplus(dt_bias [+ W_dt u_t])`` > 0, so
``|a_t| < 1`` for any parameters: the recurrence is stable by construction. With
``selective=True`` the step size ``dt_t`` depends on the input (Mamba's selection: the
layer decides per step how much to forget); otherwise it is a learned constant per channel
and only the resets make ``a_t`` vary in time. The output ``y_t = C h_t + D * u_t`` feeds a
residual GELU projection.

Training runs the recurrence over a whole sequence with a parallel (Hillis-Steele) scan
of depth ``ceil(log2 T)``: :func:`parallel_scan` (the scans live in :mod:`reverie.models.scan`).
``chunk > 0`` runs the scan inside chunks of that many steps and carries the state across chunks
sequentially (:func:`chunked_scan`); :func:`loop_scan` is the step-by-step reference. With the RSSM's
R2I option (``model.rssm.r2i``, which sets :attr:`SequenceCore.lean_memory`) the whole sequence is scanned
by :func:`lean_scan`, whose backward pass keeps activation memory linear in T (``chunk`` is then unused).
Episode starts (``is_first``) set ``a_t = 0``, which resets the memory to zero exactly at that step and
lets the scan cross batch rows with different episode boundaries. Imagination and acting
step the same recurrence one step at a time (:meth:`SSMDynamics.step`).

Memory layout (entries of the RSSM state): ``ssm [.., layers, 2P]`` (real and imaginary parts) for the
complex diagonal, ``[.., layers, P]`` for the real one; kept real so a state stays real tensors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reverie.config import ConfigError, NonNegativeInt, PositiveFloat, PositiveInt, check_ranges
from reverie.models.scan import chunked_scan, lean_scan, loop_scan, parallel_scan
from reverie.models.sequence_core import CoreSettings, SequenceCore

__all__ = ["SSMConfig", "SSMDynamics", "SSMLayer", "chunked_scan", "lean_scan", "loop_scan", "parallel_scan"]


@dataclass(frozen=True)
class SSMConfig:
    """Sizes of the state-space dynamics (used when ``model.dynamics=ssm``)."""

    layers: PositiveInt = 2
    """Stacked SSM layers."""
    state: NonNegativeInt = 0
    """Diagonal state channels P per layer; 0 means the RSSM's ``deter`` size."""
    complex: bool = True
    """Complex diagonal (S5): channels decay and rotate, ``a = exp((-lambda + i omega) dt)``; a real
    diagonal (Mamba) only decays."""
    selective: bool = False
    """Input-dependent step size dt (Mamba-style selection) instead of a learned constant."""
    dt_min: PositiveFloat = 1e-3
    """Smallest initial step size (slowest channel forgets over ~1/(lambda dt_min) steps)."""
    dt_max: PositiveFloat = 1e-1
    """Largest initial step size."""
    chunk: NonNegativeInt = 0
    """Scan chunk length; 0 scans the whole sequence in parallel at once (1 is the step-by-step loop)."""

    def __post_init__(self) -> None:
        check_ranges(self)
        if self.dt_min > self.dt_max:
            raise ConfigError(f"model.ssm.dt_min ({self.dt_min}) must not exceed model.ssm.dt_max ({self.dt_max})")


class SSMLayer(nn.Module):
    """One diagonal SSM layer with a residual output: ``[.., dim]`` -> ``[.., dim]``."""

    def __init__(self, dim: int, state: int, cfg: SSMConfig):
        super().__init__()
        self.complex = cfg.complex
        parts = 2 if cfg.complex else 1
        self.norm = nn.LayerNorm(dim, eps=1e-3)
        self.inp = nn.Linear(dim, parts * state, bias=False)    # B (real and imaginary parts)
        self.out = nn.Linear(parts * state, dim, bias=False)    # C (on real and imaginary parts)
        self.skip = nn.Parameter(torch.ones(dim))               # D
        # lambda = exp(log_rate) > 0; S5's HiPPO-like start: lambda = 1/2, omega = pi n (complex),
        # Mamba's lambda = n + 1 (real)
        n = torch.arange(state, dtype=torch.float32)
        self.log_rate = nn.Parameter(torch.full((state,), -math.log(2.0)) if cfg.complex else torch.log(n + 1))
        self.freq = nn.Parameter(math.pi * n) if cfg.complex else None
        dt = torch.exp(torch.linspace(math.log(cfg.dt_min), math.log(cfg.dt_max), state))
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))  # softplus^-1(dt)
        self.dt_proj = nn.Linear(dim, state, bias=False) if cfg.selective else None
        if self.dt_proj is not None:
            nn.init.zeros_(self.dt_proj.weight)                 # start at the constant dt
        self.proj = nn.Linear(dim, dim)

    def coefficients(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(normed input u, decay a, input b) for inputs ``x [.., dim]``; a and b ``[.., P]``, float32
        (complex64 for a complex diagonal)."""
        u = self.norm(x)
        pre = self.dt_bias if self.dt_proj is None else self.dt_bias + self.dt_proj(u)
        dt = F.softplus(pre.float())
        b = self.inp(u).float()
        if self.freq is not None:                               # a complex diagonal (cfg.complex)
            a = torch.exp(torch.complex(-torch.exp(self.log_rate) * dt, self.freq * dt))
            b = dt * torch.complex(*b.chunk(2, -1))
        else:
            a = torch.exp(-torch.exp(self.log_rate) * dt)
            b = dt * b
        if self.dt_proj is None:
            a = a.expand_as(b)
        return u, a, b

    def readout(self, x: Tensor, u: Tensor, h: Tensor) -> Tensor:
        """The layer's output for the scanned state ``h [.., P]`` (as returned by :meth:`coefficients`)."""
        y = self.out(to_real(h).to(u.dtype)) + self.skip * u
        return x + self.proj(F.gelu(y))


def to_real(h: Tensor) -> Tensor:
    """A complex state ``[.., P]`` as real ``[.., 2P]`` (real parts, then imaginary); real states as they are."""
    return torch.cat([h.real, h.imag], -1) if h.is_complex() else h


def to_complex(h: Tensor, complex_: bool) -> Tensor:
    """Inverse of :func:`to_real`."""
    return torch.complex(*h.float().chunk(2, -1)) if complex_ else h.float()


class SSMDynamics(SequenceCore):
    """The SSM stack as a sequence core (:mod:`reverie.models.sequence_core`): inputs ``[.., hidden]`` ->
    deterministic states ``[.., deter]`` (memory ``ssm``), a whole sequence by a parallel scan; the posterior
    comes from the embedding alone."""

    memory_keys = ("ssm",)
    parallel_posterior = True

    def __init__(self, cfg: SSMConfig, hidden: int, deter: int):
        super().__init__(hidden, deter)
        self.cfg = cfg
        self.state_size = cfg.state or deter
        self.inp = nn.Linear(hidden, deter)
        self.layers = nn.ModuleList(SSMLayer(deter, self.state_size, cfg) for _ in range(cfg.layers))
        self.norm = nn.LayerNorm(deter, eps=1e-3)

    @classmethod
    def build(cls, hidden: int, deter: int, settings: CoreSettings | None = None) -> SSMDynamics:
        if settings is not None and not isinstance(settings, SSMConfig):
            raise ConfigError(f"the ssm sequence core takes an SSMConfig, got {type(settings).__name__}")
        return cls(settings or SSMConfig(), hidden, deter)

    def initial_memory(self, batch: int, device: torch.device | str | None) -> dict[str, Tensor]:
        parts = 2 if self.cfg.complex else 1
        return {"ssm": torch.zeros(batch, len(self.layers), parts * self.state_size, device=device)}

    def _scan(self, a: Tensor, b: Tensor, h0: Tensor) -> Tensor:
        if self.lean_memory:
            return lean_scan(a, b, h0)
        if self.cfg.chunk == 1:
            return loop_scan(a, b, h0)
        if self.cfg.chunk > 1:
            return chunked_scan(a, b, h0, self.cfg.chunk)
        return parallel_scan(a, b, h0)

    def sequence(self, x: Tensor, is_first: Tensor, memory: dict[str, Tensor]
                 ) -> tuple[Tensor, dict[str, Tensor]]:
        """Inputs ``x [B, T, hidden]``, ``is_first [B, T]``, memory before the sequence ``[B]`` ->
        (deter ``[B, T, D]``, memory after every step ``[B, T]``). The memory is zero right
        before a step with ``is_first``."""
        keep = (~is_first.bool()).float()[..., None]             # [B, T, 1]
        x = self.inp(x)
        hs = []
        for i, layer in enumerate(cast("Iterable[SSMLayer]", self.layers)):   # torch's ModuleList is untyped
            u, a, b = layer.coefficients(x)
            h = self._scan(a * keep, b, to_complex(memory["ssm"][:, i], self.cfg.complex))
            hs.append(to_real(h))
            x = layer.readout(x, u, h)
        return self.norm(x), {"ssm": torch.stack(hs, 2)}

    def step(self, x: Tensor, memory: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """One step: ``x [N, hidden]``, memory ``[N]`` -> (deter ``[N, D]``, memory ``[N]``)."""
        x = self.inp(x)
        hs = []
        for i, layer in enumerate(cast("Iterable[SSMLayer]", self.layers)):   # torch's ModuleList is untyped
            u, a, b = layer.coefficients(x)
            h = a * to_complex(memory["ssm"][:, i], self.cfg.complex) + b
            hs.append(to_real(h))
            x = layer.readout(x, u, h)
        return self.norm(x), {"ssm": torch.stack(hs, 1)}
