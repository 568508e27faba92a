"""Greedy evaluation episodes, run side by side in one batch of environments."""

from __future__ import annotations

from typing import Callable

import numpy as np

from reverie.agents.base import Actor
from reverie.envs import BatchEnv, Env
from reverie.specs import ACTION_MASK_KEY


def run_episodes(agent: Actor, env_fns: list[Callable[[], Env]], explore: bool = False,
                 record: bool = False, max_steps: int = 100_000
                 ) -> tuple[np.ndarray, list[dict[str, np.ndarray]] | None]:
    """Run one episode in each environment of ``env_fns`` until all have ended.

    Returns (episode returns ``[N]``, when ``record`` every environment's episode as ``{key: [T, ...]}``
    with model-space ``action`` leading into each step (zeros at the first)).
    """
    envs = BatchEnv(env_fns, parallel=False)
    try:
        n = envs.num_envs
        step = envs.reset()
        state = agent.init_state(n)
        prev = np.zeros((n, envs.act_spec.size), np.float32)
        returns = np.zeros(n)
        done = np.zeros(n, bool)
        episodes: list[list[dict[str, np.ndarray]]] = [[] for _ in range(n)]
        for _ in range(max_steps):
            step = dict(step, action=prev)
            if record:
                for i in np.flatnonzero(~done):
                    episodes[i].append({k: np.asarray(v[i]) for k, v in step.items()})
            returns += np.where(done, 0.0, step["reward"])
            done |= np.asarray(step["is_last"], bool)
            if done.all():
                break
            env_action, _, state, _ = agent.act(step, state, explore)
            prev = envs.act_spec.to_model(env_action)
            step = envs.step(env_action)
            if ACTION_MASK_KEY in step:   # a multitask run's task used its own action dimensions only
                prev = prev * step[ACTION_MASK_KEY]
        if not record:
            return returns, None
        return returns, [{k: np.stack([s[k] for s in steps]) for k in steps[0]} for steps in episodes]
    finally:
        envs.close()
