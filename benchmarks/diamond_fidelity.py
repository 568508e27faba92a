"""Next-frame fidelity of a trained DIAMOND run on held-out MinAtar episodes.

Plays ``--episodes`` episodes of the run's MinAtar game with uniformly random actions, on environment seeds
the run never trained on (10,000 and up); from every ``--stride``-th step of each episode whose frame
window is complete (at least ``model.context - 1`` steps in) and that has ``max(--horizons)`` real steps
after it, the model filters the real frames up to that step and then imagines with the actions really
taken. Each imagined frame is binarised (a channel is on above 127) and scored against the real one per
cell and object channel: precision, recall and F1 of the cells that are on (summed over every cell,
channel and start), the share of frames exactly right, and the same F1 for copying the last real frame
(the baseline a model must beat where objects move).

    OMP_NUM_THREADS=1 python benchmarks/diamond_fidelity.py RUN [--episodes 100] [--horizons 1 5 15]

Prints a Markdown table and writes ``--out`` (default RUN/diamond_fidelity.json).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

import reverie
from reverie.agents.diamond import Diamond
from reverie.envs import make_env
from reverie.models.base import imagine
from reverie.models.state import stack_states, state_entries


def play(env, episodes: int, rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    """``episodes`` random-action episodes: (images ``[T, H, W, C]``, action indices ``[T]``, action[t] into t)."""
    out = []
    for _ in range(episodes):
        step, frames, actions = env.reset(), [], [0]
        while True:
            frames.append(step["image"])
            if step["is_last"]:
                break
            actions.append(int(rng.integers(env.act_spec.size)))
            step = env.step(actions[-1])
        out.append((np.stack(frames), np.asarray(actions)))
    return out


def counts(pred: np.ndarray, real: np.ndarray) -> np.ndarray:
    """[tp, fp, fn, frames, exact frames] of binary frames ``[N, H, W, C]``."""
    tp, fp, fn = (pred & real).sum(), (pred & ~real).sum(), (~pred & real).sum()
    exact = (pred == real).reshape(len(pred), -1).all(1).sum()
    return np.array([tp, fp, fn, len(pred), exact], dtype=np.int64)


def scores(c: np.ndarray) -> dict:
    tp, fp, fn, frames, exact = (int(x) for x in c)
    precision, recall = tp / max(tp + fp, 1), tp / max(tp + fn, 1)
    return {"precision": precision, "recall": recall, "f1": 2 * tp / max(2 * tp + fp + fn, 1),
            "frames": frames, "exact_frames": exact / max(frames, 1)}


@torch.no_grad()
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir")
    p.add_argument("--episodes", type=int, default=100)
    p.add_argument("--horizons", type=int, nargs="+", default=[1, 5, 15])
    p.add_argument("--stride", type=int, default=2, help="steps between imagination starts in an episode")
    p.add_argument("--seed", type=int, default=0, help="seeds the actions and the sampler's noise")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    run = reverie.load(args.run_dir)
    agent = run.agent
    if not isinstance(agent, Diamond):
        print(f"error: {args.run_dir} is a {agent.name} run, not a diamond run", file=sys.stderr)
        return 2
    wm, cfg = agent.wm, run.config
    rng = np.random.default_rng(args.seed)
    torch.manual_seed(args.seed)
    horizon = max(args.horizons)
    model_c = {h: np.zeros(5, np.int64) for h in args.horizons}
    copy_c = {h: np.zeros(5, np.int64) for h in args.horizons}
    lengths = []
    for i, (images, actions) in enumerate(play(make_env(cfg.run.env, obs="pixels", seed=10_000 + args.seed),
                                               args.episodes, rng)):
        steps = len(images)
        lengths.append(steps)
        onehot = torch.eye(wm.act_spec.size)[torch.as_tensor(actions)]                 # [T, A]
        is_first = torch.zeros(1, steps, dtype=torch.bool)
        is_first[0, 0] = True
        states, _ = wm.observe({wm.key: torch.as_tensor(images)[None]}, onehot[None], is_first)
        starts = list(range(wm.cfg.context - 1, steps - horizon, args.stride))
        if not starts:
            continue
        start = {k: v[0, starts] for k, v in state_entries(states).items()}           # [N]
        future = torch.stack([onehot[s + 1:s + 1 + horizon] for s in starts])          # [N, H, A]
        dreamt = wm.decode(stack_states([imagine(wm, start, future)], 0))[wm.key][0]   # [N, H, h, w, C]
        pred = dreamt.numpy() > 127
        for h in args.horizons:
            real = np.stack([images[s + h] for s in starts]) > 127
            model_c[h] += counts(pred[:, h - 1], real)
            copy_c[h] += counts(np.stack([images[s] for s in starts]) > 127, real)
        print(f"episode {i + 1}/{args.episodes}: {steps} steps, {len(starts)} starts", file=sys.stderr)
    result = {"run": str(args.run_dir), "env": cfg.run.env, "episodes": args.episodes, "seed": args.seed,
              "episode_length_mean": float(np.mean(lengths)), "process": wm.cfg.process,
              "sampler_steps": wm.cfg.edm.steps if wm.cfg.process == "edm" else wm.cfg.ddpm.steps,
              "horizons": {h: {"model": scores(model_c[h]), "copy_last_frame": scores(copy_c[h])}
                           for h in args.horizons}}
    print("| horizon | frames | model F1 | precision | recall | exact frames | copy-last-frame F1 |")
    print("|---|---|---|---|---|---|---|")
    for h in args.horizons:
        m, c = result["horizons"][h]["model"], result["horizons"][h]["copy_last_frame"]
        print(f"| {h} | {m['frames']} | {m['f1']:.3f} | {m['precision']:.3f} | {m['recall']:.3f} | "
              f"{m['exact_frames']:.3f} | {c['f1']:.3f} |")
    out = Path(args.out) if args.out else Path(args.run_dir) / "diamond_fidelity.json"
    out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
