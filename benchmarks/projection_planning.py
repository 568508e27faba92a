"""What planning keeps under a random projection of a trained model's latent: return of a planner against k.

    python benchmarks/projection_planning.py RUN_DIR [--ks 4,8,16,32,64,128] [--fit-episodes 20]
        [--episodes 5] [--planner mppi] [--set key=value ...] [--no-value] [--out FILE.json]

1. Collects ``--fit-episodes`` episodes with the agent's own policy (sampling, plus Gaussian action
   noise ``--action-noise`` so the actions are not a function of the state), filters them with the
   trained model and keeps every transition's features ``x``, action, next features ``x'``, reward
   and the critic's value of ``x``.
2. For each k: sklearn's Gaussian random projection ``P`` (k x F), and ``Ridge`` from ``[P x, a]`` to
   ``P x'`` (linear dynamics) and, quadratic by default (``--heads``), to ``r``, and from ``P x`` to the
   value (``reverie.analysis.projection.fit_projected_model``);
   prints the held-out R^2 (``projected_model_r2``) and sklearn's Johnson-Lindenstrauss k for the
   sample count at eps 0.1 and 0.2.
3. For each k, and for the unprojected latent (k = F, "full"): ``--episodes`` greedy episodes (the
   seeds ``reverie eval`` uses) in which every decision filters the real observation with the trained
   model, projects its features and plans with ``--planner`` through the ridge model (a
   ``Dynamics``: step and reward in the projected space, the ridge value at the horizon unless
   ``--no-value``). The agent's own policy and uniformly random actions play the same seeds for
   comparison.
4. Prints the smallest k whose mean return is within 5 % of the full-latent model's.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import time

import numpy as np
import torch

from reverie.agents.base import ActOutput, observe_step, to_env_action
from reverie.analysis.projection import fit_projected_model, projected_model_r2
from reverie.config import apply_overrides
from reverie.planning import plan, planner_settings
from reverie.training import session
from reverie.training.evaluate import run_episodes

FIT_SEEDS = 70_000     # fitting episodes use seeds FIT_SEEDS + i; evaluation uses reverie eval's 50_000 + i
EVAL_SEEDS = 50_000


class NoisyPolicy:
    """The agent's policy with Gaussian noise added to its (continuous) actions, clipped to [-1, 1]."""

    def __init__(self, agent, noise: float, rng: np.random.Generator):
        self.agent, self.noise, self.rng = agent, noise, rng
        self.act_spec = agent.act_spec

    def init_state(self, n):
        return self.agent.init_state(n)

    def act(self, step, state, explore):
        out = self.agent.act(step, state, explore)
        if self.act_spec.discrete or self.noise <= 0:
            return out
        env_action = np.clip(out.env_action + self.noise * self.rng.standard_normal(out.env_action.shape), -1, 1)
        return ActOutput(env_action.astype(np.float32), env_action.astype(np.float32), out.state, out.extras)


class RandomActor:
    """Uniformly random actions: the floor a planner should clear."""

    def __init__(self, act_spec, seed: int):
        self.act_spec, self.rng = act_spec, np.random.default_rng(seed)

    def init_state(self, n):
        return None

    def act(self, step, state, explore):
        n = len(step["is_first"])
        if self.act_spec.discrete:
            idx = self.rng.integers(0, self.act_spec.size, n)
            return ActOutput(idx, np.eye(self.act_spec.size, dtype=np.float32)[idx], None, {})
        a = self.rng.uniform(-1, 1, (n, self.act_spec.size)).astype(np.float32)
        return ActOutput(a, a, None, {})


class ProjectedPlanner:
    """Acts by planning through ``model`` (a ProjectedModel) from the projected features of the trained
    model's filtered state; keeps the planner's warm start per environment."""

    def __init__(self, agent, model, planner: str, settings):
        self.agent, self.model, self.planner, self.settings = agent, model, planner, settings
        self.act_spec = agent.act_spec

    def init_state(self, n):
        return self.agent.wm.initial(n), None

    @torch.no_grad()
    def act(self, step, state, explore):
        belief, warm = state
        belief = observe_step(self.agent.wm, step, belief, self.agent.device)
        is_first = torch.as_tensor(np.asarray(step["is_first"])).bool()
        warm = warm.forget(is_first) if warm is not None else None
        start = self.model.start(self.agent.wm.features(belief))
        result = plan(self.planner, self.model, start, self.settings, warm)
        action = result.action.detach().float()
        warm = result.warm.detach() if result.warm is not None else None
        return ActOutput(to_env_action(action, self.act_spec), action.numpy(), (belief, warm), {})


@torch.no_grad()
def collect(agent, make, seed: int, episodes: int, noise: float):
    """Transitions (x, action, x', reward, value(x)) of ``episodes`` noisy-policy episodes, and their returns."""
    rng = np.random.default_rng(seed)
    actor = NoisyPolicy(agent, noise, rng)
    parts, returns = [], []
    for i in range(episodes):
        ret, (ep,) = run_episodes(actor, [functools.partial(make, seed + FIT_SEEDS + i)], explore=True, record=True)
        returns.append(float(ret[0]))
        obs = {k: torch.as_tensor(ep[k][None]) for k in agent.wm.obs_spec}
        act = torch.as_tensor(ep["action"][None], dtype=torch.float32)
        is_first = torch.as_tensor(ep["is_first"][None]).bool()
        post, _ = agent.wm.observe(obs, act, is_first)
        feat = agent.wm.features(post)[0]                                       # [T, F]
        value = agent.model.value(post)[0]                                      # [T]
        keep = ~np.asarray(ep["is_first"][1:], bool)
        parts.append((feat[:-1].numpy()[keep], ep["action"][1:][keep], feat[1:].numpy()[keep],
                      np.asarray(ep["reward"][1:], np.float64)[keep], value[:-1].numpy()[keep]))
    return [np.concatenate(p) for p in zip(*parts)], returns


def evaluate(actor, make, seed: int, episodes: int):
    torch.manual_seed(seed)
    returns, start = [], time.perf_counter()
    for i in range(episodes):
        ret, _ = run_episodes(actor, [functools.partial(make, seed + EVAL_SEEDS + i)])
        returns.append(float(ret[0]))
    return np.asarray(returns), (time.perf_counter() - start) / max(episodes, 1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir")
    p.add_argument("--ks", default="4,8,16,32,64,128")
    p.add_argument("--fit-episodes", type=int, default=20)
    p.add_argument("--action-noise", type=float, default=1.0,
                   help="std of the Gaussian noise on the fitting episodes' actions (so the model can tell "
                        "the action's effect from the state's)")
    p.add_argument("--episodes", type=int, default=5)
    p.add_argument("--planner", default="mppi", choices=["mppi", "cem"])
    p.add_argument("--set", action="append", default=[], metavar="key=value",
                   help="planner setting, e.g. horizon=8 (defaults: horizon 5, 256 candidates, 32 elites, "
                        "4 iterations, init_std 0.5)")
    p.add_argument("--no-value", action="store_true", help="plan on rewards alone (no ridge value at the horizon)")
    p.add_argument("--alpha", type=float, default=1.0, help="ridge penalty")
    p.add_argument("--dynamics", default="linear", choices=["linear", "bilinear"],
                   help="bilinear: next P x from [P x, a, P x (x) a], an action effect that depends on the state")
    p.add_argument("--heads", default="quadratic", choices=["quadratic", "linear"],
                   help="reward and value heads (linear heads plan the same actions in every state)")
    p.add_argument("--out", default=None, help="also write every number to this JSON file")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    agent, cfg, make, meta = session.load_run(args.run_dir)
    seed = cfg.run.seed
    print(f"# {args.run_dir}: {agent.name} at step {meta['step']}, {cfg.run.env}; {time.strftime('%Y-%m-%d %H:%M')}, "
          f"{args.threads} thread(s), load {os.getloadavg()[0]:.1f}", flush=True)

    (x, action, nxt, reward, value), fit_returns = collect(agent, make, seed, args.fit_episodes, args.action_noise)
    n, f = x.shape
    ks = [int(k) for k in args.ks.split(",")]
    use_value = not args.no_value
    r2 = projected_model_r2(x, action, nxt, reward, ks, value=value if use_value else None, alpha=args.alpha,
                            heads=args.heads, dynamics=args.dynamics, random_state=seed)
    out: dict = {"run": args.run_dir, "checkpoint_step": meta["step"], "env": cfg.run.env, "heads": args.heads,
                 "dynamics": args.dynamics,
                 "action_noise": args.action_noise, "fit_episodes": args.fit_episodes, "n_transitions": n,
                 "feat_size": f, "fit_episode_return_mean": round(float(np.mean(fit_returns)), 1),
                 "jl_min_dim": {str(e): k for e, k in r2.jl_min_dim.items()},
                 "r2": {"ks": ks, "next": np.round(r2.next_r2, 4).tolist(),
                        "reward": np.round(r2.reward_r2, 4).tolist(),
                        "value": None if r2.value_r2 is None else np.round(r2.value_r2, 4).tolist(),
                        "full": {"next": round(r2.full_next_r2, 4), "reward": round(r2.full_reward_r2, 4),
                                 "value": None if r2.full_value_r2 is None else round(r2.full_value_r2, 4)}}}
    print(json.dumps({"fit": {k: out[k] for k in ("n_transitions", "feat_size", "fit_episode_return_mean",
                                                  "jl_min_dim")}, "r2": out["r2"]}), flush=True)

    overrides = {"horizon": 5, "candidates": 256, "elites": 32, "iterations": 4, "init_std": 0.5,
                 "discount": getattr(agent, "discount", 0.99), "use_value": use_value}
    settings = apply_overrides(planner_settings(args.planner, **overrides), list(args.set))
    out["planner"] = {"name": args.planner, **dataclasses.asdict(settings)}

    rows = []
    for name, actor in (("policy", agent), ("random", RandomActor(agent.act_spec, seed))):
        rets, secs = evaluate(actor, make, seed, args.episodes)
        rows.append({"k": name, "mean": round(float(rets.mean()), 1), "returns": np.round(rets, 1).tolist(),
                     "s_per_episode": round(secs, 1)})
        print(json.dumps(rows[-1]), flush=True)
    for k in [None, *ks]:
        model = fit_projected_model(x, action, nxt, reward, k, agent.act_spec, value=value if use_value else None,
                                    heads=args.heads, dynamics=args.dynamics, alpha=args.alpha,
                                    random_state=seed)
        rets, secs = evaluate(ProjectedPlanner(agent, model, args.planner, settings), make, seed, args.episodes)
        rows.append({"k": "full" if k is None else k, "dim": f if k is None else k,
                     "mean": round(float(rets.mean()), 1),
                     "sem": round(float(rets.std(ddof=1) / np.sqrt(len(rets))), 1) if len(rets) > 1 else None,
                     "returns": np.round(rets, 1).tolist(), "s_per_episode": round(secs, 1)})
        print(json.dumps(rows[-1]), flush=True)
    out["returns"] = rows
    full = next(r["mean"] for r in rows if r["k"] == "full")
    within = [r["k"] for r in rows if isinstance(r["k"], int) and r["mean"] >= full - 0.05 * abs(full)]
    out["smallest_k_within_5pct_of_full"] = min(within) if within else None
    out["full_vs_policy"] = {"full": full, "policy": rows[0]["mean"]}
    print(json.dumps({"smallest_k_within_5pct_of_full": out["smallest_k_within_5pct_of_full"],
                      "full_latent_return": full, "policy_return": rows[0]["mean"],
                      "jl_min_dim": out["jl_min_dim"], "feat_size": f}), flush=True)
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(out, fh, indent=1)


if __name__ == "__main__":
    main()
