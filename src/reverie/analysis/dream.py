"""Open-loop prediction: filter on the first observations, then imagine the rest.

Given a real episode's observations and actions, the model observes the first
``context`` steps and then predicts the remaining ones from its prior alone,
fed with the actions that were really taken. Comparing the decoded
predictions with what really happened shows how far ahead the model is right.
"""

from __future__ import annotations

import numpy as np
import torch

from reverie.models.base import WorldModel, decoder_head, stack_states
from reverie.models.state import state_entries


@torch.no_grad()
def open_loop(wm: WorldModel, obs: dict[str, np.ndarray], action: np.ndarray, context: int,
              device: torch.device | str = "cpu") -> dict[str, np.ndarray]:
    """Open-loop predictions of one episode.

    obs: ``{key: [T, ...]}``; action: ``[T, A]`` model-space actions, ``action[t]`` leading into
    step t; context: steps observed before imagining (1 <= context < T).
    Returns ``{key: [T, ...]}`` decoded observations: reconstructions for the first ``context``
    steps, open-loop predictions afterwards (images as uint8).
    """
    decode = decoder_head(wm, "open-loop prediction of observations")
    steps = action.shape[0]
    if not 1 <= context < steps:
        raise ValueError(f"context must be between 1 and the episode length - 1 ({steps - 1}), got {context}")
    to_t = {k: torch.as_tensor(v[None, :context], device=device) for k, v in obs.items()}
    act = torch.as_tensor(action, device=device, dtype=torch.float32)
    is_first = torch.zeros(1, context, dtype=torch.bool, device=device)
    is_first[:, 0] = True
    post, state = wm.observe(to_t, act[None, :context], is_first)
    imagined = []
    for t in range(context, steps):
        state = wm.step(state, act[None, t])
        imagined.append(state)
    post = {k: v[0] for k, v in state_entries(post).items()}                     # [context, ...]
    prior = {k: v[:, 0] for k, v in state_entries(stack_states(imagined, 0)).items()}  # [T - context, ...]
    out = {}
    recon, pred = decode(post), decode(prior)
    for k in obs:
        both = torch.cat([recon[k], pred[k]], 0).float().cpu().numpy()
        out[k] = both.round().clip(0, 255).astype(np.uint8) if obs[k].dtype == np.uint8 else both
    return out


def prediction_error(real: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Mean squared error per step ``[T]`` between ``[T, ...]`` arrays (images scaled to [0, 1])."""
    scale = 255.0 if real.dtype == np.uint8 else 1.0
    diff = (real.astype(np.float64) - predicted.astype(np.float64)) / scale
    return (diff ** 2).reshape(real.shape[0], -1).mean(1)
