"""The memory suite against the cue's delay k, for each sequence dynamics: does the world model remember?

For every k (``gym:reverie/MemoryCue-k{k}-v0``: a cue at step 0, k random distractors, a query; the action
answering the query earns 1 if it names the cue) and every ``model.dynamics`` (gru, ssm, transformer; ``ssm-r2i``
and ``gru-r2i`` with R2I's design, ``model.rssm.r2i=true``):

1. collect ``--episodes`` episodes of the real environment with uniformly random actions (the same episodes
   for every dynamics), each stored as one sequence of its k + 3 steps;
2. train the Dreamer world model alone (``reverie.agents.dreamer.rssm_update``: reconstruction, reward,
   continuation and KL, as in a Dreamer run) for ``--updates`` updates of ``--batch`` whole episodes, so the
   query and its cue are always in the same training sequence;
3. score it on ``--eval-episodes`` fresh real episodes: the model observes the episode up to the query, then
   the one-step planner answers with the action whose imagined next reward is largest. Since only that answer
   is rewarded, the planner's return in the real environment is the fraction of cues it names (chance is
   1/4); a model without memory of the cue scores at chance however well it predicts everything else.

Same preset and sizes for every dynamics (``--preset``, default ``default``), parameter counts printed; the
transformer's context is ``--context`` (default: each episode's length rounded up to 16, so nothing is
dropped).
Writes ``--out`` (JSON) and prints a Markdown table of return against k.

    OMP_NUM_THREADS=1 python benchmarks/memory_suite.py --ks 10 50 --updates 20000 --eval-every 2500 \
        --eval-episodes 500 --override model.reward_scale=100 --out memory_suite.json

With the default loss weights the one rewarded step of an episode is drowned by reconstruction and KL, and
nothing is learned even at k = 0; at ``model.reward_scale=100`` the GRU and the SSM name the cue at k = 10
after about 10,000 updates, abruptly, and the transformer about half the cues by 20,000
(docs/notes/sequence-models.md).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import gymnasium as gym
import numpy as np
import torch

import reverie.envs.memory  # noqa: F401  (registers the suite's ids)
from reverie.agents.dreamer import Dreamer
from reverie.agents.rssm_update import rssm_update
from reverie.agents.registry import resolve_config
from reverie.envs.make import make_env
from reverie.models import Batch

DYNAMICS = ("gru", "ssm", "transformer", "ssm-r2i", "gru-r2i")
"""The variants: a ``model.dynamics`` name, or one with ``-r2i`` for R2I's design (``model.rssm.r2i=true``: the
posterior from the embedding alone; the SSM's scan with memory linear in T)."""


def variant_overrides(variant: str) -> list[str]:
    """The config overrides of a variant of :data:`DYNAMICS`."""
    dynamics, _, r2i = variant.partition("-")
    return [f"model.dynamics={dynamics}", *(["model.rssm.r2i=true"] if r2i else [])]


def episodes(k: int, n: int, seed: int) -> dict[str, np.ndarray]:
    """``n`` random-action episodes of MemoryCue-k as arrays ``[n, k + 3, ...]`` in the replay's layout, and
    ``cue [n]``."""
    env = gym.make("reverie/MemoryCue-v0", delay=k)
    rng = np.random.default_rng(seed)
    T = k + 3
    obs = np.zeros((n, T, env.observation_space.shape[0]), np.float32)
    action = np.zeros((n, T, env.action_space.n), np.float32)
    reward = np.zeros((n, T), np.float32)
    flags = {key: np.zeros((n, T), bool) for key in ("is_first", "is_last", "is_terminal")}
    cue = np.zeros(n, np.int64)
    for i in range(n):
        o, info = env.reset(seed=int(rng.integers(2**31)))
        cue[i] = info["cue"]
        obs[i, 0] = o
        flags["is_first"][i, 0] = True
        for t in range(1, T):
            a = int(rng.integers(env.action_space.n))
            o, r, term, trunc, _ = env.step(a)
            obs[i, t], reward[i, t] = o, r
            action[i, t, a] = 1.0
            if term or trunc:
                assert t == T - 1, "an episode of MemoryCue-k has k + 3 steps"
                flags["is_last"][i, t] = True
                flags["is_terminal"][i, t] = term
    return {"obs": obs, "action": action, "reward": reward, **flags, "cue": cue}


def build(k: int, dynamics: str, args) -> Dreamer:
    cfg = resolve_config("dreamer", args.preset, [
        "run.env=gym:reverie/MemoryCue-v0", *variant_overrides(dynamics), f"run.batch_size={args.batch}",
        f"run.seq_len={k + 3}", f"run.seed={args.seed}", f"model.transformer.context={args.context or 16 * -(-(k + 3) // 16)}",
        *args.override])
    env = make_env(cfg.run.env, seed=args.seed)
    obs_spec, act_spec = env.obs_spec, env.act_spec
    env.close()
    torch.manual_seed(args.seed)
    return Dreamer(obs_spec, act_spec, cfg)


@torch.no_grad()
def planner_return(agent: Dreamer, data: dict[str, np.ndarray], k: int) -> float:
    """Fraction of episodes whose cue the one-step reward planner names at the query (see the docstring)."""
    wm, key = agent.wm, next(iter(agent.obs_spec))
    q = k + 2        # observations 0..k+1 (the query is the last), then the answer
    obs = {key: torch.as_tensor(data["obs"][:, :q])}
    _, last = wm.observe(obs, torch.as_tensor(data["action"][:, :q]), torch.as_tensor(data["is_first"][:, :q]))
    A = agent.act_spec.size
    n = len(data["cue"])
    rewards = []
    for a in range(A):
        onehot = torch.zeros(n, A)
        onehot[:, a] = 1.0
        rewards.append(wm.reward(wm.step(last, onehot)))
    answer = torch.stack(rewards, -1).argmax(-1).numpy()
    return float((answer == data["cue"]).mean())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ks", type=int, nargs="+", default=[10, 50, 200])
    p.add_argument("--dynamics", nargs="+", default=list(DYNAMICS), choices=DYNAMICS)
    p.add_argument("--preset", default="default")
    p.add_argument("--episodes", type=int, default=2000, help="random-action training episodes per k")
    p.add_argument("--eval-episodes", type=int, default=1000)
    p.add_argument("--updates", type=int, default=1500)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--context", type=int, default=0,
                   help="the transformer's context (default: the episode's k + 3 steps rounded up to 16)")
    p.add_argument("--eval-every", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--out", default="memory_suite.json")
    args = p.parse_args(argv)

    rows = []
    for k in args.ks:
        train = episodes(k, args.episodes, args.seed)
        test = episodes(k, args.eval_episodes, args.seed + 1)
        for dyn in args.dynamics:
            agent = build(k, dyn, args)
            params = sum(p.numel() for p in agent.wm.parameters())
            rng = np.random.default_rng(args.seed)
            curve, t0 = [], time.perf_counter()
            for u in range(1, args.updates + 1):
                idx = rng.integers(0, args.episodes, args.batch)
                (key,) = agent.obs_spec
                batch = Batch.build({(key if name == "obs" else name): v[idx] for name, v in train.items()
                                     if name != "cue"}, agent.obs_spec, agent.act_spec)
                metrics, _ = rssm_update(agent.wm, batch, agent.optimizers["model_opt"], agent.cfg.model,
                                         agent.cfg.run.precision)
                if u % args.eval_every == 0 or u == args.updates:
                    curve.append({"updates": u, "return": planner_return(agent, test, k),
                                  "reward_loss": float(metrics.get("wm/reward", float("nan"))),
                                  "seconds": time.perf_counter() - t0})
                    print(f"k={k} {dyn}: {u} updates, return {curve[-1]['return']:.3f}, "
                          f"{curve[-1]['seconds']:.0f} s", flush=True)
            rows.append({"k": k, "dynamics": dyn, "world_model_params": int(params), "curve": curve,
                         "return": curve[-1]["return"], "seconds": curve[-1]["seconds"],
                         "ms_per_update": 1000 * curve[-1]["seconds"] / args.updates})
            with open(args.out, "w") as f:
                json.dump({"args": vars(args), "rows": rows}, f, indent=1)
    print(f"\n| k | {' | '.join(args.dynamics)} |")
    print("|---|" + "---|" * len(args.dynamics))
    for k in args.ks:
        cells = []
        for dyn in args.dynamics:
            r = next(r for r in rows if r["k"] == k and r["dynamics"] == dyn)
            cells.append(f"{r['return']:.3f} ({r['world_model_params'] / 1e6:.2f}M, {r['ms_per_update']:.0f} ms/upd)")
        print(f"| {k} | {' | '.join(cells)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
