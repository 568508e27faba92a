"""Per-object fidelity of imagined frames: F1 of the cells that are on, per object channel, against the horizon.

MinAtar's observations are boolean object channels (``[H, W, C]``, 0/255 as images), so an imagined frame
can be scored exactly: binarised (a channel is on above 127), each cell and channel is a true positive
(on in both), a false positive (on only in the imagined frame) or a false negative (on only in the real
one). Precision, recall and F1 of the "on" cells are computed per channel (paddle, ball, trail, bricks in
Breakout) and over all channels together (the micro average, dominated by the most numerous object).

:func:`open_loop_frames` produces the frames to score from any world model with the ``decoder``
capability (DIAMOND's frames, Dreamer's decoded latents): it filters a real episode from its first step,
takes the filtered state at each start and imagines from it with the actions really taken after it.

Pure: tensors and arrays in, arrays and dicts out.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from reverie.models.base import WorldModel, decoder_head, imagine
from reverie.models.state import stack_states, state_entries

__all__ = ["binarise", "cell_counts", "exact_frames", "open_loop_frames", "scores"]


def binarise(images: np.ndarray | Tensor) -> np.ndarray:
    """Images in [0, 255] ``[..., H, W, C]`` -> bool, a channel on above 127."""
    return np.asarray(images) > 127


def cell_counts(pred: np.ndarray, real: np.ndarray) -> np.ndarray:
    """Per channel ``[C, 3]`` int64: true positives, false positives, false negatives of binary frames
    ``pred, real [N, H, W, C]`` (bool), summed over frames and cells."""
    if pred.shape != real.shape or pred.ndim != 4:
        raise ValueError(f"cell_counts needs two bool arrays [N, H, W, C] of one shape, got {pred.shape} and "
                         f"{real.shape}")
    tp = (pred & real).sum((0, 1, 2))
    fp = (pred & ~real).sum((0, 1, 2))
    fn = (~pred & real).sum((0, 1, 2))
    return np.stack([tp, fp, fn], -1).astype(np.int64)


def exact_frames(pred: np.ndarray, real: np.ndarray) -> int:
    """How many of the frames ``[N, H, W, C]`` (bool) are right in every cell and channel."""
    return int((pred == real).reshape(len(pred), -1).all(1).sum())


def _prf(tp: int, fp: int, fn: int) -> dict[str, float | int]:
    # a channel that is never on and never predicted has nothing to get wrong: precision, recall, F1 of 1
    if tp + fp + fn == 0:
        return {"precision": 1.0, "recall": 1.0, "f1": 1.0, "cells_on": 0}
    return {"precision": tp / max(tp + fp, 1), "recall": tp / max(tp + fn, 1), "f1": 2 * tp / (2 * tp + fp + fn),
            "cells_on": tp + fn}


def scores(counts: np.ndarray, channels: Sequence[str]) -> dict:
    """Precision, recall, F1 and the real cells on (``cells_on``) over all channels (the micro average) and
    per channel (``channels``: name -> the same keys), from per-channel counts ``[C, 3]``."""
    if counts.shape != (len(channels), 3):
        raise ValueError(f"{len(channels)} channel names for counts of shape {counts.shape}")
    tp, fp, fn = (int(x) for x in counts.sum(0))
    return {**_prf(tp, fp, fn), "channels": {name: _prf(*(int(x) for x in c)) for name, c in zip(channels, counts)}}


def open_loop_frames(model: WorldModel, key: str, images: Tensor, actions: Tensor, starts: Sequence[int],
                     horizon: int) -> Tensor:
    """Decoded imagined frames ``[N, horizon, H, W, C]`` in [0, 255] of one episode.

    ``images [T, H, W, C]`` uint8 are the episode's real observations under ``key`` from its first step,
    ``actions [T, A]`` (model space) the actions that led into each step. For each of the ``N`` ``starts``
    (with ``start + horizon < T``), the model filters steps ``0 .. start`` and imagines ``horizon`` steps
    with the actions that really followed."""
    decode = decoder_head(model, "open-loop frame fidelity")
    steps = images.shape[0]
    if not starts or max(starts) + horizon >= steps or min(starts) < 0:
        raise ValueError(f"starts {list(starts)} with horizon {horizon} do not fit an episode of {steps} steps")
    is_first = torch.zeros(1, steps, dtype=torch.bool, device=images.device)
    is_first[0, 0] = True
    states, _ = model.observe({key: images[None]}, actions[None].float(), is_first)
    index = torch.as_tensor(list(starts), device=images.device)
    start = {k: v[0, index] for k, v in state_entries(states).items()}                 # [N]
    future = torch.stack([actions[s + 1:s + 1 + horizon] for s in starts]).float()   # [N, horizon, A]
    return decode(stack_states([imagine(model, start, future)], 0))[key][0]          # [N, horizon, H, W, C]
