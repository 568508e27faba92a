"""Dream speed: imagined MinAtar frames per second of DIAMOND's diffusion model against the real game and Dreamer.

Each dream is a batch of ``--batch`` trajectories (DIAMOND's ``default`` preset imagines 16 per update) of
``--horizon`` steps (DIAMOND's 15) from filtered states of a real episode, with random actions, under
``torch.no_grad``; its rate is ``batch * horizon`` frames over the wall time of the best of ``--repeats``
runs (the best, so that a busy shared machine disturbs the figure least). The models are the ``default``
DIAMOND preset's (a two-level U-Net of 32 channels) with EDM at 3 and 10 Euler steps and DDPM at 3 steps,
and the ``minatar`` Dreamer preset's RSSM, both at their sizes with untrained weights (speed does not
depend on the weights): Dreamer's rate is given for its latent steps alone (what its actor-critic
imagines) and with each step's frame decoded. Network calls per frame count the denoiser's forward calls
(each over the whole batch) per imagined frame. The real environment is the MinAtar game stepped with
uniformly random actions (resets included), one step at a time. Each is timed on one and on two threads.

    OMP_NUM_THREADS=1 python benchmarks/diamond_speed.py [--env minatar:breakout] [--threads 1 2] [--json PATH]

Prints a Markdown table; ``--json`` writes ``{env, batch, horizon, load_average, rows: [{name, threads,
per_second, calls_per_frame}]}`` (``per_second``: imagined frames, Dreamer's latent steps, or env steps).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from reverie.agents.registry import resolve_config
from reverie.envs import make_env
from reverie.models.base import imagine
from reverie.models.diffusion import DiffusionWorldModel
from reverie.models.world_model import RSSMWorldModel


def best_rate(run: Callable[[], None], count: int, repeats: int) -> float:
    """``count`` over the shortest wall time of ``repeats`` calls of ``run`` (after one warm-up call)."""
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return count / min(times)


def real_episode(env_name: str, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A random-action episode's first ``steps`` frames ``[1, T, H, W, C]`` and one-hot actions ``[1, T, A]``
    (restarting the game where it ends: only a filtered start state is needed)."""
    env = make_env(env_name, obs="pixels", seed=0)
    rng, size = np.random.default_rng(0), env.act_spec.size
    step, frames, actions = env.reset(), [], [0]
    while len(frames) < steps:
        frames.append(step["image"])
        if step["is_last"]:
            step = env.reset()
            continue
        actions.append(int(rng.integers(size)))
        step = env.step(actions[-1])
    onehot = torch.eye(size)[torch.as_tensor(actions[:steps])]
    return torch.as_tensor(np.stack(frames))[None], onehot[None]


def env_rate(env_name: str, steps: int) -> float:
    env = make_env(env_name, obs="pixels", seed=0)
    rng, size = np.random.default_rng(0), env.act_spec.size
    env.reset()
    start = time.perf_counter()
    for _ in range(steps):
        if env.step(int(rng.integers(size)))["is_last"]:
            env.reset()
    return steps / (time.perf_counter() - start)


@torch.no_grad()
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", default="minatar:breakout")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--horizon", type=int, default=15)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    torch.manual_seed(0)
    env = make_env(args.env, obs="pixels", seed=0)
    frames, actions = real_episode(args.env, 8)
    is_first = torch.zeros(1, frames.shape[1], dtype=torch.bool)
    is_first[0, 0] = True
    future = torch.eye(env.act_spec.size)[torch.randint(0, env.act_spec.size, (args.batch, args.horizon))]
    count = args.batch * args.horizon

    def dream(model: DiffusionWorldModel | RSSMWorldModel, decode: bool) -> Callable[[], None]:
        _, last = model.observe({"image": frames}, actions, is_first)
        start = {k: v.expand(args.batch, *v.shape[1:]) for k, v in last.items()}

        def run() -> None:
            states = imagine(model, start, future)
            if decode:
                model.decode(states)
        return run

    models: list[tuple[str, DiffusionWorldModel | RSSMWorldModel, bool]] = []
    for name, process, steps in (("DIAMOND EDM, 3 Euler steps", "edm", 3), ("DIAMOND EDM, 10 Euler steps", "edm", 10),
                                 ("DIAMOND DDPM, 3 steps", "ddpm", 3)):
        cfg = resolve_config("diamond", "default", [f"run.env={args.env}", f"model.process={process}"]).model
        diffusion = DiffusionWorldModel(env.obs_spec, env.act_spec, cfg).eval()
        diffusion.set_sampler_steps(steps)
        models.append((name, diffusion, False))
    rssm_cfg = resolve_config("dreamer", "minatar", [f"run.env={args.env}"]).model
    rssm = RSSMWorldModel(env.obs_spec, env.act_spec, rssm_cfg).eval()
    models += [("Dreamer latent steps", rssm, False), ("Dreamer steps with decoded frames", rssm, True)]

    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        for name, model, decode in models:
            calls: list[int] = []
            hook = None
            if isinstance(model, DiffusionWorldModel):
                hook = model.denoiser.register_forward_hook(lambda *_: calls.append(1))
            rate = best_rate(dream(model, decode), count, args.repeats)
            per_frame = None
            if hook is not None:
                hook.remove()
                per_frame = len(calls) / ((args.repeats + 1) * args.horizon)     # one batched call per row
            rows.append({"name": name, "threads": threads, "per_second": rate, "calls_per_frame": per_frame})
        rows.append({"name": f"real {args.env} (random actions)", "threads": threads,
                     "per_second": env_rate(args.env, 5000), "calls_per_frame": None})
    result = {"env": args.env, "batch": args.batch, "horizon": args.horizon,
              "load_average": os.getloadavg()[0], "rows": rows}
    print(f"| what | threads | per second | network calls per frame |\n|---|---|---|---|")
    for r in rows:
        calls = "" if r["calls_per_frame"] is None else f"{r['calls_per_frame']:g}"
        print(f"| {r['name']} | {r['threads']} | {r['per_second']:,.0f} | {calls} |")
    print(f"load average: {result['load_average']:.2f}", file=sys.stderr)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
