"""Milliseconds per Dreamer update and per act() call for a preset, on CartPole-v1-shaped data.

    python benchmarks/bench_default_update.py THREADS PRESET [key=value ...]

Three warm-up updates, then the median and minimum of 10 updates on one fixed
synthetic batch, then 200 single-environment act() calls.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import torch

from reverie.agents.dreamer import Dreamer
from reverie.agents.registry import resolve_config
from reverie.models import Batch
from reverie.specs import ActionSpec, ArraySpec


def cartpole_batch(agent, batch_size: int, seq_len: int) -> Batch:
    """A fixed synthetic CartPole-shaped batch ``[batch_size, seq_len]`` for timing updates."""
    rng = np.random.default_rng(0)
    b, t = batch_size, seq_len
    return Batch.build({
        "vector": rng.normal(size=(b, t, 4)).astype(np.float32),
        "action": np.eye(2, dtype=np.float32)[rng.integers(0, 2, (b, t))],
        "reward": np.ones((b, t), np.float32),
        "is_first": np.zeros((b, t), bool),
        "is_last": np.zeros((b, t), bool),
        "is_terminal": np.zeros((b, t), bool),
    }, agent.obs_spec, agent.act_spec)


def main() -> None:
    threads, preset, overrides = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
    torch.set_num_threads(threads)
    cfg = resolve_config("dreamer", preset, overrides)
    agent = Dreamer({"vector": ArraySpec((4,), np.float32)}, ActionSpec(True, 2), cfg)
    batch = cartpole_batch(agent, cfg.run.batch_size, cfg.run.seq_len)
    for _ in range(3):
        agent.update(batch)
    times = []
    for _ in range(10):
        start = time.perf_counter()
        agent.update(batch)
        times.append(time.perf_counter() - start)

    step = {"vector": np.zeros((1, 4), np.float32), "action": np.zeros((1, 2), np.float32),
            "is_first": np.ones(1, bool)}
    state = agent.init_state(1)
    start = time.perf_counter()
    for _ in range(200):
        state = agent.act(step, state, True).state
    act_ms = (time.perf_counter() - start) / 200 * 1000
    print(f"threads={threads} {preset}: median {np.median(times) * 1000:.0f} ms/update, "
          f"min {min(times) * 1000:.0f}; act {act_ms:.2f} ms/step")


if __name__ == "__main__":
    main()
