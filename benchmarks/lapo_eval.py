"""How much a `reverie train lapo` run's latent codes are actions, on the windows it never trained on.

    python benchmarks/lapo_eval.py RUN [RUN ...] [--windows 5000] [--json FILE]

For each run: the windows of its replay (``reverie.agents.latent_action.windows_of``), split as the agent split
them (the newest ``holdout`` never trained on), scored by
:func:`reverie.analysis.latent_actions.held_out_report`: normalised / adjusted mutual information of the IDM's
codes and the true actions, the accuracy of the majority mapping code -> action (fitted on training windows)
beside chance, a linear probe on the IDM's continuous latent, the forward model's frame error with its code
and without a latent (the baseline), the spread of the frames imagined under different codes, and the same
agreement for the code whose imagined frame is nearest the real one. Several runs (seeds) get a mean row.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

import reverie
from reverie.agents.latent_action import LatentAction, windows_of
from reverie.analysis.latent_actions import held_out_report
from reverie.replay import Replay

COLUMNS = ("nmi", "ami", "accuracy", "chance", "probe", "effect_accuracy", "error", "error_baseline", "spread",
           "used_codes", "windows")


def evaluate(run_dir: str, limit: int) -> dict[str, float]:
    """The held-out figures of the lapo run in ``run_dir`` (see the module docstring)."""
    run = reverie.load(run_dir)
    agent = run.agent
    if not isinstance(agent, LatentAction):
        raise SystemExit(f"error: {run_dir} is a run of agent '{agent.name}', not of lapo")
    cfg = run.config.run
    replay = Replay(Path(run_dir) / "replay", capacity=cfg.replay_capacity, seq_len=1, chunk_size=cfg.replay_chunk)
    model = agent.lam
    data = windows_of(replay.chunks(overlap=True), model.key, model.cfg.context, agent.act_spec.discrete)
    report = held_out_report(model, data.frames, data.rows, data.actions if agent.act_spec.discrete else None,
                             agent.split(len(data)), limit)
    return report.metrics("")


def table(results: dict[str, dict[str, float]]) -> str:
    lines = ["| run | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    rows = dict(results)
    if len(results) > 1:
        rows["mean"] = {c: float(np.mean([r[c] for r in results.values() if c in r])) for c in COLUMNS
                        if any(c in r for r in results.values())}
    for name, r in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{r[c]:.3f}" if c in r else "-" for c in COLUMNS) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="lapo run folders")
    p.add_argument("--windows", type=int, default=5000, help="held-out windows scored per run (and windows fitting "
                                                              "the mapping)")
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args(argv)
    if args.windows < 1:
        p.error("--windows must be at least 1")
    torch.set_num_threads(1)
    results = {Path(r).name: evaluate(r, args.windows) for r in args.runs}
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
