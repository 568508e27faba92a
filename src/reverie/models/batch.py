"""The typed training batch: what the replay hands to a model, shape-checked once at the boundary.

A replay sample is a dict of numpy arrays ``[B, T, ...]``; :meth:`Batch.build`
turns it into tensors on the model's device and checks every entry against
the observation and action specs, so a mismatch is one sentence that names
the key, not a reshape error deep inside a network.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np
import torch
from torch import Tensor

from reverie.specs import ActionSpec, ArraySpec

__all__ = ["Batch", "BatchError"]

_FLAGS = ("is_first", "is_last", "is_terminal")


class BatchError(ValueError):
    """A replay batch whose keys or shapes do not fit the model."""


@dataclass(frozen=True)
class Batch:
    """Sequences of B streams and T steps; ``action[:, t]`` led into step t, ``reward[:, t]`` was received on
    arriving there."""

    obs: dict[str, Tensor]
    """Observation keys, each ``[B, T, *shape]`` (images stay uint8)."""
    action: Tensor
    """``[B, T, A]`` float32 model-space actions (one-hot for discrete actions)."""
    reward: Tensor
    """``[B, T]`` float32."""
    is_first: Tensor
    """``[B, T]`` bool: an episode starts here."""
    is_last: Tensor
    """``[B, T]`` bool: an episode ends here."""
    is_terminal: Tensor
    """``[B, T]`` bool: it ends because the task ended (no bootstrapping past it)."""
    extras: dict[str, Tensor] = field(default_factory=dict)
    """What the agent stored next to each step while acting (e.g. a search policy ``[B, T, K]``)."""

    @property
    def shape(self) -> tuple[int, int]:
        """(B, T)."""
        b, t = self.reward.shape
        return b, t

    @classmethod
    def build(cls, data: Mapping[str, np.ndarray], obs_spec: Mapping[str, ArraySpec], act_spec: ActionSpec,
              device: torch.device | str = "cpu", extras_spec: Mapping[str, ArraySpec] | None = None) -> "Batch":
        """Check ``data`` (numpy or tensors ``[B, T, ...]``) against the specs and move it to ``device``."""
        extras_spec = extras_spec or {}
        needed = [*obs_spec, "action", "reward", *_FLAGS, *extras_spec]
        missing = [k for k in needed if k not in data]
        if missing:
            raise BatchError(f"the batch lacks {missing}; it has {sorted(data)}")
        lead = tuple(np.shape(data["reward"]))
        if len(lead) != 2:
            raise BatchError(f"'reward' must be [B, T]; got shape {list(lead)}")

        def get(key: str, trailing: tuple[int, ...]) -> Tensor:
            value = torch.as_tensor(data[key], device=device)
            if tuple(value.shape) != lead + trailing:
                want = ", ".join(["B", "T", *map(str, trailing)])
                raise BatchError(f"batch entry '{key}' has shape {list(value.shape)}, but the model expects "
                                 f"[{want}] with B, T = {lead[0]}, {lead[1]}")
            return value

        return cls(
            obs={k: get(k, tuple(spec.shape)) for k, spec in obs_spec.items()},
            action=get("action", (act_spec.size,)).float(),
            reward=get("reward", ()).float(),
            is_first=get("is_first", ()).bool(),
            is_last=get("is_last", ()).bool(),
            is_terminal=get("is_terminal", ()).bool(),
            extras={k: get(k, tuple(spec.shape)) for k, spec in extras_spec.items()},
        )
