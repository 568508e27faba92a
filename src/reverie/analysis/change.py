"""Noticing that the world changed: a world model's one-step prediction error and a test on its series.

:func:`one_step_error` measures how far a model's prior step lands from where the next observation puts
it, in the model's own feature space (so it is defined for every family through the
:class:`~reverie.models.base.WorldModel` contract alone, decoder or not: for a latent-consistency model such
as TD-MPC2 it is exactly its consistency error, for an RSSM the distance between prior and posterior
features). When the world's physics change, the model's predictions stop matching and the error rises.

:class:`PageHinkley` watches a series of such errors: the first ``warmup`` values fix a baseline mean and
standard deviation, every later value is standardised by them, ``z = (x - mean) / std``, and the test sums
``m_t = sum_{s <= t} (z_s - slack)``; it fires when ``m_t - min_{s <= t} m_s > threshold``, i.e. when the
standardised error has run above ``slack`` for long enough to gather ``threshold`` (Page, 1954; Hinkley,
1971). A model that keeps learning makes the error fall, which this one-sided test ignores. After it fires,
the detector starts over with a new baseline. Pure: no clocks, no files, no randomness.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from reverie.models.base import WorldModel
from reverie.models.state import flatten_batch, map_state

__all__ = ["PageHinkley", "one_step_error"]


@torch.no_grad()
def one_step_error(model: WorldModel, obs: Mapping[str, Tensor], action: Tensor, is_first: Tensor) -> Tensor:
    """Squared feature error of every one-step prediction in a sequence.

    Args:
        obs: ``{key: [B, T, ...]}`` as the model observes them; ``action [B, T, A]`` led into each step;
            ``is_first [B, T]``.

    Returns:
        ``[B, T - 1]`` float: ``mean_f (features(step(post_t, action_{t+1})) - features(post_{t+1}))^2``,
        NaN where step ``t + 1`` starts an episode (nothing to predict across a reset).
    """
    batch, length = is_first.shape
    if length < 2:
        raise ValueError(f"one_step_error needs sequences of at least 2 steps, got {length}")
    states, _ = model.observe(obs, action, is_first)                     # [B, T]
    before = flatten_batch(map_state(lambda x: x[:, :-1], states))        # [B * (T - 1)]
    after = flatten_batch(map_state(lambda x: x[:, 1:], states))          # [B * (T - 1)]
    prior = model.step(before, action[:, 1:].reshape(batch * (length - 1), -1))
    error = (model.features(prior).float() - model.features(after).float()).pow(2).mean(-1)
    error = error.reshape(batch, length - 1)
    return torch.where(is_first[:, 1:].bool(), torch.full_like(error, float("nan")), error)


@dataclass
class PageHinkley:
    """A one-sided Page-Hinkley test for an increase in a series (see the module docstring).

    ``threshold`` and ``slack`` are in standard deviations of the baseline; ``min_std`` floors that
    standard deviation relative to the baseline mean, so a near-constant baseline does not make every
    small wobble huge.
    """

    threshold: float = 25.0
    slack: float = 0.5
    warmup: int = 20
    min_std: float = 0.05

    def __post_init__(self) -> None:
        if not (self.threshold > 0 and self.slack >= 0 and self.warmup >= 2 and self.min_std >= 0):
            raise ValueError(f"PageHinkley needs threshold > 0, slack >= 0, warmup >= 2 and min_std >= 0, got "
                             f"{self.threshold}, {self.slack}, {self.warmup}, {self.min_std}")
        self.reset()

    def reset(self) -> None:
        """Forget everything: the next ``warmup`` values set a new baseline."""
        self.count = 0
        self.mean = 0.0
        self.m2 = 0.0          # Welford's sum of squared deviations over the warm-up
        self.sum = 0.0         # m_t
        self.low = 0.0         # min_s m_s

    @property
    def statistic(self) -> float:
        """``m_t - min_s m_s``: how much evidence of an increase has gathered (0 during the warm-up)."""
        return self.sum - self.low

    def update(self, value: float) -> bool:
        """Take the next value of the series; True when the test fires (the detector then starts over).
        Non-finite values (no prediction was possible) are skipped."""
        value = float(value)
        if not math.isfinite(value):
            return False
        if self.count < self.warmup:
            self.count += 1
            delta = value - self.mean
            self.mean += delta / self.count
            self.m2 += delta * (value - self.mean)
            return False
        std = max(math.sqrt(self.m2 / (self.count - 1)), self.min_std * abs(self.mean), 1e-12)
        self.sum += (value - self.mean) / std - self.slack
        self.low = min(self.low, self.sum)
        if self.statistic > self.threshold:
            self.reset()
            return True
        return False

    def state_dict(self) -> dict[str, float]:
        return {"count": self.count, "mean": self.mean, "m2": self.m2, "sum": self.sum, "low": self.low}

    def load_state_dict(self, state: Mapping[str, float]) -> None:
        self.count = int(state["count"])
        self.mean, self.m2 = float(state["mean"]), float(state["m2"])
        self.sum, self.low = float(state["sum"]), float(state["low"])
