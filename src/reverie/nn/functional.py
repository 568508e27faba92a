"""Plain functions of explicit arguments: symlog, two-hot, lambda-returns, the slow-copy (Polyak) update.

These are the numerical transforms DreamerV3 uses to make one set of
hyperparameters work across reward and observation scales.
"""

from __future__ import annotations

import torch
from torch import Tensor


def symlog(x: Tensor) -> Tensor:
    """sign(x) * log(1 + |x|): compresses large magnitudes, identity near 0."""
    return torch.sign(x) * torch.log1p(torch.abs(x))


def symexp(x: Tensor) -> Tensor:
    """Inverse of :func:`symlog`."""
    return torch.sign(x) * torch.expm1(torch.abs(x))


def symlog_bins(num_bins: int = 255, low: float = -20.0, high: float = 20.0,
                device: torch.device | str | None = None) -> Tensor:
    """Evenly spaced bin centres in symlog space, ``[num_bins]``."""
    return torch.linspace(low, high, num_bins, device=device)


def twohot(x: Tensor, bins: Tensor) -> Tensor:
    """Encode scalars as weights on their two neighbouring bins.

    x: ``[...]`` values in the same space as ``bins`` (e.g. already symlog'd);
    bins: ``[K]`` increasing. Returns ``[..., K]`` with at most two non-zero
    entries that sum to one and whose weighted mean of ``bins`` equals ``x``
    (values outside the range are clipped to the end bins).
    """
    k = bins.shape[0]
    x = x.clamp(bins[0], bins[-1])
    above = torch.searchsorted(bins, x.detach().contiguous(), right=False).clamp(1, k - 1)  # [...]
    below = above - 1
    lo, hi = bins[below], bins[above]
    w_hi = (x - lo) / (hi - lo)  # [...] in [0, 1]
    out = torch.zeros(*x.shape, k, device=x.device, dtype=x.dtype)
    out.scatter_(-1, below.unsqueeze(-1), (1 - w_hi).unsqueeze(-1))
    out.scatter_add_(-1, above.unsqueeze(-1), w_hi.unsqueeze(-1))
    return out


def simnorm(x: Tensor, group: int = 8) -> Tensor:
    """Simplicial normalisation (TD-MPC2): a softmax over each consecutive group of ``group`` entries of the
    last axis, ``[..., D]`` -> ``[..., D]`` (``D`` divisible by ``group``); every group sums to one."""
    if x.shape[-1] % group:
        raise ValueError(f"simnorm needs a last axis divisible by the group size {group}; got {x.shape[-1]}")
    # written out: torch.softmax over a last axis of 8 is ~8x slower on CPU (one kernel call per short row)
    g = x.unflatten(-1, (-1, group))
    g = (g - g.amax(-1, keepdim=True)).exp()
    return (g / g.sum(-1, keepdim=True)).flatten(-2)


def lambda_returns(reward: Tensor, value: Tensor, discount: Tensor, lam: float) -> Tensor:
    """TD(lambda) returns computed backwards over time.

    reward, discount: ``[T, ...]``, the reward and discount (gamma * cont)
    received on the transition *into* step t+1; value: ``[T + 1, ...]``.
    Returns ``[T, ...]`` with ``R_t = r_t + d_t ((1 - lam) v_{t+1} + lam R_{t+1})``
    and ``R_T = v_T`` as bootstrap.
    """
    assert value.shape[0] == reward.shape[0] + 1, (value.shape, reward.shape)
    out = []
    last = value[-1]
    for t in reversed(range(reward.shape[0])):
        last = reward[t] + discount[t] * ((1 - lam) * value[t + 1] + lam * last)
        out.append(last)
    return torch.stack(out[::-1])


@torch.no_grad()
def polyak_update(target: torch.nn.Module, source: torch.nn.Module, rate: float) -> None:
    """Move every parameter of ``target`` towards ``source``'s by ``rate``: ``w <- w + rate * (w_src - w)``
    (a slow copy with decay ``1 - rate``: Dreamer's slow critic, TD-MPC2's target Q, an EMA encoder)."""
    torch._foreach_lerp_(list(target.parameters()), list(source.parameters()), rate)
