"""Scans of the diagonal linear recurrence ``h_t = a_t * h_{t-1} + b_t`` over a sequence (axis 1).

The SSM dynamics (:mod:`reverie.models.ssm`) run their layers' recurrences with one of these; all give the same
states (``a, b [B, T, ...]``, real or complex, ``h0 [B, ...]`` the state before the sequence):

- :func:`loop_scan`: the reference, one step at a time (T sequential steps);
- :func:`parallel_scan`: Hillis-Steele, ``ceil(log2 T)`` rounds of whole-sequence products. Through autograd
  every round's products are kept for the backward pass: activation memory ``O(T log T)``;
- :func:`chunked_scan`: the parallel scan inside chunks, the state carried across chunks;
- :func:`lean_scan`: the parallel scan with a hand-written backward (:class:`LeanScan`). It keeps only ``a`` and
  the states ``h`` (memory linear in T, R2I's requirement for training on long sequences) and computes the
  gradient with a second scan run backwards in time,

      g_t = dL/dh_t + conj(a_{t+1}) g_{t+1},   dL/db_t = g_t,   dL/da_t = g_t conj(h_{t-1}),   dL/dh0 = conj(a_0) g_0

  (torch's convention for complex gradients: the conjugate Wirtinger derivative, so a product's gradient is the
  incoming one times the other factor's conjugate).

Episode boundaries inside a sequence are part of the recurrence, not of the scan: ``a_t = 0`` at an episode's
first step forgets everything before it (``h_t = b_t``), and every scan here composes such steps exactly, so rows
of a batch may reset at different steps.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

__all__ = ["LeanScan", "chunked_scan", "lean_scan", "loop_scan", "parallel_scan"]


def loop_scan(a: Tensor, b: Tensor, h0: Tensor | None = None) -> Tensor:
    """Reference: ``h_t = a_t * h_{t-1} + b_t`` step by step over axis 1; ``a, b [B, T, ...]``, ``h0 [B, ...]``."""
    h = torch.zeros_like(b[:, 0]) if h0 is None else h0
    out = []
    for t in range(a.shape[1]):
        h = a[:, t] * h + b[:, t]
        out.append(h)
    return torch.stack(out, 1)


def parallel_scan(a: Tensor, b: Tensor, h0: Tensor | None = None) -> Tensor:
    """The same recurrence as :func:`loop_scan` with a Hillis-Steele scan: ``ceil(log2 T)`` rounds.

    The pairs ``(a, b)`` compose associatively, ``(a1, b1) then (a2, b2) = (a2 a1, a2 b1 + b2)``;
    after round ``r`` position t holds the composition of steps ``t - 2^r + 1 .. t``.
    """
    if h0 is not None:
        b = torch.cat([(a[:, :1] * h0[:, None] + b[:, :1]), b[:, 1:]], 1)
    steps, d = a.shape[1], 1
    while d < steps:
        b = torch.cat([b[:, :d], a[:, d:] * b[:, :-d] + b[:, d:]], 1)
        a = torch.cat([a[:, :d], a[:, d:] * a[:, :-d]], 1)
        d *= 2
    return b


def chunked_scan(a: Tensor, b: Tensor, h0: Tensor | None = None, chunk: int = 64) -> Tensor:
    """:func:`parallel_scan` inside chunks of ``chunk`` steps, the state carried from chunk to chunk:
    ``T log(chunk)`` work instead of ``T log T``, ``T / chunk`` sequential rounds."""
    out, h = [], h0
    for s in range(0, a.shape[1], chunk):
        part = parallel_scan(a[:, s:s + chunk], b[:, s:s + chunk], h)
        h = part[:, -1]
        out.append(part)
    return torch.cat(out, 1)


class LeanScan(torch.autograd.Function):
    """:func:`parallel_scan` whose backward pass keeps only ``a`` and ``h`` (see the module docstring)."""

    @staticmethod
    def forward(ctx: FunctionCtx, a: Tensor, b: Tensor, h0: Tensor) -> Tensor:
        with torch.no_grad():
            h = parallel_scan(a, b, h0)
        ctx.save_for_backward(a, h, h0)
        return h

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_h: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        a, h, h0 = ctx.saved_tensors
        # the gradient reaching h_t from every later step: a scan of the same form, run backwards in time
        a_next = torch.cat([a[:, 1:], torch.zeros_like(a[:, :1])], 1).conj()
        g = parallel_scan(a_next.flip(1), grad_h.flip(1)).flip(1)
        grad_a = g * torch.cat([h0[:, None].to(h.dtype), h[:, :-1]], 1).conj()
        grad_h0 = a[:, 0].conj() * g[:, 0]
        if not a.is_complex() and grad_a.is_complex():
            grad_a = grad_a.real
        if not h0.is_complex() and grad_h0.is_complex():
            grad_h0 = grad_h0.real
        need_a, need_b, need_h0 = ctx.needs_input_grad
        return grad_a if need_a else None, g if need_b else None, grad_h0 if need_h0 else None


def lean_scan(a: Tensor, b: Tensor, h0: Tensor | None = None) -> Tensor:
    """The states of :func:`parallel_scan` with activation memory linear in T (:class:`LeanScan`).

    ``a`` and ``b`` must have the same shape ``[B, T, ...]`` (expand a shared decay first); ``h0 [B, ...]``."""
    if a.shape != b.shape:
        raise ValueError(f"lean_scan needs a and b of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    out = LeanScan.apply(a, b, torch.zeros_like(b[:, 0]) if h0 is None else h0)
    assert isinstance(out, Tensor)
    return out
