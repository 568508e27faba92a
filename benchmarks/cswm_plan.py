"""Planning toward a goal in C-SWM's latent space on the 2D shapes world, against random actions and against the
same planner on the true simulator.

    python benchmarks/cswm_plan.py RUN [--goals 100] [--moves 5] [--budget 10] [--planners cem shooting]
                                      [--seed 0] [--json FILE]

Goal i: the shapes world reset with seed ``EVAL_SEED_BASE + seed * 100_000 + i`` (apart from the training
data's seeds), then ``--moves`` uniformly random actions, each redrawn until an object moves (the walk is
redrawn if it ends where it began); its image is the goal. From the start, each method acts for at most
``--budget`` steps by model-predictive control (plan, take the first action, replan; no warm start); a goal is
reached when every object stands on its goal cell, read from the environment's true state.

Methods, each on the same goals:

- ``P model``: planner P (``cem``, ``shooting``: the discrete-action planners; MPPI plans continuous actions
  only) on the run's model with the latent goal cost (:class:`reverie.models.latent_goal.GoalReward`: minus
  the squared distance summed over slots between each imagined state and the goal's encoding), the agent's
  settings (:data:`reverie.agents.cswm.GOAL_PLANNERS`);
- ``P true``: the same planner and settings on the true rules
  (:class:`reverie.envs.shapes.ShapesGoalDynamics`: minus the squared distance in grid cells summed
  over objects), what the planner does with a perfect model;
- ``random``: uniformly random actions.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

import reverie
from reverie.envs.shapes import Shapes, ShapesGoalDynamics
from reverie.models.base import Dynamics, WorldModel
from reverie.models.latent_goal import GoalReward, goal_model
from reverie.models.state import State, map_state
from reverie.planning import PLANNERS, PlannerSettings

EVAL_SEED_BASE = 3_000_000

#: A policy over the active rows: (observations [n, H, W, 3] uint8, true positions [n, K, 2], their rows) -> actions [n]
Chooser = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def make_goals(count: int, moves: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Start and goal positions ``[count, K, 2]`` (see the module docstring)."""
    starts, goals = [], []
    env = Shapes()
    for i in range(count):
        rng = np.random.default_rng([seed, i])
        _, info = env.reset(seed=EVAL_SEED_BASE + seed * 100_000 + i)
        start = info["positions"]
        while True:
            env.reset(options={"positions": start})
            for _ in range(moves):
                while not env.step(int(rng.integers(env.action_space.n)))[4]["moved"]:
                    pass
            if not np.array_equal(env.positions, start):
                break
        starts.append(start)
        goals.append(env.positions.copy())
    return np.stack(starts), np.stack(goals)


def rollout(choose: Chooser, starts: np.ndarray, goals: np.ndarray, budget: int) -> np.ndarray:
    """Steps each goal took to be reached (``budget + 1`` where it was not)."""
    envs = [Shapes() for _ in starts]
    frames = np.stack([env.reset(options={"positions": s})[0] for env, s in zip(envs, starts)])
    positions = starts.copy()
    taken = np.full(len(starts), budget + 1)
    for t in range(budget):
        active = np.flatnonzero(taken > budget)
        if not len(active):
            break
        actions = choose(frames[active], positions[active], active)
        for row, action in zip(active, actions):
            frame, _, _, _, info = envs[row].step(int(action))
            frames[row], positions[row] = frame, info["positions"]
            if np.array_equal(positions[row], goals[row]):
                taken[row] = t + 1
    return taken


def planner_chooser(planner: str, settings: PlannerSettings, dynamics: Callable[[np.ndarray], Dynamics],
                    state: Callable[[np.ndarray, np.ndarray], State], seed: int) -> Chooser:
    """Plan with ``planner`` on ``dynamics(rows)`` from ``state(frames, positions)`` and take the first action."""
    gen = torch.Generator().manual_seed(seed)

    def choose(frames: np.ndarray, positions: np.ndarray, rows: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            result = PLANNERS[planner].fn(dynamics(rows), state(frames, positions), settings, generator=gen)
        return result.action.argmax(-1).numpy()

    return choose


def latent_state(model: WorldModel) -> Callable[[np.ndarray, np.ndarray], State]:
    def encode(frames: np.ndarray, positions: np.ndarray) -> State:
        n = len(frames)
        obs = {k: torch.as_tensor(frames)[:, None] for k in model.obs_spec}
        with torch.no_grad():
            _, state = model.observe(obs, torch.zeros(n, 1, model.act_spec.size), torch.ones(n, 1, dtype=torch.bool))
        return state

    return encode


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="a C-SWM run folder trained on gym:reverie/Shapes-v0")
    p.add_argument("--goals", type=int, default=100)
    p.add_argument("--moves", type=int, default=5, help="random moves from the start to the goal")
    p.add_argument("--budget", type=int, default=10, help="steps allowed to reach a goal")
    p.add_argument("--planners", nargs="+", default=["cem", "shooting"], choices=["cem", "shooting"])
    p.add_argument("--methods", nargs="+", default=["model", "true", "random"], choices=["model", "true", "random"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    run = reverie.load(args.run)
    agent = run.agent
    model = goal_model(run.model, agent.name)
    starts, goals = make_goals(args.goals, args.moves, args.seed)
    distance = np.abs(starts - goals).sum((1, 2))
    with torch.no_grad():
        goal_frames = np.stack([Shapes().draw(g) for g in goals])
        goal_states = model.goal_state({k: torch.as_tensor(goal_frames) for k in model.obs_spec})
    goal_positions = torch.as_tensor(goals)
    methods: dict[str, Chooser] = {}
    for planner in args.planners:
        settings = agent.planner_defaults[planner]
        if "model" in args.methods:
            methods[f"{planner} model"] = planner_chooser(
                planner, settings,
                lambda rows: GoalReward(model, map_state(lambda x: x[torch.as_tensor(rows)], goal_states)),
                latent_state(model), args.seed)
        if "true" in args.methods:
            methods[f"{planner} true"] = planner_chooser(
                planner, settings, lambda rows: ShapesGoalDynamics(goal_positions[torch.as_tensor(rows)]),
                lambda frames, positions: torch.as_tensor(positions), args.seed)
    if "random" in args.methods:
        rng = np.random.default_rng([args.seed, 99])
        methods["random"] = lambda frames, positions, rows: rng.integers(0, 20, len(rows))
    result = {"run": str(args.run), "goals": args.goals, "moves": args.moves, "budget": args.budget,
              "seed": args.seed, "distance_mean": float(distance.mean()),
              "distance_counts": {int(d): int((distance == d).sum()) for d in np.unique(distance)},
              "settings": {p: repr(agent.planner_defaults[p]) for p in args.planners}, "methods": {}}
    print(f"{args.run}: {args.goals} goals {args.moves} random moves away (true distance {distance.mean():.2f} cells "
          f"on average), {args.budget} steps each")
    print("method | reached % | mean steps (reached) | seconds")
    print("---|---|---|---")
    for name, choose in methods.items():
        started = time.perf_counter()
        taken = rollout(choose, starts, goals, args.budget)
        seconds = time.perf_counter() - started
        reached = taken <= args.budget
        steps = float(taken[reached].mean()) if reached.any() else float("nan")
        result["methods"][name] = {"reached": float(reached.mean()), "mean_steps": steps,
                                   "seconds": round(seconds, 1), "steps": taken.tolist()}
        print(f"{name} | {100 * reached.mean():.0f} | {steps:.2f} | {seconds:.1f}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
