"""Replay store speed: add, sample, chunk writes and reload.

Prints microseconds per call (median over repeats) for
- ``add`` of one step of N streams, in memory and with chunk files;
- ``sample`` of a 16 x 64 batch, with the sampling table cached and right
  after an ``add`` (the table is rebuilt then), uniform and recency;
- writing one chunk file and reloading the whole folder.

Usage::

    python benchmarks/bench_replay.py                 # vector obs, 1M steps, + 64x64 images, 50k steps
    python benchmarks/bench_replay.py --capacity 100000 --image-capacity 10000   # quicker
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time

import numpy as np

from reverie.replay import Replay


def make_steps(count: int, streams: int, obs: dict[str, tuple[tuple[int, ...], np.dtype]], seed: int = 0):
    """``count`` distinct step dicts of ``streams`` streams (reused cyclically to fill big buffers)."""
    rng = np.random.default_rng(seed)
    steps = []
    for t in range(count):
        step = {}
        for key, (shape, dtype) in obs.items():
            if np.dtype(dtype) == np.uint8:
                step[key] = rng.integers(0, 255, (streams, *shape), dtype=np.uint8)
            else:
                step[key] = rng.standard_normal((streams, *shape)).astype(dtype)
        step["action"] = rng.uniform(-1, 1, (streams, 6)).astype(np.float32)
        step["reward"] = rng.standard_normal(streams).astype(np.float32)
        step["is_first"] = rng.random(streams) < 0.002
        step["is_last"] = rng.random(streams) < 0.002
        step["is_terminal"] = np.zeros(streams, bool)
        steps.append(step)
    return steps


def median_us(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e6 * float(np.median(times))


def bench(name: str, obs, capacity: int, streams: int, batch: int, seq_len: int, chunk_size: int) -> None:
    steps = make_steps(64, streams, obs)
    print(f"\n== {name}: capacity {capacity:,} steps, {streams} streams, chunk {chunk_size}, batch {batch} x {seq_len}")
    for sampling in ("uniform", "recency"):
        replay = Replay(None, capacity, seq_len, chunk_size, sampling=sampling, seed=0)
        start = time.perf_counter()
        adds = 0
        while len(replay) < capacity or adds * streams < 1.2 * capacity:  # fill, then evict a while
            replay.add(steps[adds % len(steps)])
            adds += 1
        fill_s = time.perf_counter() - start
        if sampling == "uniform":
            print(f"add (memory only)          {1e6 * fill_s / adds:9.1f} us per call of {streams} steps "
                  f"({adds * streams / fill_s:,.0f} steps/s, {adds:,} calls incl. evictions)")
        replay.sample(batch)  # builds the sampling table
        cached = median_us(lambda: replay.sample(batch), 200)
        counter = iter(range(10**9))
        fresh = median_us(lambda: (replay.add(steps[next(counter) % len(steps)]), replay.sample(batch)), 200)
        add_only = median_us(lambda: replay.add(steps[next(counter) % len(steps)]), 200)
        print(f"sample {sampling:<8} cached       {cached:9.1f} us   "
              f"after an add: {fresh - add_only:9.1f} us   ({replay.stats['chunks']} chunks, "
              f"{replay.num_sequences:,} sequences)")

    with tempfile.TemporaryDirectory() as folder:
        small = min(capacity, 40 * chunk_size * streams)
        replay = Replay(folder, small, seq_len, chunk_size, seed=0)
        start = time.perf_counter()
        adds = 0
        while adds * streams < 1.5 * small:
            replay.add(steps[adds % len(steps)])
            adds += 1
        elapsed = time.perf_counter() - start
        written = replay.stats["chunks_written"]
        chunk_bytes = os.path.getsize(next(os.scandir(folder)).path)
        print(f"add (with chunk files)     {1e6 * elapsed / adds:9.1f} us per call "
              f"({written} chunk files of {chunk_bytes / 1e6:.2f} MB written, fsync included)")
        replay.flush()
        start = time.perf_counter()
        again = Replay(folder, small, seq_len, chunk_size, seed=0)
        load_s = time.perf_counter() - start
        print(f"reload folder              {1e3 * load_s:9.1f} ms for {again.stats['chunks']} chunks "
              f"({len(again):,} steps)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--capacity", type=int, default=1_000_000, help="steps, vector-observation case")
    parser.add_argument("--image-capacity", type=int, default=50_000, help="steps, 64x64x3 image case")
    parser.add_argument("--streams", type=int, default=16)
    parser.add_argument("--chunk-size", type=int, default=256)
    args = parser.parse_args()
    print(f"numpy {np.__version__}, python {platform.python_version()}, {os.cpu_count()} CPU cores, "
          f"{platform.processor() or platform.machine()}")
    bench("vector obs [17] float32", {"vector": ((17,), np.float32)}, args.capacity, args.streams,
          16, 64, args.chunk_size)
    bench("image obs [64,64,3] uint8", {"image": ((64, 64, 3), np.uint8)}, args.image_capacity, args.streams,
          16, 64, args.chunk_size)


if __name__ == "__main__":
    main()
