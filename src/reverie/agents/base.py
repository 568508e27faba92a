"""What the training loop, evaluation and CLI need from an agent."""

from __future__ import annotations

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
