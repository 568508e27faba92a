"""Keeping weights near those that solved the last task: an L2 or EWC pull towards an anchor.

The penalty is ``Omega(theta) = (weight / 2) * sum_i F_i * (theta_i - anchor_i)^2`` over the tracked
parameters: ``F_i = 1`` for ``"l2"`` (L2-SP, Li et al. 2018), and for ``"ewc"`` (Kirkpatrick et al. 2017)
the diagonal empirical Fisher information, a running mean of the squared gradients of the training loss,
frozen when the anchor is set and divided by its mean over all tracked weights (so ``weight`` means the
same for both kinds: the pull on a weight of average importance).

Agents own their losses and optimisers, so the penalty is not added to their loss; it is applied decoupled
from the optimiser, as AdamW applies weight decay: after each update, :meth:`WeightAnchor.pull` takes one
gradient step of size one on ``Omega``, ``theta <- theta - weight * F * (theta - anchor)``, with each
factor ``weight * F_i`` capped at 1 so a weight is never pushed past its anchor. Until the first anchor is
set (the first task switch) nothing is pulled.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import torch
from torch import Tensor, nn

__all__ = ["KINDS", "WeightAnchor"]

KINDS = ("l2", "ewc")


class WeightAnchor:
    """An L2 or EWC pull of ``params`` towards their values at :meth:`set_anchor` (see the module docstring).

    Args:
        params: the tracked parameters by name (those with ``requires_grad``).
        kind: ``"l2"`` or ``"ewc"``.
        weight: ``lambda`` in ``[0, 1]``, the fraction of its distance to the anchor that a weight of
            average importance loses per :meth:`pull`.
        decay: of the running mean of squared gradients (ewc); ``g2 <- decay * g2 + (1 - decay) * grad^2``.
    """

    def __init__(self, params: Mapping[str, nn.Parameter], kind: Literal["l2", "ewc"], weight: float,
                 decay: float = 0.99):
        if kind not in KINDS:
            raise ValueError(f"WeightAnchor kind must be one of {KINDS}, got {kind!r}")
        if not (0.0 <= weight <= 1.0 and 0.0 <= decay < 1.0):
            raise ValueError(f"WeightAnchor needs 0 <= weight <= 1 and 0 <= decay < 1, got {weight}, {decay}")
        self.params = {name: p for name, p in params.items() if p.requires_grad}
        self.kind, self.weight, self.decay = kind, float(weight), float(decay)
        self.squared_grads = {name: torch.zeros_like(p, memory_format=torch.preserve_format)
                              for name, p in self.params.items()}
        self.anchor: dict[str, Tensor] | None = None
        self.importance: dict[str, Tensor] | None = None   # F, normalised to mean 1

    def observe_gradients(self) -> None:
        """Fold the parameters' current ``.grad`` (the update just made) into the running mean of their
        squares; parameters without a gradient this time are left as they are."""
        if self.kind != "ewc":
            return
        with torch.no_grad():
            for name, p in self.params.items():
                if p.grad is not None:
                    self.squared_grads[name].mul_(self.decay).addcmul_(p.grad, p.grad, value=1.0 - self.decay)

    def set_anchor(self) -> None:
        """Anchor at the current weights; for ewc, freeze the Fisher estimate gathered so far."""
        with torch.no_grad():
            self.anchor = {name: p.detach().clone() for name, p in self.params.items()}
            if self.kind == "l2":
                self.importance = {name: torch.ones_like(p) for name, p in self.params.items()}
                return
            total = sum(float(g.sum()) for g in self.squared_grads.values())
            count = sum(g.numel() for g in self.squared_grads.values())
            mean = total / max(count, 1)
            scale = 1.0 / mean if mean > 0 else 0.0        # no gradients seen: nothing is known to matter
            self.importance = {name: g * scale for name, g in self.squared_grads.items()}

    def penalty(self) -> Tensor:
        """``Omega(theta)``, differentiable in the parameters; 0 before the first anchor."""
        if self.anchor is None or self.importance is None:
            return torch.zeros(())
        terms = [(self.importance[n] * (p - self.anchor[n]).pow(2)).sum() for n, p in self.params.items()]
        return 0.5 * self.weight * torch.stack(terms).sum()

    @torch.no_grad()
    def pull(self) -> float:
        """One capped gradient step on :meth:`penalty` (see the module docstring); returns the penalty
        before it, 0 before the first anchor."""
        if self.anchor is None or self.importance is None:
            return 0.0
        before = float(self.penalty().detach())
        for name, p in self.params.items():
            factor = (self.weight * self.importance[name]).clamp(max=1.0)
            p.sub_(factor * (p - self.anchor[name]))
        return before

    def state_dict(self) -> dict[str, Tensor]:
        """Tensors to checkpoint: the running squared gradients, and the anchor and importance once set."""
        out = {f"g2/{n}": g for n, g in self.squared_grads.items()}
        if self.anchor is not None and self.importance is not None:
            out.update({f"anchor/{n}": a for n, a in self.anchor.items()})
            out.update({f"importance/{n}": f for n, f in self.importance.items()})
        return out

    def load_state_dict(self, state: Mapping[str, Tensor]) -> None:
        """Restore :meth:`state_dict` (onto the parameters' devices)."""
        with torch.no_grad():
            for name, p in self.params.items():
                self.squared_grads[name] = state[f"g2/{name}"].to(p.device, p.dtype).clone()
            if f"anchor/{next(iter(self.params))}" in state:
                self.anchor = {n: state[f"anchor/{n}"].to(p.device, p.dtype).clone() for n, p in self.params.items()}
                self.importance = {n: state[f"importance/{n}"].to(p.device, p.dtype).clone()
                                   for n, p in self.params.items()}
