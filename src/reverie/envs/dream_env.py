"""The dream as an environment: a trained world model exposed as a ``gymnasium.Env`` and a vector env.

Any reverie world model that declares ``reward`` and ``cont`` (and ``decoder``
for image observations) can be stepped as a gymnasium environment, so any
model-free learner can train inside it, as World Models' controller did:

- ``reset`` filters one real starting observation, drawn from ``starts``
  (``{key: [K, ...]}``, e.g. the first frames of stored episodes), into the
  model's state;
- ``step(action)`` takes one step of the model's prior (``model.step``); the
  reward is the model's ``reward`` head, and the episode terminates when a
  uniform draw exceeds the model's ``cont`` probability; after ``max_steps``
  steps it is truncated;
- observations are the decoded frame (``observation="image"``, uint8, the
  first image key of the model's ``obs_spec`` or ``key``) or the model's
  feature vector (``observation="features"``, float32).

All randomness (the start, the model's own sampling, the end of the
episode) comes from the generator seeded by ``reset(seed=...)``: the model's
sampling runs under a torch seed drawn from it, so a dream is deterministic
under a seed. A model with a temperature (World Models' MDN-RNN) dreams at the
temperature it is set to.

:class:`DreamVectorEnv` steps N dreams as one batch (one model call per
step), with gymnasium's next-step autoreset.
"""

from __future__ import annotations

from typing import Any, Mapping

import gymnasium as gym
import numpy as np
import numpy.typing as npt
import torch
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space
from torch.utils import _pytree as pytree

from reverie.models.base import (
    CONT,
    DECODER,
    REWARD,
    State,
    WorldModel,
    capabilities_of,
    cont_head,
    decoder_head,
    require,
    reward_head,
)

__all__ = ["DreamEnv", "DreamVectorEnv", "image_frames", "torch_seed"]


def torch_seed(rng: np.random.Generator) -> int:
    """The torch seed a dream draws from its numpy generator before each model call (so a dream is
    reproducible from one numpy seed)."""
    return int(rng.integers(0, 2**62))


def image_frames(frames: torch.Tensor) -> np.ndarray:
    """Decoded images (floats on the 0-255 scale) as uint8, rounded and clamped."""
    return frames.float().round().clamp(0, 255).cpu().numpy().astype(np.uint8)

OBSERVATIONS = ("image", "features")


class _Dreamer:
    """The batched dream both environments share: N states, stepped together."""

    def __init__(self, model: WorldModel, starts: Mapping[str, np.ndarray], observation: str,
                 key: str | None, device: str | torch.device) -> None:
        if observation not in OBSERVATIONS:
            raise ValueError(f"observation must be one of {OBSERVATIONS}, got {observation!r}")
        purpose = f"a dream environment with {observation} observations"
        require(model, [REWARD, CONT] + ([DECODER] if observation == "image" else []), purpose)
        self.reward, self.cont = reward_head(model, purpose), cont_head(model, purpose)
        missing = sorted(set(model.obs_spec) - set(starts))
        if missing:
            raise ValueError(f"starts lacks the observation keys {missing} the model observes")
        sizes = {len(np.asarray(v)) for v in starts.values()}
        if len(sizes) != 1 or 0 in sizes:
            raise ValueError("starts must hold the same positive number K of observations under every key")
        self.model, self.observation, self.device = model, observation, torch.device(device)
        self.starts = {k: np.asarray(starts[k]) for k in model.obs_spec}
        self.num_starts = sizes.pop()
        self.images = images = [k for k, s in model.obs_spec.items() if s.is_image]
        self.key: str | None
        if observation == "image":
            if key is None and not images:
                raise ValueError("image observations need a model that observes an image; use "
                                 "observation='features'")
            self.key = key or images[0]
            shape = tuple(model.obs_spec[self.key].shape)
            self.single_obs_space: gym.Space = gym.spaces.Box(0, 255, shape, np.uint8)
        else:
            self.key = None
            self.single_obs_space = gym.spaces.Box(-np.inf, np.inf, (model.feat_size,), np.float32)
        spec = model.act_spec
        self.single_act_space: gym.Space = (gym.spaces.Discrete(spec.size) if spec.discrete
                                            else gym.spaces.Box(-1.0, 1.0, (spec.size,), np.float32))

    @torch.no_grad()
    def start(self, rng: np.random.Generator, count: int) -> State:
        index = rng.integers(0, self.num_starts, size=count)
        obs = {k: torch.as_tensor(v[index][:, None], device=self.device) for k, v in self.starts.items()}
        action = torch.zeros(count, 1, self.model.act_spec.size, device=self.device)
        is_first = torch.ones(count, 1, dtype=torch.bool, device=self.device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(torch_seed(rng))
            _, state = self.model.observe(obs, action, is_first, None)
        return state

    def model_action(self, action: npt.ArrayLike, count: int) -> torch.Tensor:
        spec = self.model.act_spec
        a = np.asarray(action)
        if spec.discrete:
            a = a.reshape(count).astype(np.int64)
            if (a < 0).any() or (a >= spec.size).any():
                raise ValueError(f"discrete actions must lie in [0, {spec.size}), got {a.tolist()}")
            return torch.nn.functional.one_hot(torch.as_tensor(a, device=self.device), spec.size).float()
        a = np.clip(a.reshape(count, spec.size).astype(np.float32), -1.0, 1.0)
        return torch.as_tensor(a, device=self.device)

    @torch.no_grad()
    def step(self, state: State, action: torch.Tensor, rng: np.random.Generator
             ) -> tuple[State, np.ndarray, np.ndarray]:
        """(next state, reward ``[N]`` float64, terminated ``[N]`` bool)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(torch_seed(rng))
            state = self.model.step(state, action)
        reward = self.reward(state).float().cpu().numpy().astype(np.float64)
        cont = self.cont(state).float().cpu().numpy()
        terminated = rng.random(len(cont)) >= cont
        return state, reward, terminated

    @torch.no_grad()
    def observe(self, state: State) -> np.ndarray:
        if self.key is None:
            return self.model.features(state).float().cpu().numpy().astype(np.float32)
        return self._decode(state, self.key)

    def _decode(self, state: State, key: str) -> np.ndarray:
        frames = decoder_head(self.model, "a dream's frames")(state)[key]
        return image_frames(frames)

    @torch.no_grad()
    def frame(self, state: State) -> np.ndarray | None:
        """The first row's decoded image ``[H, W, 3]`` uint8, or None if the model cannot show one."""
        key = self.key or (self.images[0] if self.images else None)
        if key is None or DECODER not in capabilities_of(self.model):
            return None
        return self._decode(state, key)[0]


class DreamEnv(gym.Env):
    """One dream as a gymnasium environment (see the module docstring)."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 30}

    def __init__(self, model: WorldModel, starts: Mapping[str, np.ndarray], observation: str = "image",
                 max_steps: int = 1000, key: str | None = None, device: str | torch.device = "cpu",
                 render_mode: str | None = None) -> None:
        if max_steps < 1:
            raise ValueError(f"max_steps must be at least 1, got {max_steps}")
        self._dream = _Dreamer(model, starts, observation, key, device)
        self.observation_space = self._dream.single_obs_space
        self.action_space = self._dream.single_act_space
        self.max_steps = max_steps
        self.render_mode = render_mode
        self._state: State | None = None
        self._t = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self._state = self._dream.start(self.np_random, 1)
        self._t = 0
        return self._dream.observe(self._state)[0], {}

    def step(self, action: npt.ArrayLike) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._state is None:
            raise gym.error.ResetNeeded("call reset() before step()")
        a = self._dream.model_action(action, 1)
        self._state, reward, terminated = self._dream.step(self._state, a, self.np_random)
        self._t += 1
        return (self._dream.observe(self._state)[0], float(reward[0]), bool(terminated[0]),
                self._t >= self.max_steps, {})

    def render(self) -> np.ndarray | None:
        """The decoded frame of the current state (``render_mode="rgb_array"``), or None without a state,
        a decoder or an image observation in the model."""
        return None if self._state is None else self._dream.frame(self._state)


class DreamVectorEnv(VectorEnv):
    """``num_envs`` dreams stepped as one batch, with next-step autoreset (see the module docstring)."""

    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(self, model: WorldModel, starts: Mapping[str, np.ndarray], num_envs: int,
                 observation: str = "features", max_steps: int = 1000, key: str | None = None,
                 device: str | torch.device = "cpu") -> None:
        if num_envs < 1 or max_steps < 1:
            raise ValueError(f"num_envs and max_steps must be at least 1, got {num_envs} and {max_steps}")
        self._dream = _Dreamer(model, starts, observation, key, device)
        self.num_envs, self.max_steps = num_envs, max_steps
        self.single_observation_space = self._dream.single_obs_space
        self.single_action_space = self._dream.single_act_space
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._state: State | None = None
        self._t = np.zeros(num_envs, np.int64)
        self._needs_reset = np.zeros(num_envs, bool)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[np.ndarray, dict[str, Any]]:
        if seed is not None:
            self._np_random, self._np_random_seed = gym.utils.seeding.np_random(seed)
        self._state = self._dream.start(self.np_random, self.num_envs)
        self._t[:] = 0
        self._needs_reset[:] = False
        return self._dream.observe(self._state), {}

    def step(self, actions: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        if self._state is None:
            raise gym.error.ResetNeeded("call reset() before step()")
        a = self._dream.model_action(actions, self.num_envs)
        state, reward, terminated = self._dream.step(self._state, a, self.np_random)
        self._t += 1
        again = self._needs_reset
        if again.any():   # rows that ended on the previous step start over instead of stepping
            rows = torch.as_tensor(np.flatnonzero(again))
            fresh = self._dream.start(self.np_random, len(rows))
            state = _scatter_rows(state, rows, fresh)
            reward[again], terminated[again] = 0.0, False
            self._t[again] = 0
        truncated = (self._t >= self.max_steps) & ~terminated
        self._state = state
        self._needs_reset = terminated | truncated
        return self._dream.observe(state), reward, terminated, truncated, {}


def _scatter_rows(base: State, rows: torch.Tensor, values: State) -> State:
    """``base`` with rows ``rows`` replaced by ``values`` (same structure, ``[len(rows), ...]``)."""
    def put(b: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        out = b.clone()
        out[rows.to(b.device)] = v
        return out

    return pytree.tree_map(put, base, values)
