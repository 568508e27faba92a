"""Probe: Dreamer update time with parts of the RSSM compiled by torch.compile, against eager.

    python benchmarks/probe_compile_update.py PRESET VARIANT    # VARIANT: eager, advance, modules, modules+ac

Prints the first update (compile time included), the median and minimum of 8 more, and the first
update's losses (the same as eager's up to rounding when compiling is correct). One thread, on a
fixed synthetic CartPole-shaped batch.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import torch

from bench_default_update import cartpole_batch

from reverie.agents.dreamer import Dreamer
from reverie.agents.registry import resolve_config
from reverie.specs import ActionSpec, ArraySpec

RSSM_PARTS = ("img_in", "gru", "post_head", "prior_head")


def main() -> None:
    preset, variant = sys.argv[1], sys.argv[2]
    torch.set_num_threads(1)
    torch.manual_seed(0)
    cfg = resolve_config("dreamer", preset, [])
    agent = Dreamer({"vector": ArraySpec((4,), np.float32)}, ActionSpec(True, 2), cfg)
    batch = cartpole_batch(agent, cfg.run.batch_size, cfg.run.seq_len)
    rssm = agent.wm.rssm
    if variant == "advance":
        rssm._advance = torch.compile(rssm._advance, dynamic=False)
    elif variant in ("modules", "modules+ac"):
        for name in RSSM_PARTS:
            setattr(rssm, name, torch.compile(getattr(rssm, name), dynamic=False))
        if variant == "modules+ac":
            agent.ac.actor = torch.compile(agent.ac.actor, dynamic=False)
    elif variant in ("imagine", "imagine+wm"):
        import torch._inductor.config as inductor_config
        inductor_config.fallback_random = True       # the same random numbers as eager mode
        agent.ac.imagine = torch.compile(agent.ac.imagine, dynamic=False)
        if variant == "imagine+wm":
            agent.wm.loss = torch.compile(agent.wm.loss, dynamic=False)
    elif variant != "eager":
        raise SystemExit(f"unknown variant {variant!r}: eager, advance, modules, modules+ac, imagine, imagine+wm")
    start = time.perf_counter()
    first_metrics = agent.update(batch)
    first = time.perf_counter() - start
    for _ in range(2):
        agent.update(batch)
    times = []
    for _ in range(8):
        start = time.perf_counter()
        agent.update(batch)
        times.append(time.perf_counter() - start)
    losses = {k: round(v, 5) for k, v in first_metrics.items() if k.startswith("loss/")}
    print(f"{variant} {preset}: first {first:.1f} s, median {np.median(times) * 1000:.0f} ms, "
          f"min {min(times) * 1000:.0f} ms; first losses {losses}")


if __name__ == "__main__":
    main()
