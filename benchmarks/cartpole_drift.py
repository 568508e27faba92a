"""Does a Dreamer CartPole model see the cart drift off the track under its own greedy policy?

Plays greedy evaluation episodes in the real environment, and from every tenth step of each episode
(the model filtered through the real history up to that step, as the agent sees it) dreams the same
greedy policy ``--horizon`` steps ahead. Prints, by the cart's distance from the centre at the start,
how far the cart moves outwards in reality (the episode's own continuation) and in the dream, which
share of real episodes is still alive after the horizon, and the dream's survival (the product of the
continuation head's probabilities).

    python benchmarks/cartpole_drift.py RUN_DIR [--episodes 8] [--horizon 20] [--json OUT]
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

import reverie
from reverie.models.base import cont_head, decoder_head
from reverie.training.evaluate import run_episodes

BINS = [(0.0, 0.5), (0.5, 1.0), (1.0, 1.5), (1.5, 2.0), (2.0, 2.4)]


@torch.no_grad()
def drift_rows(run: reverie.Run, episodes: int, horizon: int, every: int = 10) -> np.ndarray:
    """Rows ``(x at the start, real x after horizon, dream x after horizon, real alive, dream survival)``."""
    agent, model = run.agent, run.model
    policy = agent.dream_policy()
    if policy is None:
        raise SystemExit(f"agent '{agent.name}' has no policy on the dream's features")
    decode, cont = decoder_head(model, "the cart's position"), cont_head(model, "the dream's survival")
    _, eps = run_episodes(agent, [lambda i=i: run.env(60_000 + i) for i in range(episodes)], record=True)
    assert eps is not None
    key = next(iter(model.obs_spec))
    rows = []
    for e in eps:
        length = len(e[key])
        obs = torch.as_tensor(e[key][None], dtype=torch.float32)
        act = torch.as_tensor(e["action"][None], dtype=torch.float32)
        first = torch.as_tensor(e["is_first"][None], dtype=torch.bool)
        for t in range(every, length - 1, every):
            _, state = model.observe({key: obs[:, :t + 1]}, act[:, :t + 1], first[:, :t + 1], None)
            survival = 1.0
            for _ in range(horizon):
                a = torch.as_tensor(policy(model.features(state).numpy()))
                state = model.step(state, torch.nn.functional.one_hot(a, model.act_spec.size).float())
                survival *= float(cont(state)[0])
            dream_x = float(decode(state)[key][0, 0])
            real_x = float(e[key][min(t + horizon, length - 1), 0])
            rows.append((float(e[key][t, 0]), real_x, dream_x, float(t + horizon < length), survival))
    return np.asarray(rows)


def table(rows: np.ndarray, horizon: int) -> list[dict[str, float]]:
    start = np.abs(rows[:, 0])
    out = []
    for lo, hi in BINS:
        m = (start >= lo) & (start < hi)
        if m.any():
            out.append({"lo": lo, "hi": hi, "n": int(m.sum()),
                        "real_outward": float(np.mean(np.abs(rows[m, 1]) - start[m])),
                        "dream_outward": float(np.mean(np.abs(rows[m, 2]) - start[m])),
                        "real_alive": float(rows[m, 3].mean()), "dream_survival": float(rows[m, 4].mean())})
    print(f"| start \\|x\\| | n | outward move in {horizon} steps: real | dream | real alive | dream survival |")
    print("|---|---|---|---|---|---|")
    for r in out:
        print(f"| {r['lo']:.1f}-{r['hi']:.1f} | {r['n']} | {r['real_outward']:+.3f} | {r['dream_outward']:+.3f} | "
              f"{r['real_alive']:.2f} | {r['dream_survival']:.2f} |")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir")
    p.add_argument("--episodes", type=int, default=8)
    p.add_argument("--horizon", type=int, default=20)
    p.add_argument("--json")
    args = p.parse_args()
    torch.manual_seed(0)
    run = reverie.load(args.run_dir)
    rows = drift_rows(run, args.episodes, args.horizon)
    out = table(rows, args.horizon)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"run": args.run_dir, "step": run.checkpoint_step, "horizon": args.horizon, "bins": out}, f,
                      indent=1)


if __name__ == "__main__":
    main()
