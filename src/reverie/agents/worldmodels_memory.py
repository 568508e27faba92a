"""Training World Models' memory M on the encoded data set: which windows a batch holds, and the LSTM
state carried from one window into the next.

The encoded data set is flat arrays over every stored step (``mean``, ``logvar``, ``action``, ``reward``,
``is_first``, ``is_terminal``, ``chunk``): a chunk is one stream's consecutive steps, so a window of
``length`` steps must stay inside one chunk. Two ways to choose windows (:class:`Windows`):

- ``carry=False``: every row of every batch is a window at a uniformly random place, filtered from a
  zero state; its first step is left out of the loss unless it starts an episode (it has no past). M
  then only ever sees LSTM states at most ``length`` steps from zero, while a dream runs for thousands.
- ``carry=True`` (the reference implementation's way: its batches walk through the episodes in order,
  the state carried): each row starts at a random episode start and walks on through its chunk, one
  window per batch, the state (detached) carried from each window into the next, so M learns from the
  states the dream reaches deep into an episode (truncated back-propagation through time). A row whose
  chunk has no further whole window starts over at another episode start.

:func:`mdn_step` is one gradient step of M on such a batch; the agent and the benchmarks share it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np
import torch
from torch import Tensor

from reverie.config import ConfigError
from reverie.models.mdn_rnn import MDNRNN

__all__ = ["Carried", "Windows", "mdn_step"]

Carried = tuple[Tensor, Tensor, Tensor]
"""(z before the window, h, c), each ``[B, ...]``: the state a row carries into its next window."""


@dataclass
class Batch:
    """The steps of one batch: ``index [B, L]`` into the flat arrays; ``fresh [B]``: rows that start anew
    (from a zero state) rather than carry on from their previous window."""

    index: np.ndarray
    fresh: np.ndarray


class Windows:
    """Chooses the ``[B, length]`` windows of M's batches over flat arrays ``chunk [N]`` (non-decreasing
    chunk ids) and ``is_first [N]`` (see the module docstring)."""

    def __init__(self, chunk: np.ndarray, is_first: np.ndarray, length: int, batch: int, carry: bool):
        chunk = np.asarray(chunk)
        self.length, self.batch, self.carry = length, batch, carry
        self.end = np.searchsorted(chunk, chunk, side="right")   # one past the last step of each step's chunk
        fits = np.arange(len(chunk)) + length <= self.end
        self.valid = np.flatnonzero(fits)
        if len(self.valid) == 0:
            raise ConfigError(f"no stored chunk holds run.seq_len={length} steps; lower run.seq_len or raise "
                              "run.replay_chunk")
        starts = np.flatnonzero(fits & np.asarray(is_first, bool))
        self.starts = starts if len(starts) else self.valid    # episode starts, where a zero state is right
        self.pos = np.full(batch, -1, np.int64)
        self.row_end = np.zeros(batch, np.int64)                 # one past the last step of each row's chunk

    def reset(self) -> None:
        """Every row starts anew at the next batch."""
        self.pos[:] = -1

    def next(self, rng: np.random.Generator) -> Batch:
        """The next batch's windows (rows carried on where ``carry`` and their chunk has room)."""
        if not self.carry:
            start = self.valid[rng.integers(0, len(self.valid), self.batch)]
            return Batch(start[:, None] + np.arange(self.length), np.ones(self.batch, bool))
        fresh = (self.pos < 0) | (self.pos + self.length > self.row_end)
        self.pos[fresh] = self.starts[rng.integers(0, len(self.starts), int(fresh.sum()))]
        self.row_end[fresh] = self.end[self.pos[fresh]]
        index = self.pos[:, None] + np.arange(self.length)
        self.pos = self.pos + self.length
        return Batch(index, fresh)


def mdn_step(rnn: MDNRNN, optimizer: torch.optim.Optimizer, data: Mapping[str, np.ndarray], batch: Batch,
             carried: Carried | None, rng: np.random.Generator, device: torch.device
             ) -> tuple[dict[str, float], Carried]:
    """One gradient step of ``rnn`` on the windows ``batch`` of ``data`` (codes sampled from the stored
    mean and log-variance with ``rng``), rows not ``fresh`` starting from ``carried``; returns the metrics
    (with the clipped gradient norm) and the state to carry into the next batch."""
    take = {k: torch.as_tensor(data[k][batch.index], device=device) for k in
            ("mean", "logvar", "action", "reward", "is_first", "is_terminal")}
    noise = torch.as_tensor(rng.standard_normal(take["mean"].shape).astype(np.float32), device=device)
    z = take["mean"] + (0.5 * take["logvar"]).exp() * noise
    is_first = take["is_first"].bool()
    fresh = torch.as_tensor(batch.fresh, device=device)
    mask = torch.ones_like(is_first)
    mask[:, 0] = is_first[:, 0] | ~fresh     # a fresh window's first step has no past unless it starts an episode
    B, hidden = z.shape[0], rnn.cfg.hidden
    start = (z.new_zeros(B, z.shape[-1]), z.new_zeros(B, hidden), z.new_zeros(B, hidden))
    if carried is not None:
        keep = (~fresh).to(z.dtype)[:, None]
        start = tuple(s + keep * c for s, c in zip(start, carried))    # type: ignore[assignment]
    loss, metrics, after = rnn.loss(z, take["action"], is_first, take["reward"], take["is_terminal"].bool(), mask,
                                    start=start)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    metrics["mdn/grad_norm"] = float(torch.nn.utils.clip_grad_norm_(rnn.parameters(), rnn.cfg.grad_clip))
    optimizer.step()
    return metrics, after
