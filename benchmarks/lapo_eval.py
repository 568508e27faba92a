"""How much a `reverie train lapo` run's latent codes are actions, on the windows it never trained on.

    python benchmarks/lapo_eval.py RUN [RUN ...] [--windows 5000] [--labelled 0.025] [--horizon 10]
                                   [--rollouts 500] [--json FILE]

For each run: the windows of its replay (``reverie.agents.latent_action.windows_of``), split as the agent split
them (the newest ``holdout`` never trained on), scored by
:func:`reverie.analysis.latent_actions.held_out_report`: normalised / adjusted mutual information of the IDM's
codes and the true actions, the accuracy of the majority mapping code -> action (fitted on training windows)
beside chance, a linear probe on the IDM's continuous latent, the forward model's frame error with its code
and without a latent (the baseline), the spread of the frames imagined under different codes, and the same
agreement for the code whose imagined frame is nearest the real one; the few-label decoder (a logistic
regression from the IDM's continuous latent to the action, fitted on ``--labelled`` of the training windows'
labels) and the majority mapping fitted on the same labels, beside the no-op rate. Several runs (seeds) get a
mean row. A second table: Genie's Delta_t PSNR (:mod:`reverie.analysis.controllability`) for t = 1 ..
``--horizon`` on up to ``--rollouts`` held-out rollouts, with its bootstrap 95 % interval.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

import reverie
from reverie.agents.latent_action import LatentAction, windows_of
from reverie.analysis.controllability import controllability_report
from reverie.analysis.latent_actions import held_out_report
from reverie.replay import Replay
from reverie.training.offline import learned_replay

COLUMNS = ("nmi", "ami", "accuracy", "chance", "probe", "effect_accuracy", "error", "error_baseline", "spread",
           "used_codes", "windows")
DECODER_COLUMNS = ("labels", "decoder", "decoder_map", "accuracy", "probe", "chance", "noop")


def evaluate(run_dir: str, limit: int, labelled: float = 0.025, horizon: int = 10, rollouts: int = 500,
             noop: int | None = 0) -> dict[str, float]:
    """The held-out figures of the lapo run in ``run_dir`` (see the module docstring)."""
    run = reverie.load(run_dir)
    agent = run.agent
    if not isinstance(agent, LatentAction):
        raise SystemExit(f"error: {run_dir} is a run of agent '{agent.name}', not of lapo")
    cfg = run.config.run
    replay = Replay(learned_replay(run_dir), capacity=cfg.replay_capacity, seq_len=1, chunk_size=cfg.replay_chunk)
    model = agent.lam
    data = windows_of(replay.chunks(overlap=True), model.key, model.cfg.context, agent.act_spec.discrete)
    train = agent.split(len(data))
    report = held_out_report(model, data.frames, data.rows, data.actions if agent.act_spec.discrete else None,
                             train, limit, labelled=labelled, seed=run.config.run.seed, noop_action=noop)
    control = controllability_report(model, data.frames, data.rows, train, horizon, rollouts, run.config.run.seed)
    return {**report.metrics(""), **control.metrics("control/")}


def horizon_table(results: dict[str, dict[str, float]]) -> str:
    """Delta_t PSNR per run and horizon: the mean [95 % interval] and both PSNRs."""
    lines = ["| run | t | PSNR inferred | PSNR random | Delta PSNR [95 % CI] | rollouts |", "|---" * 6 + "|"]
    for name, r in results.items():
        t = 1
        while f"control/dpsnr/{t}" in r:
            d = f"{r[f'control/dpsnr/{t}']:.2f} [{r[f'control/dpsnr/{t}/low']:.2f}, {r[f'control/dpsnr/{t}/high']:.2f}]"
            lines.append(f"| {name} | {t} | {r[f'control/psnr_inferred/{t}']:.2f} | "
                         f"{r[f'control/psnr_random/{t}']:.2f} | {d} | {r['control/windows']:.0f} |")
            t += 1
    return "\n".join(lines)


def table(results: dict[str, dict[str, float]], columns: tuple[str, ...] = COLUMNS) -> str:
    lines = ["| run | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    rows = dict(results)
    if len(results) > 1:
        rows["mean"] = {c: float(np.mean([r[c] for r in results.values() if c in r])) for c in columns
                        if any(c in r for r in results.values())}
    for name, r in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{r[c]:.3f}" if c in r else "-" for c in columns) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="lapo run folders")
    p.add_argument("--windows", type=int, default=5000, help="held-out windows scored per run (and windows fitting "
                                                              "the mapping)")
    p.add_argument("--labelled", type=float, default=0.025, help="fraction of the training windows whose labels "
                                                                   "the few-label decoder is fitted on")
    p.add_argument("--noop", type=int, default=0, help="index of the no-op action, for the no-op rate (MinAtar's "
                                                       "minimal action sets start with it); -1: none")
    p.add_argument("--horizon", type=int, default=10, help="steps of the Delta PSNR rollouts")
    p.add_argument("--rollouts", type=int, default=500, help="held-out rollouts for Delta PSNR (at most)")
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args(argv)
    if args.windows < 1 or args.horizon < 1 or args.rollouts < 2:
        p.error("--windows and --horizon must be at least 1, --rollouts at least 2")
    if not 0 < args.labelled <= 1:
        p.error("--labelled must be in (0, 1]")
    torch.set_num_threads(1)
    results = {Path(r).name: evaluate(r, args.windows, args.labelled, args.horizon, args.rollouts,
                                      None if args.noop < 0 else args.noop) for r in args.runs}
    print(table(results))
    print()
    print(table(results, DECODER_COLUMNS))
    print()
    print(horizon_table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
