"""Collection: a batch of environments stepped into the replay, one agent step at a time.

The :class:`Collector` keeps what collection carries from one step to the next (the step the
environments returned, the model-space action that led into it, each environment's running return
and length) and does the bookkeeping every collecting mode shares: the step is checked for NaN and
infinity, stored in the replay beside what the agent computed on it, and finished episodes are
reported. The environments step in two halves (:meth:`send`, :meth:`receive`) so a mode can make
its updates while they run (in their own processes with ``run.parallel_envs``); neither needs the
other's result, so every number computed is that of stepping first and updating after.
"""

from __future__ import annotations

import functools
from typing import Mapping, Protocol

import numpy as np

from reverie.envs import BatchEnv
from reverie.envs.spaces import check_finite
from reverie.replay import Replay
from reverie.run_config import RunConfig
from reverie.specs import ACTION_MASK_KEY, ActionSpec, ArraySpec
from reverie.training.env_factory import EnvFactory, stream_factory

__all__ = ["Collector", "EnvBatch", "open_envs", "parallel_collection"]


class EnvBatch(Protocol):
    """Several environments stepped together (:class:`~reverie.envs.BatchEnv`, or a user's gymnasium
    vector environment through :class:`~reverie.envs.gym_vector.GymVectorEnv`)."""

    num_envs: int
    obs_spec: dict[str, ArraySpec]
    act_spec: ActionSpec

    def reset(self) -> dict[str, np.ndarray]: ...

    def step_async(self, actions: np.ndarray) -> None: ...

    def step_wait(self) -> dict[str, np.ndarray]: ...

    def close(self) -> None: ...


def parallel_collection(run: RunConfig) -> bool:
    """Whether the collection environments run in subprocesses (``run.parallel_envs``; None: for pixels)."""
    return run.obs == "pixels" if run.parallel_envs is None else bool(run.parallel_envs)


def open_envs(run: RunConfig, make_env: EnvFactory, agent_steps: int) -> BatchEnv:
    """``run.num_envs`` environments of ``make_env``, seeded by the run's seed and how far it has come (in a
    multitask run environment ``i`` is task ``i % K``)."""
    return BatchEnv([functools.partial(stream_factory(make_env, i), run.seed + 100 * i + agent_steps)
                     for i in range(run.num_envs)], parallel=parallel_collection(run))


class Collector:
    """Steps ``envs`` into ``replay`` (see the module docstring); starts with a reset."""

    def __init__(self, envs: EnvBatch, replay: Replay):
        self.envs, self.replay = envs, replay
        n = envs.num_envs
        self.step = envs.reset()
        self.prev = np.zeros((n, envs.act_spec.size), np.float32)
        self.ep_return = np.zeros(n)
        self.ep_length = np.zeros(n, np.int64)
        self.recorded: Mapping[str, np.ndarray] | None = None   # the step record() stored last

    @property
    def act_spec(self) -> ActionSpec:
        return self.envs.act_spec

    def current(self, env_step: int) -> dict[str, np.ndarray]:
        """The step the environments are at, with the model-space action that led into it (zero at an
        episode's first step; its padded dimensions zero in a multitask run), checked for NaN and infinity
        (named with ``env_step`` if found)."""
        self.prev[self.step["is_first"]] = 0.0
        if ACTION_MASK_KEY in self.step:   # what the task really used: its padding stays zero in the replay
            self.prev = self.prev * self.step[ACTION_MASK_KEY]
        step = dict(self.step, action=self.prev)
        check_finite(step, self.envs.obs_spec, f" at environment step {env_step}")
        return step

    def record(self, step: Mapping[str, np.ndarray], extras: Mapping[str, np.ndarray]
               ) -> list[tuple[float, int, int]]:
        """Store ``step`` and the agent's ``extras`` for it; returns ``(return, agent steps, environment
        index)`` of every episode that ended with this step."""
        self.replay.add({**step, **extras})
        self.recorded = step
        self.ep_return += step["reward"]
        self.ep_length += 1
        last = np.asarray(step["is_last"], bool)
        done = [(float(self.ep_return[i]), int(self.ep_length[i]), int(i)) for i in np.flatnonzero(last)]
        self.ep_return[last] = 0.0
        self.ep_length[last] = 0
        return done

    def send(self, env_action: np.ndarray) -> None:
        """Start stepping the environments with ``env_action`` (indices or floats)."""
        self.prev = self.envs.act_spec.to_model(env_action)
        self.envs.step_async(env_action)

    def receive(self) -> None:
        """Wait for the step :meth:`send` started."""
        self.step = self.envs.step_wait()

    def close(self) -> None:
        self.envs.close()
