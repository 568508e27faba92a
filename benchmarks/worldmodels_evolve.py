"""Controllers evolved on a trained World Models run's V and M: the paper's temperature table, its z-alone
ablation, and a real-environment score of any controller over many episodes.

Takes a ``worldmodels`` run folder whose V and M stages are done (any run past stage 4), loads its newest
checkpoint and its encoded data, and evolves fresh controllers with the agent's own CMA-ES
(:class:`~reverie.agents.worldmodels.Evolution`), every candidate scored by
:func:`~reverie.agents.worldmodels_rollouts.dream_returns` (``--in dream``, once per temperature in ``--taus``)
or :func:`~reverie.agents.worldmodels_rollouts.real_returns` (``--in real``). The controller reads [z, h] or z
alone (``--input``, default the run's). The search distribution's mean (the controller the agent acts with)
is then scored over ``--dream-episodes`` dreams (dream mode) and ``--real-episodes`` real episodes
(``--envs`` environments, each in its own process when more than one). ``--run-controller`` skips the
evolution and scores the run's own controller in the real environment.

Every row starts from the same seed, so rows differ only by their setting. Writes ``--out`` (JSON: per row
the generation curve, scores, seconds) and prints a Markdown table.

    # the temperature table (take-cover, controller evolved only in the dream)
    OMP_NUM_THREADS=1 python benchmarks/worldmodels_evolve.py RUN --in dream --taus 0.5 1.0 1.15 1.3 \\
        --generations 20 --population 16 --rollouts 4 --real-episodes 100
    # the z-alone ablation in the real environment, and the run's own [z, h] controller over 20 episodes
    OMP_NUM_THREADS=1 python benchmarks/worldmodels_evolve.py RUN --in real --input z --generations 10
    OMP_NUM_THREADS=1 python benchmarks/worldmodels_evolve.py RUN --run-controller --real-episodes 20
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

from reverie.agents.worldmodels import STAGES, Controller, Evolution, WorldModels, controller_input, generation_env_seeds
from reverie.agents.worldmodels_rollouts import dream_returns, real_returns
from reverie.training.session import load_run


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir")
    p.add_argument("--in", dest="where", choices=["dream", "real"], default="dream")
    p.add_argument("--input", choices=["zch", "zh", "z"], default=None,
                   help="controller input (default: the run's; zch needs a run whose controller reads [z, c, h])")
    p.add_argument("--run-controller", action="store_true", help="only score the run's own controller")
    p.add_argument("--taus", type=float, nargs="+", default=[0.5, 1.0, 1.15, 1.3], help="dream temperatures")
    p.add_argument("--generations", type=int, default=20)
    p.add_argument("--population", type=int, default=None, help="CMA-ES population (default: the run's)")
    p.add_argument("--rollouts", type=int, default=None, help="episodes per candidate (default: the run's)")
    p.add_argument("--dream-episodes", type=int, default=100)
    p.add_argument("--real-episodes", type=int, default=100)
    p.add_argument("--envs", type=int, default=1, help="real environments, each in its own process if > 1")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="JSON results (default RUN_DIR/evolve_<mode>.json)")
    args = p.parse_args(argv)

    agent, cfg, make, meta = load_run(args.run_dir)
    if not isinstance(agent, WorldModels):
        sys.exit(f"{args.run_dir} is not a worldmodels run")
    if agent.stage < STAGES.index("controller"):
        sys.exit(f"{args.run_dir} is in stage '{STAGES[agent.stage]}': V and M must be trained first")
    from safetensors.numpy import load_file
    starts = load_file(str(Path(args.run_dir) / "stages" / "encoded.safetensors"))["starts"]
    z = cfg.vae.z_size
    use = args.input or cfg.controller_input
    hidden = cfg.rnn.hidden
    controller = Controller(z + hidden * {"zch": 2, "zh": 1, "z": 0}[use], agent.act_spec, cfg.controller_bias,
                            cfg.action_bins, cfg.clip_dims)

    def select(f: torch.Tensor) -> torch.Tensor:
        return controller_input(f, use, z, hidden)
    population = args.population or cfg.population
    rollouts = args.rollouts or cfg.rollouts
    mode = "run-controller" if args.run_controller else f"{args.where}-{use}"
    out = Path(args.out) if args.out else Path(args.run_dir) / f"evolve_{mode}.json"
    env_fns = [functools.partial(make, 7_000_000 + args.seed * 1000 + i) for i in range(args.envs)]

    def real_score(params: torch.Tensor, ctrl, sel) -> tuple[np.ndarray, float]:
        t = time.perf_counter()
        real, _ = real_returns(agent.wm, ctrl, sel, params, args.real_episodes, env_fns, parallel=args.envs > 1)
        return real[0], time.perf_counter() - t

    rows = []

    def record(row: dict) -> None:
        rows.append(row)
        print(f"{row['setting']}: " + (f"dream {row['dream_mean']:.1f} +- {row['dream_std']:.1f}, "
                                       if "dream_mean" in row else "")
              + f"real {row['real_mean']:.1f} +- {row['real_std']:.1f} over {row['real_episodes']} episodes "
              f"(evolve {row.get('evolve_s', 0):.0f} s, real {row['real_s']:.0f} s)", flush=True)
        out.write_text(json.dumps({"run_dir": str(args.run_dir), "checkpoint_step": meta.get("step"),
                                   "rows": rows}, indent=1))

    if args.run_controller:
        real, secs = real_score(agent.params[None], agent.controller, agent.controller_input)
        record({"setting": f"the run's controller ({cfg.controller_input}, generation "
                           f"{agent.evolution.generation})", "real_mean": float(real.mean()),
                "real_std": float(real.std()), "real_episodes": len(real), "real_s": secs})
    for tau in (args.taus if args.where == "dream" else [None]) if not args.run_controller else []:
        es = Evolution(controller.size, population, cfg.sigma0, args.seed)
        curve, t0 = [], time.perf_counter()
        for g in range(args.generations):
            params = torch.as_tensor(es.ask(), dtype=torch.float32, device=agent.device)
            if tau is None:
                fns = [functools.partial(make, s)
                       for s in generation_env_seeds(args.seed, g, population, rollouts, args.envs)]
                fitness = real_returns(agent.wm, controller, select, params, rollouts, fns,
                                       parallel=args.envs > 1)[0].mean(1)
            else:
                fitness = dream_returns(agent.wm, controller, select, params, rollouts, starts, tau,
                                        cfg.dream_max_steps, seed=args.seed * 1_000_003 + g).mean(1)
            es.tell(fitness)
            curve.append({"generation": g + 1, "best": float(fitness.max()), "mean": float(fitness.mean()),
                          "sigma": es.sigma, "seconds": time.perf_counter() - t0})
            print(f"  {mode} tau {tau}: generation {g + 1}/{args.generations} best {fitness.max():.1f} "
                  f"mean {fitness.mean():.1f}", flush=True)
        t_evolve = time.perf_counter() - t0
        params = torch.as_tensor(es.mean, dtype=torch.float32, device=agent.device)[None]
        row = {"setting": f"{args.where}, input {use}" + (f", tau {tau}" if tau is not None else ""), "tau": tau,
               "input": use, "generations": args.generations, "population": population, "rollouts": rollouts,
               "curve": curve, "evolve_s": t_evolve}
        if tau is not None:
            dream = dream_returns(agent.wm, controller, select, params, args.dream_episodes, starts, tau,
                                  cfg.dream_max_steps, seed=10**6 + args.seed)[0]
            row.update(dream_mean=float(dream.mean()), dream_std=float(dream.std()))
        real, secs = real_score(params, controller, select)
        row.update(real_mean=float(real.mean()), real_std=float(real.std()), real_episodes=len(real), real_s=secs)
        record(row)
    print("\n| setting | dream score | real score | generations x population x rollouts | evolve s | real s |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        dream = f"{r['dream_mean']:.0f} +- {r['dream_std']:.0f}" if "dream_mean" in r else "-"
        shape = f"{r['generations']} x {r['population']} x {r['rollouts']}" if "generations" in r else "-"
        print(f"| {r['setting']} | {dream} | {r['real_mean']:.1f} +- {r['real_std']:.1f} ({r['real_episodes']} "
              f"episodes) | {shape} | {r.get('evolve_s', 0):.0f} | {r['real_s']:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
