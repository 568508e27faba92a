"""A CartPole that counts every step it takes in a file: the ground truth of `benchmarks/faults.py`.

Importing this module registers ``CountedCartPole-v1``; reverie builds it from
``--env gym:counted_env:CountedCartPole-v1`` with this folder on PYTHONPATH.
Each reset and each step appends one byte to the file named by ``REVERIE_FAULTS_COUNTER``
(an O_APPEND write reaches the kernel at once, so a SIGKILL loses none), so
the file's size is the number of environment calls the process really made.
"""

from __future__ import annotations

import os

import gymnasium as gym
from gymnasium.envs.classic_control import CartPoleEnv


class CountedCartPole(CartPoleEnv):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        path = os.environ.get("REVERIE_FAULTS_COUNTER")
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644) if path else None

    def _count(self):
        if self._fd is not None:
            os.write(self._fd, b".")

    def reset(self, **kwargs):
        out = super().reset(**kwargs)
        self._count()
        return out

    def step(self, action):
        out = super().step(action)
        self._count()
        return out

    def close(self):
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        super().close()


gym.register("CountedCartPole-v1", entry_point=CountedCartPole, max_episode_steps=500)
