"""Multitask TD-MPC2 against single-task TD-MPC2: open-loop prediction error on held-out episodes, and return.

    python benchmarks/multitask_measure.py --tasks dmc:cartpole-swingup,dmc:reacher-easy --steps 20000 \
        --out runs/multitask-measure [--seed 0] [--experts 4] [--top-k 2]

Trains, one after the other, one single-task run per task (``--steps`` environment steps each), a dense
multitask run and a mixture-of-experts multitask run on all tasks (``--steps`` per task, so every model sees
as much of each task and makes as many updates per task), all with the same small network
(``SETTINGS``) and acting by the policy prior (planning would cost most of the budget on a CPU). Then, per
task, it plays held-out episodes (seeds no run trained on): two by the single-task agent and two by the dense
multitask agent, both exploring, and scores every model on the same episodes:

- ``reward_mse``: the 5-step open-loop reward error, ``mean_k (r_hat_{t+k} - r_{t+k})^2`` over k = 1..5,
  the latent rolled from the encoding of step t along the actions taken; comparable across models (units of
  reward);
- ``latent_mse``: the 5-step consistency error against each model's own encoding of step t + k (SimNorm
  latents; each model has its own latent space, so this compares less directly);
- ``return``: the mean of 5 greedy evaluation episodes (policy prior) of each run at its end.

It prints one JSON line per (task, model) and a table of the ratios multitask / single-task.
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from pathlib import Path

import numpy as np
import torch

from reverie import api
from reverie.envs.multitask import split_tasks
from reverie.models.tdmpc2 import TDMPC2Model
from reverie.specs import ACTION_MASK_KEY, TASK_KEY
from reverie.training.env_factory import TaskFactory, env_factory
from reverie.training.evaluate import run_episodes

SETTINGS = ["model.latent=32", "model.enc_units=64", "model.units=64", "model.num_q=2", "acting=policy",
            "run.batch_size=64", "run.train_ratio=256", "run.prefill=500", "run.log_every=5000",
            "run.eval_every=100000000", "run.checkpoint_every=100000000", "run.eval_episodes=5", "model.task_dim=16",
            "run.threads=1"]
HORIZON = 5


def train(name: str, env: str, steps: int, seed: int, out: Path, extra: list[str]) -> tuple[api.Run, float]:
    started = time.perf_counter()
    run = api.train("tdmpc2", env=env, steps=steps, seed=seed, run_dir=out / name, say=None,
                    overrides=[*SETTINGS, *extra])
    return run, time.perf_counter() - started


def episodes(run: api.Run, make, seeds: list[int]) -> list[dict[str, np.ndarray]]:
    torch.manual_seed(seeds[0])
    _, recorded = run_episodes(run.agent, [functools.partial(make, s) for s in seeds], explore=True, record=True)
    assert recorded is not None
    return recorded


def padded(ep: dict[str, np.ndarray], factory: TaskFactory, k: int) -> dict[str, np.ndarray]:
    """An episode of task k's own env as the multitask models see it."""
    layout, out = factory.layout, dict(ep)
    width = layout.obs_spec["vector"].shape[0]
    out["vector"] = np.pad(ep["vector"], ((0, 0), (0, width - ep["vector"].shape[1])))
    out["action"] = np.pad(ep["action"], ((0, 0), (0, layout.act_spec.size - ep["action"].shape[1])))
    out[TASK_KEY] = np.repeat(layout.one_hot(k)[None], len(ep["reward"]), 0)
    out[ACTION_MASK_KEY] = np.repeat(layout.mask(k)[None], len(ep["reward"]), 0)
    return out


def stripped(ep: dict[str, np.ndarray], obs: int, act: int) -> dict[str, np.ndarray]:
    """A padded episode as task k's own env gives it."""
    out = {k: v for k, v in ep.items() if k not in (TASK_KEY, ACTION_MASK_KEY)}
    out["vector"], out["action"] = ep["vector"][:, :obs], ep["action"][:, :act]
    return out


@torch.no_grad()
def open_loop(model: TDMPC2Model, eps: list[dict[str, np.ndarray]]) -> tuple[float, float]:
    """(5-step reward MSE, 5-step latent MSE) over every start of every episode."""
    rewards, latents = [], []
    for ep in eps:
        obs = {k: torch.as_tensor(ep[k]) for k in model.obs_spec}
        z_all = model.encode(obs)                                                    # [T, D]
        task = model.task_of(obs)
        action, reward = torch.as_tensor(ep["action"]).float(), torch.as_tensor(ep["reward"]).float()
        starts = torch.arange(len(reward) - HORIZON)
        z = z_all[starts]
        for k in range(1, HORIZON + 1):
            a = action[starts + k]   # action[t] led into step t
            rows = None if task is None else type(task)(task.onehot[starts], task.mask[starts])
            r_hat = model.expectation(model.reward_logits(z, a, rows))
            z = model.next(z, a, rows)
            rewards.append((r_hat - reward[starts + k]) ** 2)
            latents.append(((z - z_all[starts + k]) ** 2).mean(-1))
    return float(torch.cat(rewards).mean()), float(torch.cat(latents).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", default="dmc:cartpole-swingup,dmc:reacher-easy")
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--experts", type=int, default=4)
    parser.add_argument("--top-k", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("runs/multitask-measure"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    tasks = split_tasks(args.tasks)
    runs, seconds = {}, {}
    for i, task in enumerate(tasks):
        runs[task], seconds[task] = train(f"single-{i}", task, args.steps, args.seed, args.out, [])
    multi = len(tasks) * args.steps
    runs["dense"], seconds["dense"] = train("dense", args.tasks, multi, args.seed, args.out, [])
    runs["moe"], seconds["moe"] = train("moe", args.tasks, multi, args.seed, args.out,
                                        [f"model.experts={args.experts}", f"model.top_k={args.top_k}"])
    factory = env_factory(runs["dense"].config.run)
    assert isinstance(factory, TaskFactory)
    table = []
    for k, task in enumerate(tasks):
        own = runs[task].env
        probe = own(0)
        obs, act = probe.obs_spec["vector"].shape[0], probe.act_spec.size
        probe.close()
        seeds = [args.seed + 90_000 + i for i in range(2)]
        held = episodes(runs[task], own, seeds)
        held += [stripped(ep, obs, act) for ep in episodes(runs["dense"], factory.task(k), seeds)]
        scores = {}
        for name in (task, "dense", "moe"):
            data = held if name == task else [padded(ep, factory, k) for ep in held]
            model = runs[name].agent.model
            assert isinstance(model, TDMPC2Model)
            summary = runs[name].summary
            ret = summary["eval/return"] if name == task else summary[f"eval/{task}/return"]
            reward_mse, latent_mse = open_loop(model, data)
            scores[name] = {"reward_mse": reward_mse, "latent_mse": latent_mse, "return": ret}
            print(json.dumps({"task": task, "model": "single" if name == task else name, **scores[name],
                              "train_s": round(seconds[name], 1), "held_out_steps": sum(len(e["reward"]) for e in data)}))
        table.append((task, scores))
    print("\n| task | model | reward 5-step MSE | ratio to single | latent 5-step MSE | return |")
    print("|---|---|---|---|---|---|")
    for task, scores in table:
        base = scores[task]["reward_mse"]
        for name, s in scores.items():
            label = "single" if name == task else name
            print(f"| {task} | {label} | {s['reward_mse']:.4f} | {s['reward_mse'] / base:.2f} | "
                  f"{s['latent_mse']:.5f} | {s['return']:.1f} |")
    print("\ntraining seconds:", json.dumps({k: round(v) for k, v in seconds.items()}))


if __name__ == "__main__":
    main()
