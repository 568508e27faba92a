"""Random actions held for several steps: the exploration World Models' data collection uses.

A new uniform action every step (``hold=(1, 1)``) never holds one action for
long: with 3 discrete actions the longest run in 10,000 steps is about 8
steps, so a model trained on such data has never seen what holding one
action for hundreds of steps does (moving into a wall, staying in a corner),
which is exactly what a controller evolved in its dream will try. The
reference implementation of World Models draws a new uniform action and
holds it for a number of steps drawn uniformly from 1 to 10.
"""

from __future__ import annotations

import numpy as np

from reverie.specs import ActionSpec

__all__ = ["HeldRandomActions", "longest_runs"]


class HeldRandomActions:
    """Uniform random actions for ``num_envs`` environments, each held for a number of calls drawn
    uniformly from ``hold = (low, high)`` (inclusive) before a new one is drawn; all draws from ``rng``."""

    def __init__(self, spec: ActionSpec, num_envs: int, hold: tuple[int, int], rng: np.random.Generator):
        low, high = hold
        if not 1 <= low <= high:
            raise ValueError(f"hold must be (low, high) with 1 <= low <= high, got {hold}")
        self.spec, self.num_envs, self.hold, self.rng = spec, num_envs, (low, high), rng
        self.current = spec.sample(rng, num_envs)
        self.left = np.zeros(num_envs, np.int64)      # calls the current action is still held for

    def __call__(self) -> np.ndarray:
        """The next actions: ``[num_envs]`` int64 or ``[num_envs, A]`` float32, as ``ActionSpec.sample``."""
        new = self.left == 0
        if new.any():
            fresh = self.spec.sample(self.rng, int(new.sum()))
            self.current = self.current.copy()
            self.current[new] = fresh
            self.left[new] = self.rng.integers(self.hold[0], self.hold[1] + 1, int(new.sum()))
        self.left -= 1
        return self.current.copy()


def longest_runs(actions: np.ndarray, is_first: np.ndarray | None = None) -> np.ndarray:
    """Lengths of the maximal runs of one repeated action in ``actions [T]`` or ``[T, A]`` (rows equal),
    a run cut where ``is_first [T]`` starts an episode: ``[R]`` int64, in order."""
    a = np.asarray(actions)
    a = a.reshape(len(a), -1)
    change = np.ones(len(a), bool)
    change[1:] = (a[1:] != a[:-1]).any(-1)
    if is_first is not None:
        change |= np.asarray(is_first, bool)
    starts = np.flatnonzero(change)
    return np.diff(np.r_[starts, len(a)]).astype(np.int64)
