"""One gradient step on the RSSM world model, shared by the agents that learn one (Dreamer, PlaNet).

The world model computes its loss terms (:meth:`RSSMWorldModel.loss`); the agent owns the optimiser, so
the step that weighs the terms by the config's scales, clips the gradient, steps Adam and moves the
slow target encoder lives here, outside any one agent's module.
"""

from __future__ import annotations

from typing import Callable

import torch

from reverie.agents.base import gradient_step, precision_context
from reverie.models import Batch, RSSMWorldModel, State, WorldModelConfig, loss_scales

__all__ = ["LossCall", "rssm_update"]


LossCall = Callable[[Batch], tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], State, State]]


def rssm_update(wm: RSSMWorldModel, batch: Batch, optimizer: torch.optim.Optimizer, cfg: WorldModelConfig,
                precision: str, loss: LossCall | None = None) -> tuple[dict[str, float], State]:
    """One gradient step on the RSSM world model's losses, weighted by ``cfg``'s scales (Dreamer and PlaNet).

    ``precision``: "bf16" computes the losses under bf16 autocast, anything else in float32. ``loss``
    computes them in place of ``wm.loss`` (a compiled version of it).
    Returns (metrics: the loss's own metrics, ``wm/grad_norm`` and each term's unweighted mean
    ``loss/<term>``; posterior states ``[B, T]``)."""
    with precision_context(precision, batch.reward.device):
        losses, tensors, post, _ = (loss or wm.loss)(batch)
    metrics = {k: float(v) for k, v in tensors.items()}
    metrics.update(gradient_step(losses, loss_scales(cfg), optimizer, wm.parameters(), cfg.grad_clip, prefix="wm/"))
    wm.update_target()
    return metrics, post
