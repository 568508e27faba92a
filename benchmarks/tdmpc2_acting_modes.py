"""A trained TD-MPC2 run's evaluation episodes acted three ways, and where its planner's value is wrong.

    python benchmarks/tdmpc2_acting_modes.py RUN_DIR [--episodes 20] [--modes mean,elite,prior]
        [--probe SEED:STEPS ...]

Plays the same ``--episodes`` evaluation episodes (environment seeds ``run.seed + 50000 + i``, as
``reverie eval`` does) with each acting mode: ``mean`` (MPPI executing the weighted mean of its elites,
the preset's evaluation), ``elite`` (MPPI executing one elite drawn by weight, TD-MPC2's own choice,
``elite_action=true``) and ``prior`` (the policy prior's mode, no planning: ``reverie eval --planner
prior``). Prints one JSON line per episode and mode (return; for dm_control reacher also the target's
distance from the arm's base, the closest the finger came and the largest raw shoulder angle observed)
and a summary line per mode.

``--probe SEED:STEPS`` plays STEPS planned steps of the episode of environment seed SEED, then compares,
at the state reached, the model's predicted value of candidate plans (policy rollouts, uniform random
sequences, zero actions) with the return the real environment gives for 40 steps from there (the
physics state restored before each), to tell a search failure (the model knows a better plan than the
one executed) from a model failure (the model's values are wrong there).
"""

from __future__ import annotations

import argparse
import functools
import json
import time

import numpy as np
import torch

from reverie.agents.planner_policy import planner_policy
from reverie.agents.tdmpc2 import observe_step
from reverie.planning.returns import rollout_returns
from reverie.training import session
from reverie.training.evaluate import run_episodes


#: acting mode -> (planner, planner settings) for :func:`planner_policy`
MODES = {"mean": ("mppi", []), "elite": ("mppi", ["elite_action=true"]), "prior": ("prior", [])}


def acting(agent, mode: str):
    """Something that acts like ``agent`` by ``mode`` (the agent's own MPPI settings, or its prior)."""
    planner, overrides = MODES[mode]
    return planner_policy(agent, planner, overrides)


def physics_of(env):
    """The dm_control physics under reverie's wrappers, or None for other environments."""
    while env is not None and not hasattr(env, "physics"):
        env = getattr(env, "env", None) or getattr(env, "_env", None)
    return None if env is None else env.physics


def describe(make, seed: int, ret: float, episode: dict) -> dict:
    """One episode's return; on dm_control reacher also the target's radius and the closest approach."""
    row = {"seed": seed, "return": float(ret)}
    env = make(seed)
    env.reset()
    physics = physics_of(env)
    try:
        target = physics.named.data.geom_xpos["target"][:2] if physics is not None else None
    except KeyError:
        target = None
    if target is not None:
        row["target_radius"] = round(float(np.linalg.norm(target)), 3)
        row["closest"] = round(float(np.linalg.norm(episode["vector"][:, 2:4], axis=1).min()), 3)
        # the shoulder is an unlimited hinge and the observation its raw angle: past +-pi it is a value
        # that training data rarely holds
        row["shoulder_max_abs"] = round(float(np.abs(episode["vector"][:, 0]).max()), 2)
    env.close()
    return row


def play(agent, make, base: int, episodes: int, mode: str) -> None:
    seeds = [base + i for i in range(episodes)]
    start = time.time()
    returns, recorded = run_episodes(acting(agent, mode), [functools.partial(make, s) for s in seeds], record=True)
    for seed, ret, episode in zip(seeds, returns, recorded):
        print(json.dumps({"mode": mode, **describe(make, seed, ret, episode)}), flush=True)
    print(json.dumps({"mode": mode, "summary": True, "mean": round(float(returns.mean()), 1),
                      "std": round(float(returns.std()), 1), "episodes": episodes,
                      "failures_below_500": int((returns < 500).sum()), "seconds": round(time.time() - start, 1)}),
          flush=True)


def probe(agent, make, seed: int, steps: int, horizon: int = 40) -> None:
    actor = acting(agent, "mean")
    env = make(seed)
    step = env.reset()
    state = actor.init_state(1)
    batch = lambda s: dict({k: np.asarray(v)[None] for k, v in s.items()}, action=np.zeros((1, agent.act_spec.size), np.float32))
    for _ in range(steps):
        env_action, _, state, _ = actor.act(batch(step), state, False)
        step = env.step(env_action[0])
    physics = physics_of(env)
    saved = physics.get_state().copy()
    z = observe_step(agent.wm, batch(step), None, agent.device)["latent"]

    def real_return(first: list[np.ndarray]) -> float:
        physics.set_state(saved)
        physics.forward()
        s, total = step, 0.0
        for t in range(horizon):
            if t < len(first):
                a = first[t]
            else:
                zz = observe_step(agent.wm, batch(s), None, agent.device)["latent"]
                a = agent.wm.policy_dist(zz).mode()[0].cpu().numpy()
            s = env.step(a)
            total += float(s["reward"])
        return total

    settings, n, size = agent.cfg.planner, 64, agent.act_spec.size
    start = {"latent": z.repeat(n, 1), "reward": torch.zeros(n, device=agent.device)}
    shape = (1, n, settings.horizon, size)
    sample = lambda st: agent.wm.policy(st).sample()
    value_policy, _ = rollout_returns(agent.wm, start, torch.zeros(shape), settings, policy=sample, policy_count=n)
    random = torch.rand(shape) * 2 - 1
    value_random, _ = rollout_returns(agent.wm, start, random, settings)
    value_zero, _ = rollout_returns(agent.wm, start, torch.zeros(shape), settings)
    executed, _, _, _ = actor.act(batch(step), state, False)
    best = int(value_random.argmax())
    print(json.dumps({
        "probe": f"{seed}:{steps}", "obs": np.round(step["vector"], 3).tolist() if "vector" in step else None,
        "model_value": {"policy_rollouts": round(float(value_policy.mean()), 2),
                        "random_mean": round(float(value_random.mean()), 2),
                        "random_best": round(float(value_random.max()), 2), "zero": round(float(value_zero.mean()), 2)},
        f"real_return_{horizon}_steps": {
            "planner_action_then_policy": real_return([executed[0]]),
            "policy": real_return([]),
            "zero_x3_then_policy": real_return([np.zeros(size, np.float32)] * 3),
            "best_random_plan_then_policy": real_return(list(random[0, best].numpy())),
        },
    }), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir")
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--modes", default="mean,elite,prior")
    parser.add_argument("--probe", nargs="*", default=[], metavar="SEED:STEPS")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.set_grad_enabled(False)
    agent, cfg, make, _ = session.load_run(args.run_dir)
    if agent.name != "tdmpc2":
        parser.error(f"{args.run_dir} is a {agent.name} run; this benchmark reads TD-MPC2 runs")
    for mode in [m for m in args.modes.split(",") if m]:
        if mode not in MODES:
            parser.error(f"unknown mode {mode!r}; choose from {', '.join(MODES)}")
        play(agent, make, cfg.run.seed + 50_000, args.episodes, mode)
    for spec in args.probe:
        seed, steps = (int(x) for x in spec.split(":"))
        probe(agent, make, seed, steps)


if __name__ == "__main__":
    main()
