"""A person playing a trained world model's dream, one action at a time: the state behind ``reverie play``.

:class:`PlaySession` holds one dream (the model's state, its step count and return) and, when the run's
environment can be made, the real environment beside it, stepped with the same actions. No web framework
here: :mod:`reverie.play.server` only turns requests into :meth:`PlaySession.reset` / :meth:`PlaySession.step`
and :class:`View` into JSON.

A model driven by latent action codes (``act_spec.latent``: a latent-action model learned from observations
alone, :mod:`reverie.models.latent_action`) is played with its codes: the buttons are ``code 0 .. code K-1``
(:attr:`PlaySession.labels`), and the real environment, whose actions the codes are not, only gives the dream
its first observation; it is not stepped beside it.

The dream follows :class:`~reverie.envs.dream_env.DreamEnv`'s randomness exactly, so a session and a
``DreamEnv`` started from the same first observations, seed and actions imagine the same frames: ``reset(seed)``
draws the start and a torch seed for filtering it from a generator seeded with ``seed``; each ``step`` draws a
torch seed for the model's prior step, then one uniform that ends the dream when it reaches the model's
``cont`` probability (a model without ``cont`` draws it too and never ends before ``max_steps``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np
import torch
from gymnasium.utils.seeding import np_random

from reverie.envs.dream_env import image_frames, torch_seed
from reverie.envs.spaces import Env
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

__all__ = ["PlayError", "PlaySession", "Side", "View"]

PURPOSE = "playing a dream (the page shows the frames the model's decoder imagines)"


class PlayError(ValueError):
    """A request the session cannot serve (a bad action, a step after the dream ended), in one sentence."""


@dataclass(frozen=True)
class Side:
    """One side of the page after a step: the dream or the real environment.

    ``obs``: each observation key without a batch axis (uint8 ``[H, W, C]`` images, float ``[D]`` vectors);
    ``reward``/``cont``: the model's predictions (None where the model does not declare them; the real
    side has ``cont`` None and its true reward); ``total``: the return so far (None without rewards);
    ``ended``: the episode is over (the dream's draw reached ``cont``, the real env terminated or was cut,
    or ``max_steps`` was reached)."""

    obs: dict[str, np.ndarray]
    reward: float | None
    cont: float | None
    total: float | None
    ended: bool


@dataclass(frozen=True)
class View:
    """What the page shows after a reset or a step: the step count, the dream and (if any) the real side."""

    step: int
    dream: Side
    real: Side | None = field(default=None)


class PlaySession:
    """One dream of ``model`` played by a person (see the module docstring).

    ``make_env(seed)`` gives the run's environment: its first observation starts the dream and it is stepped
    beside it. Without one, ``starts`` (``{key: [K, ...]}``, e.g. first frames of stored episodes) start
    the dream and there is no real side. Raises :class:`~reverie.models.base.CapabilityError` for a model without a decoder."""

    def __init__(self, model: WorldModel, make_env: Callable[[int], Env] | None = None,
                 starts: Mapping[str, np.ndarray] | None = None, max_steps: int = 1000,
                 device: str | torch.device = "cpu") -> None:
        self.check_model(model)
        if (make_env is None) == (starts is None):
            raise ValueError("give a PlaySession either make_env or starts, exactly one of them")
        if max_steps < 1:
            raise ValueError(f"max_steps must be at least 1, got {max_steps}")
        caps = capabilities_of(model)
        self.model, self.device, self.max_steps = model, torch.device(device), max_steps
        self.decode = decoder_head(model, PURPOSE)
        self.reward = reward_head(model, PURPOSE) if REWARD in caps else None
        self.cont = cont_head(model, PURPOSE) if CONT in caps else None
        self.make_env = make_env
        self.latent = model.act_spec.latent
        self.starts = None if starts is None else {k: np.asarray(starts[k]) for k in model.obs_spec}
        self.env: Env | None = None
        self._state: State | None = None
        self._view: View | None = None
        self._rng = np.random.default_rng()

    @staticmethod
    def check_model(model: WorldModel) -> None:
        """Raise :class:`~reverie.models.base.CapabilityError` in one sentence if ``model`` cannot show frames."""
        require(model, [DECODER], PURPOSE)

    @property
    def actions(self) -> int | None:
        """The number of discrete actions, or None for continuous ones (see :attr:`action_dims`)."""
        spec = self.model.act_spec
        return spec.size if spec.discrete else None

    @property
    def labels(self) -> list[str] | None:
        """The buttons' names where they are not the environment's action indices (latent codes), else None."""
        return [f"code {k}" for k in range(self.model.act_spec.size)] if self.latent else None

    @property
    def real(self) -> bool:
        """Whether the real environment is stepped beside the dream (it is made here, and the model's actions
        are its actions)."""
        return self.make_env is not None and not self.latent

    @property
    def action_dims(self) -> int:
        """Entries of a continuous action (each in [-1, 1]); for discrete actions, the number of actions."""
        return self.model.act_spec.size

    @property
    def view(self) -> View:
        if self._view is None:
            raise PlayError("the session has no dream yet; reset it first")
        return self._view

    def close(self) -> None:
        if self.env is not None:
            self.env.close()
            self.env = None

    @torch.no_grad()
    def reset(self, seed: int) -> View:
        """A new dream from a real first observation, the same for the same ``seed``."""
        self.close()
        real: Side | None = None
        starts = self.starts
        if self.make_env is not None:
            self.env = self.make_env(seed)
            first = self.env.reset()
            starts = {k: np.asarray(first[k])[None] for k in self.model.obs_spec}
            real = Side(self._obs(first, self.env), 0.0, None, 0.0, False)
            if not self.real:     # latent codes are no actions of the environment: it only gave the start
                self.close()
                real = None
        assert starts is not None, "the constructor keeps make_env or starts"
        self._rng, _ = np_random(seed)
        count = len(next(iter(starts.values())))
        index = self._rng.integers(0, count, size=1)
        obs = {k: torch.as_tensor(v[index][:, None], device=self.device) for k, v in starts.items()}
        action = torch.zeros(1, 1, self.model.act_spec.size, device=self.device)
        is_first = torch.ones(1, 1, dtype=torch.bool, device=self.device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(torch_seed(self._rng))
            _, self._state = self.model.observe(obs, action, is_first, None)
        dream = Side(self._decoded(self._state), None, None, 0.0 if self.reward else None, False)
        self._view = View(0, dream, real)
        return self._view

    @torch.no_grad()
    def step(self, action: int | float | list[float] | np.ndarray) -> View:
        """One step of the dream (and of the real environment, unless its episode is over) under ``action``:
        an index in ``[0, actions)`` or ``action_dims`` numbers (clipped to [-1, 1])."""
        view = self.view
        if view.dream.ended:
            raise PlayError(f"the dream ended at step {view.step}; reset for a new one")
        model_action, env_action = self._check(action)
        assert self._state is not None, "a view comes with a state"
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(torch_seed(self._rng))
            self._state = self.model.step(self._state, model_action)
        reward = None if self.reward is None else float(self.reward(self._state).float().cpu()[0])
        cont = None if self.cont is None else float(self.cont(self._state).float().cpu()[0])
        ended = bool(self._rng.random(1)[0] >= (1.0 if cont is None else cont))
        step = view.step + 1
        total = None if reward is None or view.dream.total is None else view.dream.total + reward
        dream = Side(self._decoded(self._state), reward, cont, total, ended or step >= self.max_steps)
        self._view = View(step, dream, self._step_real(view.real, env_action, step))
        return self._view

    def _step_real(self, real: Side | None, action: int | np.ndarray, step: int) -> Side | None:
        if real is None or real.ended or self.env is None:
            return real
        out = self.env.step(action)
        reward = float(out["reward"])
        ended = bool(out["is_last"]) or step >= self.max_steps
        return Side(self._obs(out, self.env), reward, None, (real.total or 0.0) + reward, ended)

    def _check(self, action: int | float | list[float] | np.ndarray) -> tuple[torch.Tensor, int | np.ndarray]:
        """(the model's action ``[1, A]``, the environment's action) or a :class:`PlayError`."""
        spec = self.model.act_spec
        a = np.asarray(action)
        if spec.discrete:
            if a.ndim != 0 or not np.issubdtype(a.dtype, np.integer) or not 0 <= int(a) < spec.size:
                raise PlayError(f"the action must be a whole number in [0, {spec.size}), got {action!r}")
            index = int(a)
            hot = torch.nn.functional.one_hot(torch.tensor([index], device=self.device), spec.size).float()
            return hot, index
        if a.shape != (spec.size,) or not np.issubdtype(a.dtype, np.number) or not np.isfinite(a).all():
            raise PlayError(f"the action must be {spec.size} finite numbers in [-1, 1], got {action!r}")
        a = np.clip(a.astype(np.float32), -1.0, 1.0)
        return torch.as_tensor(a[None], device=self.device), a

    def _decoded(self, state: State) -> dict[str, np.ndarray]:
        """The decoder's observation of ``state``: images as uint8 (rounded, clamped to [0, 255])."""
        return {key: (image_frames(value) if self.model.obs_spec[key].is_image else value.float().cpu().numpy())[0]
                for key, value in self.decode(state).items()}

    def _obs(self, step: Mapping[str, np.ndarray], env: Env) -> dict[str, np.ndarray]:
        return {k: np.asarray(step[k]) for k in env.obs_spec}

