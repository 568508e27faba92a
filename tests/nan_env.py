"""A user's own gymnasium environment that starts returning NaN after a few steps (for tests)."""

import gymnasium as gym
import numpy as np


class NanAfterFive(gym.Env):
    observation_space = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(3, np.float32), {}

    def step(self, action):
        self.t += 1
        obs = np.full(3, np.nan if self.t >= 5 else 0.1, np.float32)
        return obs, 0.0, False, self.t >= 50, {}


gym.register("NanAfterFive-v0", entry_point=NanAfterFive)
