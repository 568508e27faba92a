"""C-SWM's evaluation (Kipf et al. 2020, Table 1): Hits@1 and MRR of a trained model's 1-, 5- and 10-step latent
predictions against every encoded evaluation state, on held-out random-policy episodes of 10 steps, next to the
paper's numbers.

    python benchmarks/cswm_eval.py RUN [--episodes 10000] [--steps 1 5 10] [--seed 2] [--json FILE]

The evaluation episodes come from the run's own environment (``run.env``, its image size) with seeds apart from
the training data's, and uniformly random actions (the paper: 10,000 episodes, the reference's evaluation data
seeded apart from its training data). For k steps, each episode gives one query: the model's prediction k steps
ahead of its first frame along its recorded actions. The main columns rank that prediction's true state (the
encoding of frame k) among the encodings of frame k of every evaluation episode (the paper's wording); the
``ref`` columns rank each encoded state's own prediction among all predictions, as the reference ``eval.py``
computes it. Both are computed a chunk of queries at a time (``--chunk``), never as an N x N x D tensor; the
pure computation is :mod:`reverie.analysis.ranking`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

import reverie
from reverie.analysis.ranking import multi_step_predictions, ranking_scores, true_ranks
from reverie.envs.spaces import Env

#: C-SWM's row of the paper's Table 1 (Hits@1 %, MRR %) by environment and prediction steps (2D shapes)
PAPER = {
    "gym:reverie/Shapes-v0": {1: (100.0, 100.0), 5: (100.0, 100.0), 10: (99.9, 100.0)},
}
#: Seeds of the evaluation environments start here (training collection uses seeds near run.seed)
EVAL_SEED_BASE = 2_000_000


def random_episodes(env: Env, episodes: int, steps: int, rng: np.random.Generator) -> tuple[dict, np.ndarray]:
    """``episodes`` episodes of ``steps`` uniformly random actions from one reset each: observations
    ``{key: [episodes, steps + 1, ...]}`` and model-space actions ``[episodes, steps, A]``."""
    keys = list(env.obs_spec)
    obs = {k: np.empty((episodes, steps + 1, *env.obs_spec[k].shape), env.obs_spec[k].dtype) for k in keys}
    actions = np.empty((episodes, steps, env.act_spec.size), np.float32)
    for i in range(episodes):
        step = env.reset()
        for t in range(steps + 1):
            for k in keys:
                obs[k][i, t] = step[k]
            if t == steps:
                break
            if step["is_last"]:
                raise ValueError(f"an evaluation episode ended after {t} steps; it needs {steps}")
            action = env.act_spec.sample(rng, 1)
            actions[i, t] = env.act_spec.to_model(action)[0]
            step = env.step(action[0])
    return obs, actions


def evaluate(run_dir: str, episodes: int, steps: list[int], seed: int, batch: int, chunk: int) -> dict:
    run = reverie.load(run_dir)
    model = run.model
    env = run.env(EVAL_SEED_BASE + seed)
    rng = np.random.default_rng([EVAL_SEED_BASE, seed])
    device = run.agent.device
    started = time.perf_counter()
    predicted: dict[int, list[torch.Tensor]] = {k: [] for k in steps}
    encoded: dict[int, list[torch.Tensor]] = {k: [] for k in steps}
    with torch.no_grad():
        for first in range(0, episodes, batch):
            obs, actions = random_episodes(env, min(batch, episodes - first), max(steps), rng)
            pairs = multi_step_predictions(model, {k: torch.as_tensor(v, device=device) for k, v in obs.items()},
                                           torch.as_tensor(actions, device=device), steps)
            for k, (pred, target) in pairs.items():
                predicted[k].append(pred.cpu())
                encoded[k].append(target.cpu())
    env.close()
    encode_s = time.perf_counter() - started
    rows = {}
    for k in steps:
        pred, target = torch.cat(predicted[k]), torch.cat(encoded[k])
        ours = ranking_scores(true_ranks(pred, target, chunk=chunk))
        ref = ranking_scores(true_ranks(target, pred, chunk=chunk))
        rows[k] = {"hits_at_1": ours.hits_at_1, "mrr": ours.mrr, "ref_hits_at_1": ref.hits_at_1, "ref_mrr": ref.mrr}
    env_id = run.config.run.env
    return {"run": str(run_dir), "env": env_id, "checkpoint_step": run.checkpoint_step, "episodes": episodes,
            "seed": seed, "seconds": round(time.perf_counter() - started, 1), "encode_seconds": round(encode_s, 1),
            "steps": rows, "paper": {k: v for k, v in PAPER.get(env_id, {}).items() if k in steps}}


def table(result: dict) -> str:
    paper = result["paper"]
    lines = [f"{result['run']}: {result['env']}, {result['episodes']} evaluation episodes (seed {result['seed']}), "
             f"{result['seconds']} s",
             "steps | Hits@1 % | MRR % | ref Hits@1 % | ref MRR % | paper Hits@1 % | paper MRR %",
             "---|---|---|---|---|---|---"]
    for k, row in result["steps"].items():
        p = paper.get(k)
        shown = (f"{p[0]:.1f} | {p[1]:.1f}" if p else "- | -")
        ours = " | ".join(f"{100 * row[key]:.2f}" for key in ("hits_at_1", "mrr", "ref_hits_at_1", "ref_mrr"))
        lines.append(f"{k} | {ours} | {shown}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="a C-SWM run folder")
    p.add_argument("--episodes", type=int, default=10_000, help="evaluation episodes (the paper: 10,000)")
    p.add_argument("--steps", type=int, nargs="+", default=[1, 5, 10], help="prediction steps")
    p.add_argument("--seed", type=int, default=0, help="seed of the evaluation episodes")
    p.add_argument("--batch", type=int, default=500, help="episodes encoded at a time")
    p.add_argument("--chunk", type=int, default=1000, help="predictions ranked at a time")
    p.add_argument("--json", type=Path, help="also write the result here")
    args = p.parse_args(argv)
    if args.episodes < 2 or min(args.steps) < 1:
        p.error("--episodes needs at least 2 episodes to rank and --steps positive step counts")
    torch.set_num_threads(1)
    result = evaluate(args.run, args.episodes, sorted(set(args.steps)), args.seed, args.batch, args.chunk)
    print(table(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
