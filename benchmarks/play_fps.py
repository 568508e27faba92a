"""How many steps a second `reverie play` can show: :meth:`reverie.play.session.PlaySession.step` timed, no browser.

    python benchmarks/play_fps.py RUN [RUN ...] [--steps 500] [--threads 1] [--seed 0]

For each run, three figures, each over ``--steps`` steps of uniformly random actions (a session that ends, the
dream's end or ``max_steps``, is reset, and the reset is not timed; 10 untimed steps first):

- ``session``: ``PlaySession.step`` of the session ``reverie play`` opens (``reverie.play.server.open_session``):
  the model's step and decoder and, where the model's actions are the environment's, the real environment
  stepped beside it;
- ``dream``: the same model in a session started from the environment's first observation without the real
  environment beside it (the model's step and decoder alone);
- ``app``: ``POST /step`` through the page's Flask app (``create_app``'s test client: the step, the frames
  encoded as PNG and JSON; no browser, no network).

Steps a second are the timed steps over their summed wall time (``time.perf_counter``); torch on
``--threads`` threads.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from reverie import api
from reverie.play.server import create_app, open_session
from reverie.play.session import PlaySession

WARMUP = 10


def random_action(session: PlaySession, rng: np.random.Generator) -> int | list[float]:
    """A uniformly random action of the session's model: an index, or numbers in [-1, 1]."""
    if session.actions is not None:
        return int(rng.integers(session.actions))
    return rng.uniform(-1, 1, session.action_dims).tolist()


def timed(step: Callable[[], bool], reset: Callable[[], object], steps: int) -> float:
    """Steps a second of ``step`` (which says whether the episode ended: then ``reset``, untimed) over ``steps``
    timed calls after :data:`WARMUP` untimed ones."""
    for _ in range(WARMUP):
        if step():
            reset()
    spent = 0.0
    for _ in range(steps):
        start = time.perf_counter()
        ended = step()
        spent += time.perf_counter() - start
        if ended:
            reset()
    return steps / spent


def session_fps(session: PlaySession, steps: int, seed: int) -> float:
    rng = np.random.default_rng(seed)
    session.reset(seed)
    return timed(lambda: session.step(random_action(session, rng)).dream.ended, lambda: session.reset(seed), steps)


def measure(run_dir: str, steps: int, seed: int) -> dict[str, float]:
    session = open_session(run_dir, warn=lambda message: None)
    out = {"session": session_fps(session, steps, seed), "real_beside": float(session.real)}
    model = api.load(run_dir).model
    if session.make_env is not None:
        env = session.make_env(seed)
        starts = {k: np.asarray(v)[None] for k, v in env.reset().items() if k in model.obs_spec}
        env.close()
    else:
        assert session.starts is not None, "a session has an environment or stored starts"
        starts = session.starts
    dream = PlaySession(model, starts=starts, max_steps=session.max_steps)
    out["dream"] = session_fps(dream, steps, seed)
    client = create_app(session, seed=seed, title="fps").test_client()
    rng = np.random.default_rng(seed)

    def post() -> bool:
        reply = client.post("/step", json={"action": random_action(session, rng)})
        if reply.status_code != 200:
            raise SystemExit(f"error: POST /step answered {reply.status_code}: {reply.get_json()}")
        return bool(reply.get_json()["dream"]["ended"])

    def reset() -> None:
        client.post("/reset", json={"seed": seed})

    reset()
    out["app"] = timed(post, reset, steps)
    session.close()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="run folders")
    p.add_argument("--steps", type=int, default=500, help="timed steps per figure")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args(argv)
    if args.steps < 1 or args.threads < 1 or args.seed < 0:
        p.error("--steps and --threads must be at least 1, --seed at least 0")
    torch.set_num_threads(args.threads)
    results = {r: measure(r, args.steps, args.seed) for r in args.runs}
    print("| run | session steps/s | dream steps/s | app POST /step steps/s | real env beside |")
    print("|---|---|---|---|---|")
    for run, r in results.items():
        print(f"| {Path(run).name} | {r['session']:.1f} | {r['dream']:.1f} | {r['app']:.1f} | "
              f"{'yes' if r['real_beside'] else 'no'} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
