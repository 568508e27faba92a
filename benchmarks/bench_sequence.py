"""World-model update time against sequence length, and imagination speed, for each sequence dynamics.

    python benchmarks/bench_sequence.py [--preset default] [--lengths 64 256 1024] [--batch 8]
        [--variants gru ssm ssm-chunk64 ssm-loop ssm-r2i gru-r2i transformer] [--repeats 3] [--starts 256] [key=value ...]

One update = the Dreamer world model's loss on a batch ``[batch, T]`` of random vector observations
(8 dims, 2 discrete actions, an episode start at t = 0), backward and an Adam step
(:func:`reverie.agents.dreamer.rssm_update`); the median of ``--repeats`` after one warm-up.
``ssm-chunk64`` scans chunks of 64 steps, ``ssm-loop`` chunks of 1 step (the step-by-step
recurrence of the same model), ``ssm-r2i`` and ``gru-r2i`` R2I's design (``model.rssm.r2i=true``: the
posterior from the embedding alone, the SSM's scan with a backward pass whose memory is linear in T). Each update
line also gives ``saved_mb``: the bytes of the distinct storages autograd keeps for the backward pass of the
world model's loss on that batch (measured with saved-tensor hooks; deterministic, unlike the time). Imagination: ``--starts`` states filtered over 64 steps, then
15 prior steps with random actions, without gradients; imagined steps per second = starts * 15 / s.
``--grad`` also times the same rollout with gradients, then its backward (the sum of the imagined features
differentiated with respect to the actions and the weights, as Dreamer's actor learns for continuous actions
by backpropagating through the dynamics): wall and CPU seconds per rollout and backward, and the process's
peak resident memory after them (run one variant per process to compare peaks).
Prints one JSON line per measurement.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time

import numpy as np
import torch

from reverie.agents.rssm_update import rssm_update
from reverie.agents.registry import resolve_config
from reverie.models import Batch, RSSMWorldModel
from reverie.specs import ActionSpec, ArraySpec

VARIANTS = {
    "gru": ["model.dynamics=gru"],
    "ssm": ["model.dynamics=ssm"],
    "ssm-chunk64": ["model.dynamics=ssm", "model.ssm.chunk=64"],
    "ssm-loop": ["model.dynamics=ssm", "model.ssm.chunk=1"],
    "ssm-r2i": ["model.dynamics=ssm", "model.rssm.r2i=true"],
    "gru-r2i": ["model.dynamics=gru", "model.rssm.r2i=true"],
    "transformer": ["model.dynamics=transformer"],
}
OBS = {"vector": ArraySpec((8,), np.dtype(np.float32))}
ACT = ActionSpec(True, 2)


def random_batch(batch: int, steps: int, gen: torch.Generator) -> Batch:
    first = torch.zeros(batch, steps, dtype=torch.bool)
    first[:, 0] = True
    return Batch(obs={"vector": torch.randn(batch, steps, 8, generator=gen)},
                 action=torch.eye(2)[torch.randint(0, 2, (batch, steps), generator=gen)],
                 reward=torch.randn(batch, steps, generator=gen), is_first=first,
                 is_last=torch.zeros(batch, steps, dtype=torch.bool), is_terminal=torch.zeros(batch, steps, dtype=torch.bool))


def saved_mb(wm: RSSMWorldModel, batch: Batch) -> float:
    """Megabytes of the distinct storages autograd keeps for the backward pass of ``wm.loss(batch)``."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        wm.loss(batch)
    return sum(storages.values()) / 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="default")
    p.add_argument("--lengths", type=int, nargs="+", default=[64, 256, 1024])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--starts", type=int, default=256)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--grad", action="store_true", help="also time imagination with gradients and its backward")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    args = p.parse_intermixed_args()
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    for name in args.variants:
        cfg = resolve_config("dreamer", args.preset, [*VARIANTS[name], *args.overrides]).model
        torch.manual_seed(0)
        wm = RSSMWorldModel(OBS, ACT, cfg)
        params = sum(p.numel() for p in wm.rssm.parameters())
        opt = torch.optim.Adam(wm.parameters(), lr=cfg.lr, eps=cfg.eps)
        for steps in args.lengths:
            times = []
            for i in range(args.repeats + 1):
                batch = random_batch(args.batch, steps, gen)
                start = time.perf_counter()
                rssm_update(wm, batch, opt, cfg, "fp32")
                if i:
                    times.append(time.perf_counter() - start)
            print(json.dumps({"variant": name, "what": "update", "batch": args.batch, "seq_len": steps,
                              "s_per_update": round(statistics.median(times), 4), "rssm_params": params,
                              "saved_mb": round(saved_mb(wm, batch), 2)}), flush=True)
        with torch.no_grad():
            ctx = random_batch(args.starts, 64, gen)
            _, state = wm.observe(ctx.obs, ctx.action, ctx.is_first)
            actions = torch.eye(2)[torch.randint(0, 2, (15, args.starts), generator=gen)]
            times = []
            for i in range(args.repeats + 1):
                s = state
                start = time.perf_counter()
                for a in actions:
                    s = wm.step(s, a)
                if i:
                    times.append(time.perf_counter() - start)
        sec = statistics.median(times)
        print(json.dumps({"variant": name, "what": "imagine", "starts": args.starts, "horizon": 15,
                          "steps_per_s": round(args.starts * 15 / sec), "ms_per_step": round(1000 * sec / 15, 3)}),
              flush=True)
        if args.grad:
            walls, cpus = [], []
            for i in range(args.repeats + 1):
                s, taken = state, actions.clone().requires_grad_(True)
                wall, cpu = time.perf_counter(), time.process_time()
                feats = []
                for a in taken:
                    s = wm.step(s, a)
                    feats.append(wm.features(s))
                torch.stack(feats).sum().backward()
                if i:
                    walls.append(time.perf_counter() - wall)
                    cpus.append(time.process_time() - cpu)
                wm.zero_grad(set_to_none=True)
            print(json.dumps({"variant": name, "what": "imagine+backward", "starts": args.starts, "horizon": 15,
                              "s": round(statistics.median(walls), 4), "cpu_s": round(statistics.median(cpus), 4),
                              "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 3)}),
                  flush=True)


if __name__ == "__main__":
    main()
