"""What a TD-MPC2 update reports per task and per expert: the pure arithmetic behind its multitask metrics.

- :func:`routing_report`: for mixture-of-experts dynamics, the Switch load-balancing loss over every
  dynamics input of the unroll that lies inside its episode, the share of those inputs routed to each
  expert (``moe/expert<e>``) and, in a multitask run, the same shares among each task's inputs
  (``task<k>/moe/expert<e>``): whether the experts specialise by task.
- :func:`task_report`: each task's mean consistency loss (``task<k>/loss/consistency``).

``k`` is the task's place in ``run.env``; a task with no row in the batch reports nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from reverie.models.moe import Routing, expert_usage, load_balance_loss
from reverie.models.tdmpc2 import TaskCode

__all__ = ["routing_report", "task_report"]


def routing_report(routings: Sequence[Routing | None], valid: Tensor, task: TaskCode | None
                   ) -> tuple[Tensor | None, dict[str, float]]:
    """(the load-balancing loss, or None for dense dynamics; the expert shares) of the unroll's routings,
    one per step ``t`` over ``[B]`` inputs; ``valid [B, H]``: 1 where step ``t``'s input is inside its episode."""
    if not routings or routings[0] is None:
        return None, {}
    steps = [r for r in routings if r is not None]
    routing = Routing(torch.cat([r.probs for r in steps]), torch.cat([r.dispatch for r in steps]))   # [H * B, E]
    weight = valid.transpose(0, 1).reshape(-1)                                      # [H * B], step-major
    loss = load_balance_loss(routing, weight)
    metrics = {f"moe/expert{e}": float(u) for e, u in enumerate(expert_usage(routing, weight))}
    if task is not None:
        index = task.onehot.argmax(-1).repeat(len(steps))                          # [H * B]
        for k in range(task.onehot.shape[-1]):
            own = weight * (index == k)
            if own.sum() > 0:
                metrics.update({f"task{k}/moe/expert{e}": float(u) for e, u in enumerate(expert_usage(routing, own))})
    return loss, metrics


def task_report(consistency: Tensor, task: TaskCode | None) -> dict[str, float]:
    """``task<k>/loss/consistency``: the mean of ``consistency [B]`` over each task's rows (nothing for one task)."""
    if task is None:
        return {}
    index = task.onehot.argmax(-1)
    return {f"task{k}/loss/consistency": float(consistency[index == k].mean())
            for k in range(task.onehot.shape[-1]) if bool((index == k).any())}
