"""Speed of the TD-MPC2 agent on the CPU: milliseconds per gradient update (model + policy + EMA) and per
planned action (MPPI in latent space), for each preset, on one torch thread.

    python benchmarks/bench_tdmpc2.py [--presets default,5m] [--updates 20] [--actions 20] [--threads 1]
        [--no-reference]

The batch is synthetic (dm_control cartpole's shapes: 5 observation numbers, 1 action; sequences of
the preset's run.seq_len), the planner the preset's own (TD-MPC2's 512 samples x 6 iterations x
horizon 3 with 24 policy rollouts). Medians after 3 warm-up calls; the load averages before and after
are printed, since other processes on the machine inflate every number alike.

Beside each preset, a plain PyTorch reference of the same networks, update and planner written here the
straightforward way (``nn.Sequential`` with Mish and ``torch.softmax`` SimNorm as the paper describes,
the Q heads as a Python list, the MPPI loop inline; no running Q scale, no episode masks), timed in the
same run, alternating with reverie's in blocks so that load falls on both alike. It checks nothing but
speed.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from reverie.agents.registry import resolve_config
from reverie.agents.tdmpc2 import TDMPC2
from reverie.models import Batch
from reverie.specs import ActionSpec, ArraySpec

OBS = {"position": ArraySpec((3,), np.dtype(np.float32)), "velocity": ArraySpec((2,), np.dtype(np.float32))}
ACT = ActionSpec(False, 1)


def synthetic_batch(b: int, t: int) -> Batch:
    rng = np.random.default_rng(0)
    data = {"position": rng.normal(size=(b, t, 3)).astype(np.float32),
            "velocity": rng.normal(size=(b, t, 2)).astype(np.float32),
            "action": rng.uniform(-1, 1, (b, t, 1)).astype(np.float32),
            "reward": rng.uniform(0, 1, (b, t)).astype(np.float32),
            "is_first": np.zeros((b, t), bool), "is_last": np.zeros((b, t), bool),
            "is_terminal": np.zeros((b, t), bool)}
    return Batch.build(data, OBS, ACT)


def median_ms(fns: dict, calls: int, warmup: int = 3, block: int = 5) -> dict[str, float]:
    """Median milliseconds of each ``fns[name]()``, the functions taking turns in blocks of ``block`` calls."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    while min(len(v) for v in times.values()) < calls:
        for name, fn in fns.items():
            for _ in range(block):
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    return {k: 1e3 * statistics.median(v) for k, v in times.items()}


# -- the plain reference ---------------------------------------------------------------------------
def _mlp(sizes: list[int], last: nn.Module | None = None, dropout: float = 0.0) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-2], sizes[1:-1])):
        layers += [nn.Linear(a, b), *([nn.Dropout(dropout)] if i == 0 and dropout else []), nn.LayerNorm(b),
                   nn.Mish()]
    layers.append(nn.Linear(sizes[-2], sizes[-1]))
    if last is not None:
        layers += [nn.LayerNorm(sizes[-1]), last]
    return nn.Sequential(*layers)


class _SoftmaxSimNorm(nn.Module):
    def forward(self, x):
        return torch.softmax(x.view(*x.shape[:-1], -1, 8), -1).view(x.shape)


class Reference(nn.Module):
    """The same networks and sizes as the preset, written plainly."""

    def __init__(self, cfg, obs_dim: int, act_dim: int):
        super().__init__()
        m, d, u, k = cfg.model, cfg.model.latent, cfg.model.units, cfg.model.bins
        self.cfg, self.act_dim = cfg, act_dim
        self.enc = _mlp([obs_dim, m.enc_units, d], _SoftmaxSimNorm())
        self.dyn = _mlp([d + act_dim, u, u, d], _SoftmaxSimNorm())
        self.rew = _mlp([d + act_dim, u, u, k])
        self.pi = _mlp([d, u, u, 2 * act_dim])
        self.qs = nn.ModuleList(_mlp([d + act_dim, u, u, k], dropout=m.dropout) for _ in range(m.num_q))
        self.target = copy.deepcopy(self.qs).requires_grad_(False)
        self.register_buffer("bins", torch.linspace(m.vmin, m.vmax, k))
        self.opt = torch.optim.Adam([p for n, p in self.named_parameters() if not n.startswith("pi.")], lr=3e-4)
        self.pi_opt = torch.optim.Adam(self.pi.parameters(), lr=3e-4, eps=1e-5)

    def value(self, logits):
        x = (torch.softmax(logits, -1) * self.bins).sum(-1)
        return torch.sign(x) * torch.expm1(x.abs())

    def ce(self, logits, target):
        x = torch.sign(target) * torch.log1p(target.abs())
        x = x.clamp(self.bins[0], self.bins[-1])
        step = self.bins[1] - self.bins[0]
        low = ((x - self.bins[0]) / step).floor().long().clamp(0, len(self.bins) - 2)
        frac = (x - self.bins[low]) / step
        two = torch.zeros(*x.shape, len(self.bins)).scatter(-1, low[..., None], (1 - frac)[..., None])
        two = two.scatter_add(-1, low[..., None] + 1, frac[..., None])
        return -(two * torch.log_softmax(logits, -1)).sum(-1)

    def act(self, z):
        mu, log_std = self.pi(z).chunk(2, -1)
        log_std = -10 + 6 * (torch.tanh(log_std) + 1)
        eps = torch.randn_like(mu)
        a = torch.tanh(mu + eps * log_std.exp())
        log_pi = (-0.5 * eps ** 2 - log_std).sum(-1) - torch.log(F.relu(1 - a ** 2) + 1e-6).sum(-1)
        return a, log_pi

    def q(self, heads, z, a, how):
        za = torch.cat([z, a], -1)
        pick = torch.randperm(len(heads))[:2]
        vals = torch.stack([self.value(heads[int(i)](za)) for i in pick])
        return vals.min(0).values if how == "min" else vals.mean(0)

    def update(self, obs, action, reward):
        h = self.cfg.planner.horizon
        with torch.no_grad():
            nz = self.enc(obs[:, 1:])
            td = reward + 0.99 * self.q(self.target, nz, self.act(nz)[0], "min")
        z = self.enc(obs[:, 0])
        zs, cons = [z], 0.0
        for t in range(h):
            z = self.dyn(torch.cat([z, action[:, t]], -1))
            cons = cons + 0.5 ** t * ((z - nz[:, t]) ** 2).mean()
            zs.append(z)
        za = torch.cat([torch.stack(zs[:-1], 1), action], -1)
        w = 0.5 ** torch.arange(h)
        rl = (self.ce(self.rew(za), reward).mean(0) * w).sum()
        ql = sum((self.ce(q(za), td).mean(0) * w).sum() for q in self.qs) / len(self.qs)
        self.opt.zero_grad()
        ((20 * cons + 0.1 * rl + 0.1 * ql) / h).backward()
        nn.utils.clip_grad_norm_(self.parameters(), 20)
        self.opt.step()
        self.qs.requires_grad_(False)
        all_z = torch.stack(zs, 1).detach()
        a, log_pi = self.act(all_z)
        q = self.q(self.qs, all_z, a, "mean")
        loss = ((1e-4 * log_pi - q) * 0.5 ** torch.arange(h + 1)).mean()
        self.pi_opt.zero_grad()
        loss.backward()
        self.pi_opt.step()
        self.qs.requires_grad_(True)
        with torch.no_grad():
            for p, s in zip(self.target.parameters(), self.qs.parameters()):
                p.lerp_(s, 0.01)

    @torch.no_grad()
    def plan(self, obs, prev_mean):
        s = self.cfg.planner
        z = self.enc(obs)
        n, p, h = s.candidates, s.policy_candidates, s.horizon
        pz, pi_actions = z.repeat(p, 1), []
        for _ in range(h):
            a = self.act(pz)[0]
            pi_actions.append(a)
            pz = self.dyn(torch.cat([pz, a], -1))
        pi_actions = torch.stack(pi_actions)                                   # [H, P, A]
        z = z.repeat(n, 1)
        mean, std = prev_mean, torch.full_like(prev_mean, s.max_std)
        for _ in range(s.iterations):
            sampled = (mean[:, None] + std[:, None] * torch.randn(h, n - p, self.act_dim)).clamp(-1, 1)
            actions = torch.cat([pi_actions, sampled], 1)                      # [H, N, A]
            g, zt = 0.0, z
            for t in range(h):
                za = torch.cat([zt, actions[t]], -1)
                g = g + 0.99 ** t * self.value(self.rew(za))
                zt = self.dyn(za)
            g = g + 0.99 ** h * self.q(self.qs, zt, self.act(zt)[0], "mean")
            value, idx = g.topk(s.elites)
            elites = actions[:, idx]
            score = torch.exp((value - value.max()) / s.temperature)
            score = score / score.sum()
            mean = (score[None, :, None] * elites).sum(1)
            std = ((score[None, :, None] * (elites - mean[:, None]) ** 2).sum(1)).sqrt().clamp(s.min_std, s.max_std)
        return mean[0], torch.cat([mean[1:], torch.zeros_like(mean[:1])])


def bench(preset: str, updates: int, actions: int, reference: bool) -> dict[str, Any]:
    cfg = resolve_config("tdmpc2", preset, [])
    torch.manual_seed(0)
    agent = TDMPC2(OBS, ACT, cfg)
    batch = synthetic_batch(cfg.run.batch_size, cfg.run.seq_len)
    step = {"position": np.zeros((1, 3), np.float32), "velocity": np.zeros((1, 2), np.float32),
            "action": np.zeros((1, 1), np.float32), "is_first": np.array([False])}
    holder: dict[str, Any] = {"state": agent.init_state(1)}

    def act():
        holder["state"] = agent.act(step, holder["state"], explore=True).state

    update_fns, act_fns = {"reverie": lambda: agent.update(batch)}, {"reverie": act}
    if reference:
        ref = Reference(cfg, 5, 1)
        h = cfg.planner.horizon
        obs = torch.cat([batch.obs["position"], batch.obs["velocity"]], -1)[:, :h + 1]
        update_fns["reference"] = lambda: ref.update(obs, batch.action[:, 1:h + 1], batch.reward[:, 1:h + 1])
        holder["mean"] = torch.zeros(h, 1)

        def ref_act():
            _, holder["mean"] = ref.plan(torch.zeros(1, 5), holder["mean"])
        act_fns["reference"] = ref_act
    update_ms = median_ms(update_fns, updates)
    act_ms = median_ms(act_fns, actions)
    params = sum(p.numel() for p in agent.wm.parameters())
    return {"params": params, "update_ms": update_ms, "plan_ms": act_ms, "batch": cfg.run.batch_size,
            "latent": cfg.model.latent, "units": cfg.model.units}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="default,5m")
    parser.add_argument("--updates", type=int, default=20)
    parser.add_argument("--actions", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-reference", action="store_true", help="time reverie only")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"load average before: {os.getloadavg()}  threads: {args.threads}  torch {torch.__version__}")
    for preset in args.presets.split(","):
        r = bench(preset, args.updates, args.actions, not args.no_reference)
        print(f"{preset}: {r['params'] / 1e6:.2f}M parameters (latent {r['latent']}, MLPs {r['units']}, "
              f"batch {r['batch']})")
        for impl in r["update_ms"]:
            up = r["update_ms"][impl]
            print(f"  {impl:>9}: update {up:.1f} ms ({1e3 / up:.1f}/s), planned action {r['plan_ms'][impl]:.1f} ms")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
