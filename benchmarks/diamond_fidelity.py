"""Per-object open-loop fidelity of a trained DIAMOND or Dreamer run on held-out MinAtar episodes.

Plays ``--episodes`` episodes of the run's MinAtar game on environment seeds the run never trained on
(10,000 + ``--seed`` and up) under ``--policy``: ``random`` (a uniform action every step), ``held`` (a
uniform action held for 1 to ``--hold`` steps: longer runs of one action) or ``agent`` (the run's own
agent, sampling its actions as in training). From every ``--stride``-th step of each episode that has
``max(--horizons)`` real steps after it and is at least 3 steps in (a complete frame window for DIAMOND's
4 frames of context, ``model.context - 1`` for another context; the same starts for every run of a
context of at most 4, so a Dreamer run and a DIAMOND run are scored on the same frames), the model
filters the real frames up to that step and imagines with the actions really taken
(:func:`reverie.analysis.object_fidelity.open_loop_frames`; a Dreamer run's frames are its decoder's).
Each imagined frame is binarised (a channel is on above 127) and scored against the real one per cell:
precision, recall and F1 of the cells that are on, over all channels and per MinAtar object channel
(Breakout: paddle, ball, trail, brick), the share of frames exactly right, and the same scores for copying
the last real frame (the baseline a model must beat where objects move).

    OMP_NUM_THREADS=1 python benchmarks/diamond_fidelity.py RUN [--episodes 100] [--horizons 1 5 15]
        [--policy random|held|agent] [--sampler-steps N] [--json PATH]

Prints Markdown tables and writes the figures as JSON to ``--json`` (default RUN/diamond_fidelity.json):
``{run, agent, env, channels, policy, hold, episodes, seed, episode_length_mean, starts, process,
sampler_steps, calls_per_frame, horizons: {H: {model, copy_last_frame}}}``; ``model`` and
``copy_last_frame`` each hold ``precision, recall, f1, cells_on, frames, exact_frames`` and ``channels:
{name: {precision, recall, f1, cells_on}}``. ``process``, ``sampler_steps`` and ``calls_per_frame`` are null
for a Dreamer run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

import reverie
from reverie.analysis.object_fidelity import binarise, cell_counts, exact_frames, open_loop_frames, scores
from reverie.envs import make_env
from reverie.envs.minatar_env import MinAtarEnv
from reverie.envs.random_actions import HeldRandomActions
from reverie.models.base import DECODER, has
from reverie.models.diffusion import DiffusionWorldModel
from reverie.training.evaluate import run_episodes

Episode = tuple[np.ndarray, np.ndarray]     # images [T, H, W, C] uint8, one-hot actions [T, A] (action[t] into t)


def play_fixed(env: MinAtarEnv, episodes: int, hold: tuple[int, int], rng: np.random.Generator) -> list[Episode]:
    """``episodes`` episodes of uniform random actions, each held for ``hold = (low, high)`` steps (``(1, 1)``:
    a new action every step, drawn as ``rng.integers``)."""
    size = env.act_spec.size
    out = []
    for _ in range(episodes):
        policy = HeldRandomActions(env.act_spec, 1, hold, rng) if hold != (1, 1) else None
        step, frames, actions = env.reset(), [], [np.zeros(size, np.float32)]
        while True:
            frames.append(step["image"])
            if step["is_last"]:
                break
            index = int(rng.integers(size)) if policy is None else int(policy()[0])
            actions.append(np.eye(size, dtype=np.float32)[index])
            step = env.step(index)
        out.append((np.stack(frames), np.stack(actions)))
    return out


def play_agent(run: reverie.Run, episodes: int, seed: int) -> list[Episode]:
    """``episodes`` episodes of the run's own agent (sampling its actions), one environment seed each."""
    env_name = run.config.run.env
    out = []
    for i in range(episodes):
        _, recorded = run_episodes(run.agent, [lambda: make_env(env_name, obs="pixels", seed=seed + i)],
                                   explore=True, record=True)
        assert recorded is not None                                   # record=True returns the episodes
        out.append((recorded[0]["image"], recorded[0]["action"].astype(np.float32)))
    return out


def table(result: dict, channels: list[str]) -> str:
    """The result as Markdown: the totals, then the F1 of each channel."""
    lines = ["| horizon | frames | model F1 | precision | recall | exact frames | copy-last-frame F1 |",
             "|---|---|---|---|---|---|---|"]
    for h, r in result["horizons"].items():
        m, c = r["model"], r["copy_last_frame"]
        lines.append(f"| {h} | {m['frames']} | {m['f1']:.3f} | {m['precision']:.3f} | {m['recall']:.3f} | "
                     f"{m['exact_frames']:.3f} | {c['f1']:.3f} |")
    lines += ["", "| horizon | " + " | ".join(f"{n} F1 (copy)" for n in channels) + " |",
              "|---|" + "---|" * len(channels)]
    for h, r in result["horizons"].items():
        m, c = r["model"]["channels"], r["copy_last_frame"]["channels"]
        lines.append(f"| {h} | " + " | ".join(f"{m[n]['f1']:.3f} ({c[n]['f1']:.3f})" for n in channels) + " |")
    return "\n".join(lines)


@torch.no_grad()
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir")
    p.add_argument("--episodes", type=int, default=100)
    p.add_argument("--horizons", type=int, nargs="+", default=[1, 5, 15])
    p.add_argument("--stride", type=int, default=2, help="steps between imagination starts in an episode")
    p.add_argument("--seed", type=int, default=0, help="seeds the episodes, the actions and the sampler's noise")
    p.add_argument("--policy", choices=("random", "held", "agent"), default="random")
    p.add_argument("--hold", type=int, default=10, help="--policy held: the longest hold, in steps")
    p.add_argument("--sampler-steps", type=int, default=None,
                   help="a DIAMOND run: denoising steps per imagined frame (default: the run's own)")
    p.add_argument("--json", "--out", dest="json", default=None, help="where to write the figures as JSON")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    run = reverie.load(args.run_dir)
    wm, env_name = run.agent.wm, run.config.run.env
    images = sorted(k for k, s in wm.obs_spec.items() if s.is_image)
    if not env_name.startswith("minatar:") or images != ["image"] or not has(wm, DECODER):
        print(f"error: {args.run_dir} is not a run on a MinAtar game's images with a decoder (env {env_name}, "
              f"observations {sorted(wm.obs_spec)}); train one with --obs pixels", file=sys.stderr)
        return 2
    diffusion = wm if isinstance(wm, DiffusionWorldModel) else None
    if args.sampler_steps is not None:
        if diffusion is None:
            print(f"error: --sampler-steps is a setting of a diamond run, not of {run.agent.name}", file=sys.stderr)
            return 2
        diffusion.set_sampler_steps(args.sampler_steps)
    rng = np.random.default_rng(args.seed)
    torch.manual_seed(args.seed)
    env = make_env(env_name, obs="pixels", seed=10_000 + args.seed)
    assert isinstance(env, MinAtarEnv)                                  # a minatar: name makes one
    channels = list(env.channel_names)
    if args.policy == "agent":
        episodes = play_agent(run, args.episodes, 10_000 + args.seed)
    else:
        episodes = play_fixed(env, args.episodes, (1, args.hold if args.policy == "held" else 1), rng)
    horizon, first = max(args.horizons), max(3, diffusion.cfg.context - 1 if diffusion is not None else 0)
    model_c = {h: np.zeros((len(channels), 3), np.int64) for h in args.horizons}
    copy_c = {h: np.zeros((len(channels), 3), np.int64) for h in args.horizons}
    exact = {h: np.zeros(2, np.int64) for h in args.horizons}          # model's, copy's exact frames
    total = 0
    for i, (frames, actions) in enumerate(episodes):
        starts = list(range(first, len(frames) - horizon, args.stride))
        if not starts:
            continue
        total += len(starts)
        pred = binarise(open_loop_frames(wm, "image", torch.as_tensor(frames), torch.as_tensor(actions), starts,
                                         horizon).numpy())                 # [N, horizon, H, W, C]
        last = binarise(frames[starts])
        for h in args.horizons:
            real = binarise(frames[[s + h for s in starts]])
            model_c[h] += cell_counts(pred[:, h - 1], real)
            copy_c[h] += cell_counts(last, real)
            exact[h] += [exact_frames(pred[:, h - 1], real), exact_frames(last, real)]
        print(f"episode {i + 1}/{len(episodes)}: {len(frames)} steps, {len(starts)} starts", file=sys.stderr)
    if total == 0:
        print(f"error: no episode of {args.episodes} is longer than {first + horizon} steps; play more episodes "
              f"or score shorter horizons", file=sys.stderr)
        return 2
    result = {"run": str(args.run_dir), "agent": run.agent.name, "env": env_name, "channels": channels,
              "policy": args.policy, "hold": args.hold if args.policy == "held" else None,
              "episodes": len(episodes), "seed": args.seed,
              "episode_length_mean": float(np.mean([len(f) for f, _ in episodes])), "starts": total,
              "process": diffusion.cfg.process if diffusion is not None else None,
              "sampler_steps": (diffusion.process.cfg.steps if diffusion is not None else None),
              "calls_per_frame": diffusion.calls_per_frame if diffusion is not None else None,
              "horizons": {h: {"model": {**scores(model_c[h], channels), "frames": total,
                                         "exact_frames": int(exact[h][0]) / total},
                               "copy_last_frame": {**scores(copy_c[h], channels), "frames": total,
                                                   "exact_frames": int(exact[h][1]) / total}}
                           for h in args.horizons}}
    print(table(result, channels))
    out = Path(args.json) if args.json else Path(args.run_dir) / "diamond_fidelity.json"
    out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
