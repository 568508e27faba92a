"""Merging TD-MPC2 world models fine-tuned on Pendulum variants (docs/notes/merging.md).

A base is trained on Pendulum-v1 (g = 10); four fine-tunes start from its weights (``--init-from``) on
Pendulum with other gravities; the fine-tunes are merged by averaging, task arithmetic and TIES, and
``merge.json`` gives each task's held-out prediction loss for the base, the fine-tune and the merge.

    PYTHONPATH=src python benchmarks/merge_pendulum.py runs/merge-pendulum [--base-steps 1500] [--ft-steps 800] \
        [--preset tiny] [--set KEY=VALUE ...] [--ft-prefill N]

The variants are gymnasium ids registered by this module (``gym:merge_pendulum:PendulumG5-v1`` imports it
first), as reverie's gym adapter passes no keyword arguments to ``gymnasium.make``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np

GRAVITIES = (2.0, 5.0, 15.0, 20.0)


def variant_id(g: float) -> str:
    return f"PendulumG{g:g}-v1"


for _g in GRAVITIES:
    if variant_id(_g) not in gym.registry:
        gym.register(variant_id(_g), entry_point="gymnasium.envs.classic_control.pendulum:PendulumEnv",
                     max_episode_steps=200, kwargs={"g": _g})


def main() -> None:
    import reverie

    parser = argparse.ArgumentParser()
    parser.add_argument("root")
    parser.add_argument("--base-steps", type=int, default=1500)
    parser.add_argument("--ft-steps", type=int, default=800)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for every run")
    parser.add_argument("--ft-prefill", type=int, help="run.prefill of the fine-tunes (default: the preset's)")
    args = parser.parse_args()
    root = Path(args.root)
    common = dict(preset=args.preset, say=None)
    overrides = ["acting=policy", *args.set]
    ft_overrides = overrides + ([f"run.prefill={args.ft_prefill}"] if args.ft_prefill is not None else [])
    base = root / "base"
    reverie.train("tdmpc2", env="gym:Pendulum-v1", steps=args.base_steps, seed=args.seed, run_dir=base,
                  overrides=overrides, **common)
    tuned = []
    for i, g in enumerate(GRAVITIES):
        run_dir = root / f"g{g:g}"
        reverie.train("tdmpc2", env=f"gym:merge_pendulum:{variant_id(g)}", steps=args.ft_steps,
                      seed=args.seed + 1 + i, run_dir=run_dir, init_from=base, overrides=ft_overrides, **common)
        tuned.append(run_dir)
    rows = {}
    for method in ("average", "task-arithmetic", "ties"):
        out = root / f"merged-{method}"
        record = (json.loads((out / "merge.json").read_text()) if out.exists() else
                  reverie.merge(tuned, method=method, base=base, out=out))
        rows[method] = record
    first = rows["average"]["losses"]
    print("| task | base loss | fine-tuned loss | " + " | ".join(f"{m} loss (reduction)" for m in rows) + " |")
    print("|---|---|---|" + "---|" * len(rows))
    for j, g in enumerate(GRAVITIES):
        cells = [f"{r['losses']['merged'][j]:.3g} ({r['normalised_error_reduction'][j]:+.2f})" for r in rows.values()]
        print(f"| g={g:g} | {first['base'][j]:.3g} | {first['finetuned'][j]:.3g} | " + " | ".join(cells) + " |")
    means = [f"{np.mean(r['normalised_error_reduction']):+.2f}" for r in rows.values()]
    print("| mean reduction | | | " + " | ".join(means) + " |")
    print("coefficients: " + ", ".join(f"{m} {r['coef']}" for m, r in rows.items()))
    print("fine-tune i (row) on task j (column):")
    for g, row in zip(GRAVITIES, first["finetuned_on_every_task"]):
        print(f"| g={g:g} | " + " | ".join(f"{x:.3g}" for x in row) + " |")
    for m, r in rows.items():
        if r["coef"] is not None:
            print(f"{m} grid: " + ", ".join(f"{t['coef']:g}: {t['score']:.3g}" for t in r["selection"]["tried"]))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
