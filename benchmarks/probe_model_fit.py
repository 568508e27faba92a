"""How well does a freshly built RSSM world model fit a run's stored replay under given settings?

    python benchmarks/probe_model_fit.py RUN_DIR [--updates 1500] [--edge 0:2.3] [key=value ...]

Builds a new agent from the run's config with the overrides applied (e.g.
``model.lr=1e-3``, ``model.cont_scale=20``), trains only its world model for
``--updates`` batches sampled from the run's replay, then filters the whole
replay with the posterior and prints:

- the reconstruction RMSE of every vector dimension (in observation units);
- the continuation probability the model predicts at terminal steps and at all
  other steps. With ``--edge DIM:THRESH`` the terminal steps are split into
  those with ``|obs[DIM]| > THRESH`` and the rest: for CartPole-v1,
  ``--edge 0:2.3`` separates the cart leaving the track from the pole falling.

This compares model settings on fixed data in a minute or two, without the
cost of a training run. The run's replay is only read.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

# the sibling script in benchmarks/ (Python puts a script's own folder on sys.path)
from probe_terminations import replay_posterior

from reverie.agents.dreamer import rssm_update
from reverie.models import Batch, RSSMWorldModel
from reverie.config import apply_overrides
from reverie.replay import Replay
from reverie.training.session import build_agent, load_run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir")
    p.add_argument("--updates", type=int, default=1500)
    p.add_argument("--edge", default=None, help="DIM:THRESH, e.g. 0:2.3 for CartPole's cart position")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("overrides", nargs="*", metavar="key=value")
    args = p.parse_intermixed_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    trained, cfg, make, _ = load_run(args.run_dir)
    if not isinstance(getattr(trained, "wm", None), RSSMWorldModel):
        raise SystemExit("this probe needs a run of an agent with an RSSM world model (dreamer or planet)")
    cfg = apply_overrides(cfg, args.overrides)
    agent = build_agent(trained.name, cfg, make)
    if "vector" not in agent.obs_spec:
        raise SystemExit("this probe reports on vector observations; the run has none")
    wm = agent.wm
    opt = torch.optim.Adam(wm.parameters(), lr=cfg.model.lr, eps=cfg.model.eps)   # as Dreamer and PlaNet build it

    replay = Replay(f"{args.run_dir}/replay", capacity=cfg.run.replay_capacity, seq_len=cfg.run.seq_len,
                    seed=args.seed)
    start = time.perf_counter()
    for _ in range(args.updates):
        batch = Batch.build(replay.sample(cfg.run.batch_size), wm.obs_spec, wm.act_spec, agent.device)
        rssm_update(wm, batch, opt, cfg.model, cfg.run.precision)
    seconds = time.perf_counter() - start

    data, post = replay_posterior(wm, replay)
    with torch.no_grad():
        cont = wm.cont(post)[0].numpy()
        rec = wm.decode(post)["vector"][0].numpy()
    np.set_printoptions(precision=3, suppress=True)
    term = data["is_terminal"].astype(bool)
    print(f"overrides {args.overrides or 'none'}: {args.updates} world-model updates in {seconds:.0f} s")
    print(f"reconstruction RMSE per dimension: {np.sqrt(((rec - data['vector']) ** 2).mean(0))}")
    print(f"continuation at non-terminal steps: mean {cont[~term].mean():.4f}, min {cont[~term].min():.3f}")
    groups = {"terminal": term}
    if args.edge:
        dim, thresh = args.edge.split(":")
        edge = term & (np.abs(data["vector"][:, int(dim)]) > float(thresh))
        groups = {f"terminal with |x[{dim}]| > {thresh}": edge, "other terminal": term & ~edge}
    for name, mask in groups.items():
        if mask.any():
            print(f"continuation at {name} steps ({mask.sum()}): mean {cont[mask].mean():.3f}, "
                  f"max {cont[mask].max():.3f}")


if __name__ == "__main__":
    main()
