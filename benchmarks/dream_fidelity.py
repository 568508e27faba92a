"""Dream fidelity of a trained run: does its model rank policies as the real environment does?

Loads a run folder whose agent's model declares ``reward`` and ``cont`` (World Models past its M stage,
Dreamer, PlaNet, ...), plays the fixed policies (:func:`reverie.envs.policy_play.fixed_policies`: each
constant action, uniform random, random held 1-10 steps) and the agent's own policy where it offers one
for the dream (a ``worldmodels`` controller past its first generation, Dreamer's actor), for ``--episodes`` episodes in the real environment and as many dreams
started from those episodes' first frames; then reports, per policy, the mean length and return on both
sides, and across policies their Spearman rank correlation and the regret of choosing the dream's best
(:func:`reverie.analysis.fidelity.dream_fidelity`).

    OMP_NUM_THREADS=1 python benchmarks/dream_fidelity.py RUN --episodes 20 [--tau 1.15] [--max-steps 2100]

Prints a Markdown table; writes ``--out`` (default RUN/dream_fidelity.json).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from reverie.analysis.fidelity import dream_fidelity
from reverie.analysis.report.fidelity import players_for
from reverie.envs.policy_play import play_both
from reverie.models.base import CONT, REWARD, WorldModel, require
from reverie.training.session import load_run


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir")
    p.add_argument("--episodes", type=int, default=20, help="episodes per policy on each side")
    p.add_argument("--max-steps", type=int, default=None, help="longest episode (default: the run's dream or "
                                                                  "time limit, else 1000)")
    p.add_argument("--tau", type=float, default=None, help="dream temperature (World Models; default: its own)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)

    agent, cfg, make, meta = load_run(args.run_dir)
    model = agent.model
    require(model, [REWARD, CONT], "dream fidelity")
    max_steps = args.max_steps or getattr(cfg, "dream_max_steps", None) or cfg.run.time_limit or 1000
    players = players_for(agent)

    def prepare(m: WorldModel) -> None:
        if args.tau is not None:
            setattr(m, "temperature", args.tau)

    env = make(7_000_000 + args.seed)
    try:
        played = play_both(model, env, players, args.episodes, args.seed, max_steps, device=agent.device,
                           prepare=prepare, say=lambda s: print(s, flush=True))
    finally:
        env.close()
    fid = dream_fidelity([pl.name for pl in players], played.dream, played.real)
    print(f"\n| policy | dream length | real length | dream / real | dream return | real return |")
    print("|---|---|---|---|---|---|")
    for r in fid.rows():
        print(f"| {r['policy']} | {r['dream_length']:.1f} | {r['real_length']:.1f} | {r['length_ratio']:.2f} | "
              f"{r['dream_return']:.1f} | {r['real_return']:.1f} |")
    print(f"\nrank correlation of return {fid.return_rank_correlation:.2f}, of length "
          f"{fid.length_rank_correlation:.2f}; the dream picks '{fid.dream_choice}', reality '{fid.real_choice}': "
          f"regret {fid.regret:.1f}")
    out = Path(args.out) if args.out else Path(args.run_dir) / "dream_fidelity.json"
    out.write_text(json.dumps({"run_dir": str(args.run_dir), "checkpoint_step": meta.get("step"),
                               "episodes": args.episodes, "max_steps": played.cap, "tau": args.tau,
                               "rows": fid.rows(), "seconds": played.seconds,
                               "return_rank_correlation": fid.return_rank_correlation,
                               "length_rank_correlation": fid.length_rank_correlation, "regret": fid.regret,
                               "dream_choice": fid.dream_choice, "real_choice": fid.real_choice}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
