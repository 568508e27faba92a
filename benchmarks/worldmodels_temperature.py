"""The World Models paper's temperature table, measured: controllers evolved only in the dream at several tau,
each scored in the dream and in the real environment.

Takes a trained ``worldmodels`` run folder whose V and M stages are done (any run past stage 4, e.g. the
``takecover`` preset), loads its newest checkpoint and its encoded data, and for every temperature tau:

1. evolves a fresh controller with CMA-ES (the agent's own :class:`~reverie.agents.worldmodels.Evolution`,
   the run's population, rollouts, sigma0 and controller input) for ``--generations`` generations, every
   candidate scored by :func:`~reverie.agents.worldmodels_rollouts.dream_returns` at that tau;
2. scores the search distribution's mean (the controller the agent acts with) over ``--dream-episodes``
   dreams at that tau and over ``--real-episodes`` episodes of the real environment
   (:func:`~reverie.agents.worldmodels_rollouts.real_returns`, ``--envs`` environments in subprocesses).

Every tau starts from the same seed, so the rows differ only by the temperature. Writes ``--out``
(JSON: per tau the generation curve, dream and real scores, seconds) and prints a Markdown table.

    OMP_NUM_THREADS=1 python benchmarks/worldmodels_temperature.py /work/runs/wm-takecover \\
        --taus 0.5 1.0 1.15 1.3 --generations 30 --real-episodes 100
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from reverie.agents.worldmodels import STAGES, Evolution, WorldModels
from reverie.agents.worldmodels_rollouts import dream_returns, real_returns
from reverie.training.session import load_run


def evolve(agent: WorldModels, starts: np.ndarray, tau: float, generations: int, population: int, rollouts: int,
           seed: int, say=print) -> tuple[np.ndarray, list[dict]]:
    cfg = agent.cfg
    es = Evolution(agent.controller.size, population, cfg.sigma0, seed)
    curve = []
    for g in range(generations):
        params = torch.as_tensor(es.ask(), dtype=torch.float32, device=agent.device)
        fitness = dream_returns(agent.wm, agent.controller, agent.controller_input, params, rollouts, starts,
                                tau, cfg.dream_max_steps, seed=seed * 1_000_003 + g).mean(1)
        es.tell(fitness)
        curve.append({"generation": g + 1, "best": float(fitness.max()), "mean": float(fitness.mean()),
                      "sigma": es.sigma})
        say(f"  tau {tau}: generation {g + 1}/{generations} best {fitness.max():.1f} mean {fitness.mean():.1f}")
    return es.mean, curve


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir")
    p.add_argument("--taus", type=float, nargs="+", default=[0.5, 1.0, 1.15, 1.3])
    p.add_argument("--generations", type=int, default=30)
    p.add_argument("--population", type=int, default=None, help="CMA-ES population (default: the run's)")
    p.add_argument("--rollouts", type=int, default=None, help="dreams per candidate (default: the run's)")
    p.add_argument("--dream-episodes", type=int, default=100)
    p.add_argument("--real-episodes", type=int, default=100)
    p.add_argument("--envs", type=int, default=2, help="real environments, each in its own process")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="JSON results (default RUN_DIR/temperature_table.json)")
    args = p.parse_args(argv)

    agent, cfg, make, meta = load_run(args.run_dir)
    if not isinstance(agent, WorldModels):
        sys.exit(f"{args.run_dir} is not a worldmodels run")
    if agent.stage < STAGES.index("controller"):
        sys.exit(f"{args.run_dir} is in stage '{STAGES[agent.stage]}': V and M must be trained first")
    from safetensors.numpy import load_file
    starts = load_file(str(Path(args.run_dir) / "stages" / "encoded.safetensors"))["starts"]
    out = Path(args.out) if args.out else Path(args.run_dir) / "temperature_table.json"
    population = args.population or cfg.population
    rollouts = args.rollouts or cfg.rollouts
    rows = []
    for tau in args.taus:
        t0 = time.perf_counter()
        mean, curve = evolve(agent, starts, tau, args.generations, population, rollouts, args.seed)
        t_evolve = time.perf_counter() - t0
        params = torch.as_tensor(mean, dtype=torch.float32, device=agent.device)[None]
        dream = dream_returns(agent.wm, agent.controller, agent.controller_input, params, args.dream_episodes,
                              starts, tau, cfg.dream_max_steps, seed=10**6 + args.seed)[0]
        t1 = time.perf_counter()
        env_fns = [functools.partial(make, 7_000_000 + args.seed * 1000 + i) for i in range(args.envs)]
        real, steps = real_returns(agent.wm, agent.controller, agent.controller_input, params,
                                   args.real_episodes, env_fns, parallel=args.envs > 1)
        real = real[0]
        row = {"tau": tau, "generations": args.generations, "population": population,
               "rollouts": rollouts, "curve": curve,
               "dream_mean": float(dream.mean()), "dream_std": float(dream.std()),
               "real_mean": float(real.mean()), "real_std": float(real.std()), "real_episodes": len(real),
               "evolve_s": t_evolve, "real_s": time.perf_counter() - t1, "real_steps": int(steps)}
        rows.append(row)
        print(f"tau {tau}: dream {row['dream_mean']:.1f} +- {row['dream_std']:.1f}, real {row['real_mean']:.1f} "
              f"+- {row['real_std']:.1f} over {len(real)} episodes (evolve {t_evolve:.0f} s, real {row['real_s']:.0f} s)",
              flush=True)
        out.write_text(json.dumps({"run_dir": str(args.run_dir), "checkpoint_step": meta.get("step"),
                                   "rows": rows}, indent=1))
    print("\n| tau | dream score | real score | generations x population x rollouts | evolve s | real s |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['tau']} | {r['dream_mean']:.0f} +- {r['dream_std']:.0f} | {r['real_mean']:.0f} +- "
              f"{r['real_std']:.0f} ({r['real_episodes']} episodes) | {r['generations']} x {r['population']} x "
              f"{r['rollouts']} | {r['evolve_s']:.0f} | {r['real_s']:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
