"""Random actions held for several steps: the exploration World Models' data collection uses.

A new uniform action every step (``hold=(1, 1)``) never holds one action for
long: with 3 discrete actions the longest run in 10,000 steps is about 8
steps, so a model trained on such data has never seen what holding one
action for hundreds of steps does (moving into a wall, staying in a corner),
which is exactly what a controller evolved in its dream will try. The
reference implementation of World Models draws a new uniform action and
holds it for a number of steps drawn uniformly from 1 to 10.

:class:`RandomRuns` mixes such held random actions into an agent's own: the
exploration of World Models' iterative training procedure, where the data of
later rounds is collected with the controller acting.
"""

from __future__ import annotations

import numpy as np

from reverie.specs import ActionSpec

__all__ = ["HeldRandomActions", "RandomRuns", "longest_runs"]


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


class RandomRuns:
    """An agent's actions for ``num_envs`` environments with runs of held random actions mixed in: at each
    call, an environment not already in a random run starts one with probability ``rate``, a uniform
    random action held for a number of calls drawn uniformly from ``hold = (low, high)`` (inclusive);
    all draws from ``rng``.

    With ``hold=(1, 1)`` each call replaces each action independently with probability ``rate``; with
    a mean hold of ``H`` calls the long-run fraction of random calls is ``rate H / (1 - rate + rate H)``
    (a run of random calls follows the call that started it, then the agent acts until the next start).
    """

    def __init__(self, spec: ActionSpec, num_envs: int, hold: tuple[int, int], rate: float,
                 rng: np.random.Generator):
        low, high = hold
        if not 1 <= low <= high:
            raise ValueError(f"hold must be (low, high) with 1 <= low <= high, got {hold}")
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"rate must be a probability in [0, 1], got {rate}")
        self.spec, self.num_envs, self.hold, self.rate, self.rng = spec, num_envs, (low, high), rate, rng
        self.current = spec.sample(rng, num_envs)
        self.left = np.zeros(num_envs, np.int64)      # calls the current random action is still held for

    def __call__(self, actions: np.ndarray) -> np.ndarray:
        """``actions`` (``[num_envs]`` int64 or ``[num_envs, A]`` float32, as ``ActionSpec.sample``) with the
        random runs' actions in place of the agent's where a run is on."""
        start = (self.left == 0) & (self.rng.random(self.num_envs) < self.rate)
        if start.any():
            self.current = self.current.copy()
            self.current[start] = self.spec.sample(self.rng, int(start.sum()))
            self.left[start] = self.rng.integers(self.hold[0], self.hold[1] + 1, int(start.sum()))
        on = self.left > 0
        out = np.array(actions, copy=True)
        out[on] = self.current[on]
        self.left[on] -= 1
        return out


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
