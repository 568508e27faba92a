"""Scoring a population of World Models controllers: episodes in the real environment or in the dream.

Both return the episode returns ``[P, R]`` of ``R`` rollouts of each of the
``P`` candidate parameter vectors ``params [P, n]``; ``select`` picks the
controller's input out of the model's features ([z, h] or z alone).

- :func:`real_returns` plays the ``P * R`` episodes in a :class:`BatchEnv`
  (one subprocess per environment when ``parallel``): each environment takes
  the next episode of the queue when its current one ends, and the model
  filters all environments' frames as one batch.
- :func:`dream_returns` plays them all at once in a
  :class:`~reverie.envs.dream_env.DreamVectorEnv` of ``P * R`` dreams: one
  batched MDN-RNN step per time step for the whole population.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from reverie.agents.base import observe_step
from reverie.envs import BatchEnv
from reverie.envs.dream_env import DreamVectorEnv

__all__ = ["dream_returns", "real_returns"]


def _env_action(action: torch.Tensor, discrete: bool) -> np.ndarray:
    return action.argmax(-1).cpu().numpy().astype(np.int64) if discrete else action.cpu().numpy()


@torch.no_grad()
def real_returns(model, controller, select: Callable, params: torch.Tensor, rollouts: int,
                 env_fns: list[Callable], parallel: bool) -> tuple[np.ndarray, int]:
    """(returns ``[P, R]``, environment steps taken) of every candidate in the real environment."""
    P = params.shape[0]
    jobs = [(p, r) for r in range(rollouts) for p in range(P)]
    candidate_of = np.array([p for p, _ in jobs])
    returns = np.zeros((P, rollouts))
    envs = BatchEnv(env_fns, parallel=parallel)
    n, spec = envs.num_envs, envs.act_spec
    job = np.full(n, -1)
    queued = 0
    for env in range(min(n, len(jobs))):
        job[env], queued = queued, queued + 1
    device = params.device
    steps = 0
    try:
        step = envs.reset()
        state = None
        prev = np.zeros((n, spec.size), np.float32)
        acc = np.zeros(n)
        while True:
            prev[step["is_first"]] = 0.0
            state = observe_step(model, dict(step, action=prev), state, device)
            acc += step["reward"]
            for i in np.flatnonzero(step["is_last"]):
                if job[i] >= 0:
                    p, r = jobs[job[i]]
                    returns[p, r] = acc[i]
                job[i] = queued if queued < len(jobs) else -1
                queued += int(queued < len(jobs))
                acc[i] = 0.0
            if (job < 0).all():
                return returns, steps
            cand = params[torch.as_tensor(candidate_of[np.maximum(job, 0)], device=device)]
            action = controller.act(cand, select(model.features(state)))
            prev = action.cpu().numpy().astype(np.float32)
            step = envs.step(_env_action(action, spec.discrete))
            steps += n
    finally:
        envs.close()


@torch.no_grad()
def dream_returns(model, controller, select: Callable, params: torch.Tensor, rollouts: int,
                  starts: np.ndarray, temperature: float, max_steps: int, seed: int) -> np.ndarray:
    """Returns ``[P, R]`` of every candidate in the model's dream at ``temperature`` (the model's own
    temperature is restored after), each episode started from one of the frames ``starts [K, ...]``."""
    P = params.shape[0]
    N = P * rollouts
    (key,) = model.obs_spec
    env = DreamVectorEnv(model, {key: starts}, N, observation="features", max_steps=max_steps,
                         device=params.device)
    before = model.temperature
    model.temperature = temperature
    try:
        obs, _ = env.reset(seed=seed)
        cand = params.repeat_interleave(rollouts, 0)
        total = np.zeros(N)
        alive = np.ones(N, bool)
        while alive.any():
            action = controller.act(cand, select(torch.as_tensor(obs, device=params.device)))
            obs, reward, terminated, truncated, _ = env.step(_env_action(action, model.act_spec.discrete))
            total += np.where(alive, reward, 0.0)
            alive &= ~(terminated | truncated)
        return total.reshape(P, rollouts)
    finally:
        model.temperature = before
