"""What every system of bench_mcts.py shares: the network as numpy arrays, the settings, the timer.

Imports numpy only, so that it loads in any of the peers' virtual environments.
The weights and root embeddings are drawn once from a fixed numpy seed by the
benchmark driver and handed to every system as a ``.npz`` (allow_pickle=False):

    next   = tanh(W2 @ relu(W1 @ [latent, onehot(a)] + b1) + b2)     latent size D, hidden H
    reward = w_r @ next        value = w_v @ next        policy logits = W_p @ next   (K logits)

Root outputs (prior logits and value) are the same heads applied to the root
embeddings, computed here once in float32 so that every system searches from
bit-identical roots.
"""

from __future__ import annotations

import json
import statistics
import sys
import time

import numpy as np

D = 64  # latent size
H = 64  # hidden units of the dynamics MLP
DISCOUNT = 0.997
SEED = 20240607
MAX_ROOTS = 256


def make_weights(ks: list[int], seed: int = SEED, max_roots: int = MAX_ROOTS) -> dict[str, np.ndarray]:
    """All arrays of the benchmark, keyed ``K{k}_{name}`` for each action count k, float32."""
    out: dict[str, np.ndarray] = {}
    for k in ks:
        rng = np.random.default_rng([seed, k])
        f32 = np.float32
        w = {
            "W1": rng.standard_normal((H, D + k)) * np.sqrt(2.0 / (D + k)),
            "b1": rng.standard_normal(H) * 0.1,
            "W2": rng.standard_normal((D, H)) * np.sqrt(1.0 / H),
            "b2": rng.standard_normal(D) * 0.1,
            "w_r": rng.standard_normal(D) * (0.1 / np.sqrt(D)),  # small rewards: values dominate Q
            "w_v": rng.standard_normal(D) * (2.0 / np.sqrt(D)),
            "W_p": rng.standard_normal((k, D)) * (1.5 / np.sqrt(D)),
        }
        w = {name: a.astype(f32) for name, a in w.items()}
        roots = np.tanh(rng.standard_normal((max_roots, D))).astype(f32)
        w["root_embedding"] = roots
        w["root_logits"] = (roots @ w["W_p"].T).astype(f32)
        w["root_value"] = (roots @ w["w_v"]).astype(f32)
        for name, a in w.items():
            out[f"K{k}_{name}"] = np.ascontiguousarray(a)
    return out


def weights_for(arrays: dict[str, np.ndarray], k: int) -> dict[str, np.ndarray]:
    prefix = f"K{k}_"
    return {name[len(prefix):]: a for name, a in arrays.items() if name.startswith(prefix)}


def save(path: str, arrays: dict[str, np.ndarray]) -> None:
    np.savez(path, **arrays)


def load(path: str) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as f:
        return {name: f[name] for name in f.files}


def recurrent_numpy(w: dict[str, np.ndarray], latent: np.ndarray, action: np.ndarray):
    """Reference forward pass in float64: (next latent, reward, value, logits)."""
    k = w["W_p"].shape[0]
    x = np.concatenate([latent.astype(np.float64), np.eye(k)[action]], -1)
    h = np.maximum(x @ w["W1"].T.astype(np.float64) + w["b1"], 0.0)
    nxt = np.tanh(h @ w["W2"].T.astype(np.float64) + w["b2"])
    return nxt, nxt @ w["w_r"], nxt @ w["w_v"], nxt @ w["W_p"].T.astype(np.float64)


def probe_inputs(w: dict[str, np.ndarray], rows: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """A fixed batch on which every system's network output is compared against ``recurrent_numpy``."""
    k = w["W_p"].shape[0]
    return w["root_embedding"][:rows], (np.arange(rows) % k).astype(np.int64)


def gumbel_m(k: int) -> int:
    return min(16, k)


def settings(algorithm: str, k: int) -> dict:
    """The search settings shared by all systems."""
    return {
        "algorithm": algorithm,
        "num_simulations": 50,
        "pb_c_init": 1.25,
        "pb_c_base": 19652.0,
        "dirichlet_alpha": 0.25,
        "dirichlet_fraction": 0.25,
        "max_considered_actions": gumbel_m(k),
        "c_visit": 50.0,
        "c_scale": 0.1,
        "gumbel_scale": 1.0,
        "discount": DISCOUNT,
    }


def time_calls(fn, warmup: int, repeats: int, budget_s: float, min_repeats: int = 3) -> list[float]:
    """Milliseconds of each timed ``fn()`` call after ``warmup`` untimed calls.

    Stops after ``repeats`` calls, or earlier once ``budget_s`` seconds were spent
    timing and at least ``min_repeats`` calls were made. ``fn`` must block until its
    result is ready (block_until_ready for JAX).
    """
    for _ in range(warmup):
        fn()
    times: list[float] = []
    spent = 0.0
    while len(times) < repeats and (spent < budget_s or len(times) < min(min_repeats, repeats)):
        start = time.perf_counter()
        fn()
        elapsed = time.perf_counter() - start
        times.append(1000.0 * elapsed)
        spent += elapsed
    return times


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def read_spec() -> dict:
    """A peer script's job: a JSON file named by its only argument."""
    with open(sys.argv[1]) as f:
        return json.load(f)


def emit(result: dict) -> None:
    """A peer script's answer: one JSON line on stdout, after a marker (libraries may print before it)."""
    sys.stdout.write("\n@@RESULT@@" + json.dumps(result) + "\n")
    sys.stdout.flush()
