"""LAPO's online stage on a lapo run: the policy cloned in latent actions and decoded from 2.5 % labels, fine-tuned
with PPO, against the same network and PPO from scratch, at the same environment-step budgets, for several seeds.

    OMP_NUM_THREADS=1 python benchmarks/lapo_finetune.py runs/lapo-expert-s0 --root runs/lapo-ft --seeds 0 1 2 \\
        --json lapo_finetune.json [key=value ...]

Each (arm, seed) is one ``reverie lapo-policy`` run into ``ROOT/ARM-sSEED`` (run one at a time; a folder that
already holds ``result.json`` is read, not rerun, so the command resumes after an interruption). ``key=value``
settings go to both arms alike (``reverie lapo-policy``'s, e.g. ``budgets=(0,10000,50000)``).

Printed: per budget, each arm's mean return over the evaluation episodes for every seed and the mean over seeds,
greedy and sampled. ``--json`` writes flat figures: ``{arm}/{budget}/return_greedy`` and ``.../return_sampled``
(means over seeds; ``.../seeds``: the per-seed values), ``{arm}/{budget}/env_steps`` (mean steps at which it was
evaluated), ``pretrain/{name}`` (the cloning scores, mean over seeds), ``expert/return_mean`` and
``expert/episodes`` (the recorded videos' player, where the lapo run was trained on a ``reverie record`` folder),
``ahead/{mode}`` (1.0 where the pre-trained arm's seed mean is above scratch's at every budget).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from reverie.config import apply_overrides
from reverie.training.lapo_policy import LapoPolicyConfig, run_lapo_policy

ARMS = ("lapo", "scratch")
MODES = ("greedy", "sampled")


def run_arms(lapo_run: str, root: Path, seeds: list[int], overrides: list[str]) -> dict[str, dict]:
    """Every (arm, seed)'s result, trained where its folder holds none yet."""
    results = {}
    for seed in seeds:
        for arm in ARMS:
            folder = root / f"{arm}-s{seed}"
            if not (folder / "result.json").exists():
                print(f"{arm} seed {seed}: {folder}", file=sys.stderr)
                cfg = apply_overrides(LapoPolicyConfig(seed=seed), overrides)
                run_lapo_policy(lapo_run, folder, cfg, scratch=arm == "scratch",
                                say=lambda line: print(line, file=sys.stderr))
            results[f"{arm}-s{seed}"] = json.loads((folder / "result.json").read_text())
    return results


def figures(lapo_run: str, results: dict[str, dict], seeds: list[int]) -> dict[str, float | list[float]]:
    out: dict[str, float | list[float]] = {}
    budgets = results[f"lapo-s{seeds[0]}"]["config"]["budgets"]
    for arm in ARMS:
        for i, budget in enumerate(budgets):
            evals = [results[f"{arm}-s{s}"]["evals"][i] for s in seeds]
            out[f"{arm}/{budget}/env_steps"] = float(np.mean([e["env_steps"] for e in evals]))
            for mode in MODES:
                values = [e[f"return_{mode}"] for e in evals]
                out[f"{arm}/{budget}/return_{mode}"] = float(np.mean(values))
                out[f"{arm}/{budget}/return_{mode}/seeds"] = values
    for name in results[f"lapo-s{seeds[0]}"]["pretrain"]:
        out[f"pretrain/{name}"] = float(np.mean([results[f"lapo-s{s}"]["pretrain"][name] for s in seeds]))
    for mode in MODES:
        out[f"ahead/{mode}"] = float(all(out[f"lapo/{b}/return_{mode}"] > out[f"scratch/{b}/return_{mode}"]
                                         for b in budgets))
    record = Path(lapo_run) / "dataset.json"
    if record.exists():
        data = json.loads(record.read_text())
        source = Path(data.get("source", ""))
        recorded = json.loads((source / "dataset.json").read_text()) if (source / "dataset.json").exists() else data
        if recorded.get("return_mean") is not None:
            out["expert/return_mean"] = float(recorded["return_mean"])
            out["expert/episodes"] = float(recorded["episodes"])
    return out


def table(out: dict, budgets: list[int], seeds: list[int]) -> str:
    lines = ["| env steps | arm | " + " | ".join(f"greedy s{s}" for s in seeds) + " | greedy mean | "
             + " | ".join(f"sampled s{s}" for s in seeds) + " | sampled mean |",
             "|---" * (4 + 2 * len(seeds)) + "|"]
    for budget in budgets:
        for arm in ARMS:
            cells = [f"{v:.2f}" for v in out[f"{arm}/{budget}/return_greedy/seeds"]]
            cells.append(f"**{out[f'{arm}/{budget}/return_greedy']:.2f}**")
            cells += [f"{v:.2f}" for v in out[f"{arm}/{budget}/return_sampled/seeds"]]
            cells.append(f"**{out[f'{arm}/{budget}/return_sampled']:.2f}**")
            lines.append(f"| {budget} | {arm} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("lapo_run", help="a trained lapo run folder")
    p.add_argument("--root", type=Path, required=True, help="folder of the arms' run folders")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--json", type=Path, help="also write the figures here")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    args = p.parse_intermixed_args(argv)
    torch.set_num_threads(1)
    results = run_arms(args.lapo_run, args.root, args.seeds, args.overrides)
    out = figures(args.lapo_run, results, args.seeds)
    budgets = results[f"lapo-s{args.seeds[0]}"]["config"]["budgets"]
    print(table(out, budgets, args.seeds))
    print({k: v for k, v in out.items() if k.startswith(("pretrain/", "expert/", "ahead/"))})
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
