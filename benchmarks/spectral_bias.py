"""Spectral bias over training: which frequencies of the observations a world model learned first.

    python benchmarks/spectral_bias.py RUN_DIR [--episodes 4] [--context 20] [--horizon 64] [--stride 100]
        [--dt 0.02] [--bands 3 | --edges 0,1,2,4,8,25] [--threshold 0.5] [--out DIR]

Needs a run trained with ``run.keep_checkpoints`` (checkpoints whose marker says ``pinned``, plus the
newest one; with fewer than two pinned ones every complete checkpoint is used). The same real episodes
are played once by the newest checkpoint's policy (greedy, the seeds ``reverie eval`` uses). From every window of
``context + horizon`` steps (one every ``--stride`` steps of an episode) each pinned checkpoint observes
``context`` steps and predicts the next ``horizon`` vector observations open loop with the actions really
taken (``reverie.analysis.dream.open_loop``). Real and predicted windows, each dimension scaled by the
real data's standard deviation (so every dimension counts alike), go to
``reverie.analysis.fourier.learning_order``: the relative error per frequency band (error power / real
power; 0 exact, about 2 for an unrelated trajectory of the same spectrum) at each checkpoint and the
first checkpoint each band falls below ``--threshold``. Writes ``spectral_bias.png`` (relative error per
band against checkpoint step) and ``spectral_bias.json`` to ``--out`` (default RUN_DIR/spectral_bias) and
prints the numbers. Frequencies are in Hz with ``--dt`` seconds per agent step (dmc cartpole: 0.01 s
control step x action repeat 2 = 0.02 s), else in cycles per step.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from reverie.analysis.dream import open_loop
from reverie.analysis.fourier import default_band_edges, learning_order
from reverie.training import session
from reverie.training.checkpoint import list_checkpoints, load_checkpoint
from reverie.training.evaluate import run_episodes

EVAL_SEEDS = 50_000


def pinned_checkpoints(folder: Path) -> list[Path]:
    """Pinned checkpoint markers and the newest one, oldest first (all complete ones when fewer than two
    are pinned)."""
    complete = list_checkpoints(folder)
    pinned = [p for p in complete if json.loads(p.read_text()).get("pinned")]
    if len(pinned) < 2:
        return complete
    return pinned + ([complete[-1]] if complete[-1] not in pinned else [])


def windows(episodes, keys, context: int, horizon: int, stride: int):
    """``(obs {key: [context + horizon, ...]}, action [context + horizon, A])`` cut from the episodes."""
    out = []
    for ep in episodes:
        length = ep["action"].shape[0]
        for start in range(0, length - context - horizon + 1, stride):
            sl = slice(start, start + context + horizon)
            out.append(({k: ep[k][sl] for k in keys}, ep["action"][sl]))
    return out


def plot(steps, edges, rel, unit, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    for b in range(rel.shape[1]):
        ax.plot(steps, rel[:, b], marker="o", label=f"{edges[b]:.3g}-{edges[b + 1]:.3g} {unit}")
    ax.set_xlabel("checkpoint (environment steps)")
    ax.set_ylabel("open-loop error power / real power")
    ax.set_yscale("log")
    ax.set_title("Prediction error by frequency band over training")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(title="band")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir")
    p.add_argument("--episodes", type=int, default=4)
    p.add_argument("--context", type=int, default=20)
    p.add_argument("--horizon", type=int, default=64)
    p.add_argument("--stride", type=int, default=100)
    p.add_argument("--dt", type=float, default=None, help="seconds per agent step (default: frequencies per step)")
    p.add_argument("--bands", type=int, default=3, help="equal-width bands from 0 to Nyquist")
    p.add_argument("--edges", default=None, help="explicit band edges instead, e.g. 0,1,2,4,8,25 (in the unit)")
    p.add_argument("--threshold", type=float, default=0.5)
    p.add_argument("--out", default=None)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    agent, cfg, make, meta = session.load_run(args.run_dir)
    folder = Path(args.run_dir) / "checkpoints"
    markers = pinned_checkpoints(folder)
    print(f"# {args.run_dir}: {agent.name}, {cfg.run.env}, newest step {meta['step']}, checkpoints "
          f"{[int(json.loads(m.read_text())['step']) for m in markers]}; {time.strftime('%Y-%m-%d %H:%M')}, "
          f"load {os.getloadavg()[0]:.1f}", flush=True)
    keys = sorted(k for k, s in agent.wm.obs_spec.items() if not s.is_image)
    if not keys:
        raise SystemExit("error: the run observes only images; this benchmark compares vector observations")

    torch.manual_seed(cfg.run.seed)
    episodes = []
    for i in range(args.episodes):
        _, (ep,) = run_episodes(agent, [functools.partial(make, cfg.run.seed + EVAL_SEEDS + i)], record=True)
        episodes.append(ep)
    cut = windows(episodes, keys, args.context, args.horizon, args.stride)
    if not cut:
        raise SystemExit(f"error: episodes of {episodes[0]['action'].shape[0]} steps are shorter than "
                         f"context + horizon = {args.context + args.horizon}")

    def flat(obs):
        return np.concatenate([np.asarray(obs[k], np.float64).reshape(obs[k].shape[0], -1) for k in keys], -1)

    real = np.stack([flat(o)[args.context:] for o, _ in cut])                       # [W, H, D]
    scale = real.reshape(-1, real.shape[-1]).std(0)
    scale = np.where(scale > 1e-8, scale, 1.0)
    preds = []
    for marker in markers:
        tensors, ck = load_checkpoint(marker, expected_agent=agent.name, device=agent.device)
        agent.load_tensors(tensors)
        pred = np.stack([flat(open_loop(agent.wm, o, a, args.context, agent.device))[args.context:]
                         for o, a in cut])
        preds.append((int(ck["step"]), pred / scale))
        mse = float((((pred - real) / scale) ** 2).mean())
        print(f"# step {ck['step']}: open-loop MSE (scaled units) {mse:.4f}", flush=True)
    dt = 1.0 if args.dt is None else args.dt
    unit = "Hz" if args.dt is not None else "cycles/step"
    edges = (np.array([float(e) for e in args.edges.split(",")]) if args.edges
             else default_band_edges(dt, args.bands))
    order = learning_order(preds, real / scale, dt=dt, band_edges=edges, threshold=args.threshold)
    result = {
        "run": args.run_dir, "env": cfg.run.env, "windows": len(cut), "context": args.context,
        "horizon": args.horizon, "dims": real.shape[-1], "unit": unit,
        "band_edges": np.round(edges, 4).tolist(), "steps": order.steps.tolist(),
        "relative_error": np.round(order.relative_error, 4).tolist(), "threshold": args.threshold,
        "first_below": list(order.first_below), "low_before_high": order.low_before_high,
        "error_vs_first_checkpoint": np.round(order.relative_error / order.relative_error[:1], 3).tolist(),
    }
    out = Path(args.out) if args.out else Path(args.run_dir) / "spectral_bias"
    out.mkdir(parents=True, exist_ok=True)
    plot(order.steps, edges, order.relative_error, unit, out / "spectral_bias.png")
    (out / "spectral_bias.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result), flush=True)
    print(f"# wrote {out / 'spectral_bias.png'} and {out / 'spectral_bias.json'}")


if __name__ == "__main__":
    main()
