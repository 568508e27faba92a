"""Where does a trained RSSM agent's episode end, and does its world model see it coming?

    python benchmarks/probe_terminations.py RUN_DIR [--episodes 4] [--show 10]

For a run on vector observations (e.g. Dreamer on CartPole-v1) this prints:
- greedy episodes: return, length and the last observation (how they end);
- over the whole stored replay, the model's predicted continuation probability
  at the terminal steps and at all other steps (filtered with the posterior);
- the last ``--show`` terminal observations with the continuation predicted there.

A terminal step the model gives a continuation near 1 is an ending that does
not exist in the agent's imagination, so its critic and actor cannot learn to
avoid it.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from reverie.replay import Replay
from reverie.training.evaluate import run_episodes
from reverie.training.session import load_run


def replay_posterior(wm, replay: Replay) -> tuple[dict[str, np.ndarray], dict[str, torch.Tensor]]:
    """The whole stored replay as one stream (observation keys, action, is_first, is_terminal) and the
    world model's posterior states ``[1, T]`` filtered along it."""
    chunks = list(replay.chunks(overlap=False))
    data = {k: np.concatenate([c[k] for c in chunks]) for k in [*wm.obs_spec, "action", "is_first", "is_terminal"]}
    with torch.no_grad():
        obs = {k: torch.as_tensor(data[k])[None] for k in wm.obs_spec}
        post, _ = wm.observe(obs, torch.as_tensor(data["action"]).float()[None], torch.as_tensor(data["is_first"])[None])
    return data, post


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir")
    p.add_argument("--episodes", type=int, default=4)
    p.add_argument("--show", type=int, default=10)
    args = p.parse_args()
    torch.set_num_threads(1)
    agent, cfg, make, meta = load_run(args.run_dir)
    if agent.model is None or "cont" not in agent.model.capabilities:
        raise SystemExit("this probe needs an agent with an RSSM world model (dreamer or planet)")
    np.set_printoptions(precision=3, suppress=True)
    print(f"checkpoint at step {meta.get('step')}")
    for i in range(args.episodes):
        ret, (ep,) = run_episodes(agent, [lambda i=i: make(10_000 + i)], record=True)
        print(f"episode {i}: return {ret[0]:.1f}, length {len(ep['is_first'])}, "
              f"last observation {np.concatenate([ep[k][-1].ravel() for k in agent.obs_spec])}")

    replay = Replay(f"{args.run_dir}/replay", capacity=cfg.run.replay_capacity, seq_len=1)
    data, post = replay_posterior(agent.wm, replay)
    with torch.no_grad():
        cont = agent.wm.cont(post)[0].numpy()
    term = data["is_terminal"].astype(bool)
    print(f"replay: {len(term)} steps, {term.sum()} terminal")
    if term.any():
        print(f"continuation predicted at terminal steps: mean {cont[term].mean():.3f}; "
              f"elsewhere: mean {cont[~term].mean():.4f}, min {cont[~term].min():.3f}")
        flat = np.concatenate([data[k].reshape(len(term), -1) for k in agent.obs_spec], -1)
        for row, c in zip(flat[term][-args.show:], cont[term][-args.show:]):
            print(f"  terminal observation {row} -> continuation {c:.3f}")


if __name__ == "__main__":
    main()
