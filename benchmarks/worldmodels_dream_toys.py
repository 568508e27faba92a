"""World Models' memory M on synthetic data, before and after each of the reference's choices: minutes on
one CPU thread, no environment package needed.

``life``: the dream's episode end. Episodes of 4-dimensional codes (an AR(1) walk) end by a hazard: either
a constant 2 % per step (``--hazard constant``: true mean life 50) or a visible fuse (``--hazard fuse``:
code 0 burns down from U(0.5, 1) by 0.02 a step, the episode ends when it crosses 0: life 25-50 steps,
predictable). The terminal step's code is either ViZDoom's black frame (a fixed code far from the others,
``--end black``) or an ordinary one (``--end ordinary``). M is trained on random-action episodes with
each done-head setting; its dreams, started from the episodes' first codes, are run until the done head
ends them (at most 400 steps), and their lives compared with the true ones.

``hold``: held actions and the carried state. A point on a corridor [-1, 1] moves 0.05 a step left, not
or right (3 discrete actions), stopped by the walls; the code is its position plus noise and a second
noise dimension. Data is collected with a new uniform action every step or with each held 1-10 steps
(the longest runs of one action are reported), M trained from zero-state windows or with the state
carried; then M dreams holding "right" for 300 steps from the middle (the true position is the wall,
1.0, from step 20 on), and its per-dimension code NLL is measured on held-action and on random episodes,
filtered from their start, before and after step 32 (M's window).

    OMP_NUM_THREADS=1 python benchmarks/worldmodels_dream_toys.py life --hazard constant --end black
    OMP_NUM_THREADS=1 python benchmarks/worldmodels_dream_toys.py hold

Prints a Markdown table; ``--out`` writes the rows as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch

from reverie.agents.worldmodels_memory import Windows, mdn_step
from reverie.envs.random_actions import HeldRandomActions, longest_runs
from reverie.models.mdn_rnn import MDNRNN, MDNRNNConfig, mdn_log_prob, mdn_sample
from reverie.specs import ActionSpec


def flat(episodes: list[dict[str, np.ndarray]], chunk: int) -> dict[str, np.ndarray]:
    """Episodes -> the flat arrays of the agent's encoded data set, cut into chunks of ``chunk`` steps."""
    data = {k: np.concatenate([e[k] for e in episodes]) for k in episodes[0]}
    n = len(data["mean"])
    data["logvar"] = np.full_like(data["mean"], -20.0)          # codes are exact: z = mean
    data["reward"] = np.zeros(n, np.float32)
    data["chunk"] = np.arange(n) // chunk
    return data


# -- life: when does the dream end? ---------------------------------------------------------------
def life_episode(rng: np.random.Generator, hazard: str, end: str, cap: int = 400) -> dict[str, np.ndarray]:
    z = [rng.normal(0, 0.5, 4)]
    fuse = rng.uniform(0.5, 1.0)
    z[0][0] = fuse if hazard == "fuse" else z[0][0]
    t = 0
    while True:
        t += 1
        nxt = 0.9 * z[-1] + 0.3 * rng.normal(size=4)
        if hazard == "fuse":
            nxt[0] = z[-1][0] - 0.02
            dead = nxt[0] < 0
        else:
            dead = rng.random() < 0.02
        if dead and end == "black":
            nxt = np.full(4, -3.0)                                # ViZDoom's all-black terminal frame
        z.append(nxt)
        if dead or t >= cap:
            break
    T = len(z)
    first = np.zeros(T, np.uint8)
    first[0] = 1
    term = np.zeros(T, np.uint8)
    term[-1] = 1 if dead else 0
    return {"mean": np.asarray(z, np.float32), "action": rng.uniform(-1, 1, (T, 1)).astype(np.float32),
            "is_first": first, "is_terminal": term}


@torch.no_grad()
def dream_lives(rnn: MDNRNN, starts: np.ndarray, rng: np.random.Generator, tau: float, cap: int) -> np.ndarray:
    """Steps until each dream, one per start code ``[N, D]``, is ended by ``rnn.cont`` (cap if never)."""
    N = len(starts)
    torch.manual_seed(int(rng.integers(2**31)))
    z = torch.as_tensor(starts)
    h = torch.zeros(N, rnn.cfg.hidden)
    c = torch.zeros(N, rnn.cfg.hidden)
    life = np.full(N, cap)
    alive = np.ones(N, bool)
    for t in range(1, cap + 1):
        a = torch.as_tensor(rng.uniform(-1, 1, (N, 1)), dtype=torch.float32)
        h, c = rnn.recur(z, a, h, c)
        z = mdn_sample(rnn.mixture(h), tau)
        ended = alive & (rng.random(N) >= rnn.cont(z, h).numpy())
        life[ended] = t
        alive &= ~ended
    return life


def train(rnn: MDNRNN, data: dict[str, np.ndarray], updates: int, length: int, batch: int, carry: bool,
          seed: int) -> float:
    opt = torch.optim.Adam(rnn.parameters(), lr=3e-3)
    windows = Windows(data["chunk"], data["is_first"], length, batch, carry)
    rng = np.random.default_rng(seed)
    carried = None
    for _ in range(updates):
        metrics, carried = mdn_step(rnn, opt, data, windows.next(rng), carried, rng, torch.device("cpu"))
    return metrics["mdn/z_nll"]


def run_life(args) -> list[dict]:
    rng = np.random.default_rng(args.seed)
    episodes = [life_episode(rng, args.hazard, args.end) for _ in range(args.episodes)]
    data = flat(episodes, 400)
    true = np.array([len(e["mean"]) - 1 for e in episodes])
    settings = {"[z, h], weight 1, sampled (before)": dict(done_input="zh", done_weight=1.0, dream_end="sample"),
                "h, weight 10, threshold (reference)": dict(done_input="h", done_weight=10.0, dream_end="threshold"),
                "h, weight 10, sampled (calibrated)": dict(done_input="h", done_weight=10.0, dream_end="sample"),
                "[z, h], weight 10, threshold": dict(done_input="zh", done_weight=10.0, dream_end="threshold")}
    rows = [{"setting": "true episodes", "mean_life": float(true.mean()), "median_life": float(np.median(true)),
             "alive_at_cap": float((true >= 400).mean())}]
    for name, kw in settings.items():
        torch.manual_seed(args.seed)
        rnn = MDNRNN(4, 1, MDNRNNConfig(hidden=args.hidden, mixtures=3, reward_scale=0.0, **kw))
        t0 = time.perf_counter()
        nll = train(rnn, data, args.updates, 32, 16, True, args.seed)
        starts = np.stack([e["mean"][0] for e in episodes])[rng.integers(0, len(episodes), 256)]
        life = dream_lives(rnn, starts, rng, 1.0, 400)
        rows.append({"setting": name, "mean_life": float(life.mean()), "median_life": float(np.median(life)),
                     "alive_at_cap": float((life >= 400).mean()), "z_nll": nll, "seconds": time.perf_counter() - t0})
    print(f"\nhazard {args.hazard}, end frame {args.end}: {args.episodes} episodes, {args.updates} updates\n")
    print("| done head | mean life | median life | alive at step 400 |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['setting']} | {r['mean_life']:.1f} | {r['median_life']:.0f} | {100 * r['alive_at_cap']:.1f} % |")
    return rows


# -- hold: held actions and the carried state --------------------------------------------------------
STEP, NOISE = 0.05, 0.05


def corridor(actions: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """An episode of the corridor under discrete ``actions [T]`` (0 left, 1 stay, 2 right), from x = 0."""
    x = _walk(actions)
    T = len(actions) + 1
    pos = np.r_[0.0, x]
    z = np.stack([pos + NOISE * rng.normal(size=T), NOISE * rng.normal(size=T)], -1).astype(np.float32)
    onehot = np.zeros((T, 3), np.float32)
    onehot[np.arange(1, T), actions] = 1.0                      # action[t] leads into step t
    first = np.zeros(T, np.uint8)
    first[0] = 1
    return {"mean": z, "action": onehot, "is_first": first, "is_terminal": np.zeros(T, np.uint8), "x": pos}


def _walk(actions: np.ndarray) -> np.ndarray:
    x, out = 0.0, []
    for a in actions:
        x = min(1.0, max(-1.0, x + (a - 1) * STEP))
        out.append(x)
    return np.asarray(out)


@torch.no_grad()
def code_nll(rnn: MDNRNN, episodes: list[dict[str, np.ndarray]], split: int) -> tuple[float, float]:
    """Per-dimension NLL of the codes, filtered from each episode's start: (steps < split, steps >= split)."""
    z = torch.as_tensor(np.stack([e["mean"] for e in episodes]))
    a = torch.as_tensor(np.stack([e["action"] for e in episodes]))
    first = torch.as_tensor(np.stack([e["is_first"] for e in episodes])).bool()
    zeros = torch.zeros(len(episodes), rnn.cfg.hidden)
    hs, _ = rnn.filter(z, a, first, zeros, zeros)
    nll = (-mdn_log_prob(rnn.mixture(hs), z) / z.shape[-1])[:, 1:]
    return float(nll[:, :split - 1].mean()), float(nll[:, split - 1:].mean())


@torch.no_grad()
def dream_hold(rnn: MDNRNN, action: int, steps: int, n: int, seed: int) -> np.ndarray:
    """Dreamed positions ``[n, steps]`` holding ``action`` from x = 0."""
    torch.manual_seed(seed)
    z = torch.zeros(n, 2)
    h = torch.zeros(n, rnn.cfg.hidden)
    c = torch.zeros(n, rnn.cfg.hidden)
    a = torch.zeros(n, 3)
    a[:, action] = 1.0
    out = []
    for _ in range(steps):
        h, c = rnn.recur(z, a, h, c)
        z = mdn_sample(rnn.mixture(h), 1.0)
        out.append(z[:, 0].numpy())
    return np.stack(out, 1)


def run_hold(args) -> list[dict]:
    T = 300
    rows = []
    rng = np.random.default_rng(args.seed + 1)
    held_test = [corridor(np.full(T, a), rng) for a in (0, 2) for _ in range(16)]
    random_test = [corridor(rng.integers(0, 3, T), rng) for _ in range(32)]
    for hold in ((1, 1), (1, 10)):
        rng = np.random.default_rng(args.seed)
        episodes, runs = [], []
        for _ in range(args.episodes):
            sampler = HeldRandomActions(ActionSpec(True, 3), 1, hold, rng)
            actions = np.array([sampler()[0] for _ in range(T)])
            runs.append(longest_runs(actions).max())
            episodes.append(corridor(actions, rng))
        reach = float(np.mean([np.abs(e["x"]).max() >= 1.0 for e in episodes]))
        data = flat([{k: v for k, v in e.items() if k != "x"} for e in episodes], T + 1)
        for carry in (False, True):
            torch.manual_seed(args.seed)
            rnn = MDNRNN(2, 3, MDNRNNConfig(hidden=args.hidden, mixtures=3, reward_scale=0.0, done_scale=0.0))
            t0 = time.perf_counter()
            train(rnn, data, args.updates, 32, 16, carry, args.seed)
            dream = dream_hold(rnn, 2, T, 64, args.seed)
            rows.append({"hold": list(hold), "carry": carry, "longest_run_mean": float(np.mean(runs)),
                         "longest_run_max": int(np.max(runs)), "episodes_at_wall": reach,
                         "nll_held": code_nll(rnn, held_test, 32), "nll_random": code_nll(rnn, random_test, 32),
                         "dream_x_50": float(dream[:, 49].mean()), "dream_x_300": float(dream[:, -1].mean()),
                         "dream_err_300": float(np.abs(dream[:, -1] - 1.0).mean()),
                         "seconds": time.perf_counter() - t0})
    print(f"\ncorridor: {args.episodes} episodes of {T} steps, {args.updates} updates of 16 x 32 steps\n")
    print("| collection hold | M's windows | longest run (mean / max) | episodes at a wall | "
          "NLL held, t < 32 / t >= 32 | NLL random, t < 32 / t >= 32 | dream holding right: x at 50 / 300 |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['hold'][0]}-{r['hold'][1]} | {'carried' if r['carry'] else 'zero state'} | "
              f"{r['longest_run_mean']:.1f} / {r['longest_run_max']} | {100 * r['episodes_at_wall']:.0f} % | "
              f"{r['nll_held'][0]:.2f} / {r['nll_held'][1]:.2f} | {r['nll_random'][0]:.2f} / {r['nll_random'][1]:.2f} | "
              f"{r['dream_x_50']:.2f} / {r['dream_x_300']:.2f} |")
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("toy", choices=["life", "hold"])
    p.add_argument("--hazard", choices=["constant", "fuse"], default="constant")
    p.add_argument("--end", choices=["black", "ordinary"], default="black")
    p.add_argument("--episodes", type=int, default=200)
    p.add_argument("--updates", type=int, default=600)
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    rows = run_life(args) if args.toy == "life" else run_hold(args)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"args": vars(args), "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
