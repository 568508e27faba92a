"""What the training loop, evaluation and CLI need from an agent."""

from __future__ import annotations

import contextlib
from typing import Any, Protocol

import numpy as np
import torch

from reverie.envs.spaces import ActionSpec


class Agent(Protocol):
    """An agent composes a world model with a way of acting; the loop owns the environment."""

    name: str

    def init_state(self, batch: int) -> Any:
        """Recurrent state for ``batch`` environments before their first step."""

    def act(self, step: dict[str, np.ndarray], state: Any, explore: bool) -> tuple[np.ndarray, np.ndarray, Any]:
        """step: observation dict ``[N, ...]`` including ``action`` (the model-space action that led
        into it) and ``is_first``. Returns (env actions, model-space actions ``[N, A]``, new state)."""

    def train(self, batch: dict[str, np.ndarray]) -> dict[str, float]:
        """One update from a replay batch ``[B, T, ...]``; returns metrics.

        An agent that instead refits on all stored data at intervals (PETS) defines
        ``fit(replay) -> metrics`` and ``fit_every`` (agent steps); the loop then calls that.
        """

    def tensors(self) -> dict[str, dict[str, torch.Tensor]]:
        """Everything to checkpoint as named state dicts (weights and optimiser states)."""

    def load_tensors(self, tensors: dict[str, dict[str, Any]]) -> None:
        """Restore what :meth:`tensors` returned."""


def to_model_action(action: np.ndarray, spec: ActionSpec) -> np.ndarray:
    """Env actions (``[N]`` indices or ``[N, A]`` floats) -> model-space float32 ``[N, A]``."""
    if spec.discrete:
        return np.eye(spec.size, dtype=np.float32)[np.asarray(action, dtype=np.int64)]
    return np.asarray(action, dtype=np.float32).reshape(-1, spec.size)


def to_env_action(action: torch.Tensor, spec: ActionSpec) -> np.ndarray:
    """Model-space actions ``[N, A]`` -> env actions (indices or floats clipped to [-1, 1])."""
    if spec.discrete:
        return action.argmax(-1).cpu().numpy().astype(np.int64)
    return action.clamp(-1, 1).float().cpu().numpy()


def precision_context(precision: str, device: torch.device):
    """bf16 autocast for ``precision == "bf16"``, otherwise nothing."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def world_model_update(wm: torch.nn.Module, opt: torch.optim.Optimizer, data: dict[str, torch.Tensor],
                       grad_clip: float, precision: str) -> tuple[dict[str, float], Any]:
    """One gradient step on the world model's summed losses.

    Returns (metrics including per-term losses and the gradient norm, posterior states ``[B, T]``).
    """
    with precision_context(precision, data["reward"].device):
        losses, metrics, post, _ = wm.loss(data)
        loss = sum(v.mean() for v in losses.values())
    opt.zero_grad(set_to_none=True)
    loss.backward()
    metrics["wm/grad_norm"] = float(torch.nn.utils.clip_grad_norm_(wm.parameters(), grad_clip))
    opt.step()
    metrics.update({f"loss/{k}": float(v.detach().mean()) for k, v in losses.items()})
    return metrics, post
