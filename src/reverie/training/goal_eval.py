"""Evaluation toward a goal observation: ``reverie eval RUN --planner cem --goal GOAL``.

The planner plans in the model's latent space toward the goal's encoding with the model's latent goal cost
(:mod:`reverie.models.latent_goal`; C-SWM: the energy, the squared distance summed over object slots) and
acts by model-predictive control: plan, take the first action, observe, plan again. An episode succeeds
when its observation equals the goal observation exactly (every key, every pixel): in the 2D shapes world,
whose objects all look different, that is every object on its goal cell. It then ends with reward 1, so the
mean return is the fraction of goals reached.

``GOAL`` is one of:

- ``PATH.npy``: one observation (the run's single image, e.g. ``uint8 [50, 50, 3]``), the goal of every
  episode from the environment's own random starts; the episodes last the environment's own time limit;
- ``walk:T``: each episode's own goal is the observation reached from its start by T uniformly random
  actions, each redrawn until it changes the observation (the walk is redrawn if it ends where it began);
  the episode has 2 T steps to reach it. Episode i's start and walk come from the evaluation seed of
  episode i, so the goals are the same for every planner and every run on that environment.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from reverie.agents.base import Agent
from reverie.agents.planner_policy import PlannerPolicy, default_settings
from reverie.config import apply_overrides
from reverie.envs import Env, TimeLimit, Wrapper
from reverie.models.latent_goal import GoalError, GoalReward, goal_model
from reverie.planning import PLANNERS, planner_spec
from reverie.training.evaluate import run_episodes

__all__ = ["GoalEnv", "GoalSpec", "goal_evaluation", "parse_goal", "walk_goal"]

#: Attempts at a random walk that does not end where it began, and at each step that changes the observation
WALK_TRIES = 100


@dataclass(frozen=True)
class GoalSpec:
    """A parsed ``--goal``: an observation file, or a random walk of ``steps`` actions from each start."""

    path: Path | None = None
    steps: int = 0


def parse_goal(text: str) -> GoalSpec:
    """``PATH.npy`` or ``walk:T`` (T >= 1) -> :class:`GoalSpec`; GoalError otherwise."""
    if text.startswith("walk:"):
        count = text[len("walk:"):]
        if not count.isdigit() or int(count) < 1:
            raise GoalError(f"--goal walk:T needs a whole number of random actions T >= 1, got {text!r}")
        return GoalSpec(steps=int(count))
    if not text.endswith(".npy"):
        raise GoalError(f"--goal takes an observation saved as a .npy file or walk:T (T random actions from each "
                        f"episode's start), got {text!r}")
    return GoalSpec(path=Path(text))


def _observation(step: Mapping[str, np.ndarray], keys: Sequence[str]) -> dict[str, np.ndarray]:
    return {k: np.array(step[k]) for k in keys}


def _same(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> bool:
    return all(np.array_equal(a[k], b[k]) for k in a)


def load_goal(path: Path, env: Env) -> dict[str, np.ndarray]:
    """The goal observation in ``path`` for ``env`` (one image key); GoalError for a missing file, several
    keys, or an array of another shape or dtype than the observations."""
    images = [k for k, s in env.obs_spec.items() if len(s.shape) == 3]
    if len(images) != 1 or len(env.obs_spec) != 1:
        raise GoalError(f"a goal file holds one image, but this run observes {sorted(env.obs_spec)}; use walk:T")
    key, spec = images[0], env.obs_spec[images[0]]
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise GoalError(f"cannot read the goal {str(path)!r} as a .npy array ({e})") from None
    if array.shape != tuple(spec.shape) or array.dtype != np.dtype(spec.dtype):
        raise GoalError(f"the goal {str(path)!r} is {array.dtype}{list(array.shape)} but this run's observations "
                        f"{key!r} are {np.dtype(spec.dtype)}{list(spec.shape)}")
    return {key: array}


def walk_goal(env: Env, steps: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The observation ``steps`` random actions (each one that changes the observation) after ``env``'s reset,
    not equal to the start; ``env`` is reset and stepped. GoalError if no such walk is found."""
    keys = list(env.obs_spec)
    for _ in range(WALK_TRIES):
        start = _observation(env.reset(), keys)
        now = start
        for _ in range(steps):
            for _ in range(WALK_TRIES):
                step = env.step(env.act_spec.sample(rng, 1)[0])
                if step["is_last"]:
                    raise GoalError(f"an episode ended during a goal walk of {steps} actions; use a shorter walk")
                after = _observation(step, keys)
                if not _same(after, now):
                    break
            now = after
        if not _same(now, start):
            return now
    raise GoalError(f"no random walk of {steps} actions left its start in {WALK_TRIES} tries")


class GoalEnv(Wrapper):
    """Ends an episode with reward 1 (terminal) at the step whose observation equals ``goal``; other steps
    give reward 0."""

    def __init__(self, env: Env, goal: Mapping[str, np.ndarray]):
        super().__init__(env)
        self.goal = dict(goal)

    def step(self, action) -> dict[str, np.ndarray]:
        step = self.env.step(action)
        reached = _same(self.goal, step)
        step["reward"] = np.asarray(1.0 if reached else 0.0, np.float32)
        if reached:
            step["is_last"], step["is_terminal"] = np.asarray(True), np.asarray(True)
        return step


def _goal_env(make_env: Callable[[int], Env], seed: int, goal: Mapping[str, np.ndarray], limit: int | None) -> Env:
    env: Env = GoalEnv(make_env(seed), goal)
    return TimeLimit(env, limit) if limit else env


def goal_evaluation(agent: Agent, make_env: Callable[[int], Env], goal: str, planner: str, episodes: int,
                    planner_args: Sequence[str] = (), seed: int = 0) -> dict[str, Any]:
    """Plan toward ``goal`` (see the module docstring) with ``planner`` on ``agent``'s model in ``episodes``
    episodes of ``make_env(seed + i)``; returns the fraction reached and what was run. GoalError (a model
    without a goal cost, a bad goal), PlanningError (a planner that cannot plan these actions) or ConfigError
    (a bad planner setting), each one sentence."""
    spec = parse_goal(goal)
    if planner not in PLANNERS:
        raise GoalError(f"--goal plans toward the goal with a planner; choose --planner {' or '.join(sorted(PLANNERS))}")
    if agent.model is None:
        raise GoalError(f"agent '{agent.name}' has no world model to plan toward a goal with")
    model = goal_model(agent.model, agent.name)
    planner_spec(planner, model.act_spec)
    settings = agent.planner_defaults.get(planner) or default_settings(planner, model, agent.discount)
    settings = apply_overrides(settings, list(planner_args)) if planner_args else settings
    goals = []
    for i in range(episodes):
        env = make_env(seed + i)
        try:
            goals.append(load_goal(spec.path, env) if spec.path is not None
                         else walk_goal(env, spec.steps, np.random.default_rng([seed + i, spec.steps])))
        finally:
            env.close()
    with torch.no_grad():
        goal_states = model.goal_state({k: torch.as_tensor(np.stack([g[k] for g in goals]), device=agent.device)
                                        for k in goals[0]})
    policy = PlannerPolicy(GoalReward(model, goal_states), planner, settings, device=agent.device,
                           name=f"{agent.name}+{planner}+goal")
    limit = 2 * spec.steps if spec.steps else None
    reached, _ = run_episodes(policy, [functools.partial(_goal_env, make_env, seed + i, g, limit)
                                       for i, g in enumerate(goals)])
    return {"goal": goal, "planner": planner, "episodes": episodes, "reached": float(np.mean(reached)),
            "reached_episodes": int(np.sum(reached)), "steps_allowed": limit}
