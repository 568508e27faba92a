"""Dream steps per second for a whole CMA-ES population against the real CarRacing-v3's steps per second.

The dream is World Models' MDN-RNN at the paper's sizes (z 32, 256 LSTM units, 5 Gaussians; untrained
weights, but with the done head's bias set so that dreams do not end: restarts, which filter a real
start frame through the VAE, would otherwise dominate) stepped as one :class:`DreamVectorEnv` of ``population *
rollouts`` rows with the linear controller on [z, h], as the controller stage does with evolve_in=dream.
The real environment is one CarRacing-v3 stepped with random actions (and, separately, with the VAE
and LSTM filtering each frame and the controller choosing the action, as evolve_in=real does per env).

    OMP_NUM_THREADS=1 python benchmarks/bench_dream_env.py --population 64 --rollouts 16
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from reverie.agents.worldmodels import Controller
from reverie.agents.worldmodels_rollouts import real_returns
from reverie.envs import make_env
from reverie.envs.dream_env import DreamVectorEnv
from reverie.models.mdn_rnn import MDNRNNConfig, WorldModelsModel
from reverie.models.vae import VAEConfig


def dream_rate(model, population: int, rollouts: int, steps: int) -> float:
    n = population * rollouts
    ctrl = Controller(model.feat_size, model.act_spec)
    params = torch.randn(population, ctrl.size).repeat_interleave(rollouts, 0) * 0.1
    starts = {"image": np.random.default_rng(0).integers(0, 256, (16, 64, 64, 3), dtype=np.uint8)}
    env = DreamVectorEnv(model, starts, n, observation="features", max_steps=10**6)
    obs, _ = env.reset(seed=0)
    with torch.no_grad():
        for _ in range(3):   # warm up
            obs, *_ = env.step(ctrl.act(params, torch.as_tensor(obs)).numpy())
        start = time.perf_counter()
        for _ in range(steps):
            obs, *_ = env.step(ctrl.act(params, torch.as_tensor(obs)).numpy())
    return n * steps / (time.perf_counter() - start)


def real_rate(obs: str, steps: int) -> float:
    env = make_env("gym:CarRacing-v3", obs=obs, seed=0, size=(64, 64))
    rng = np.random.default_rng(0)
    env.reset()
    start = time.perf_counter()
    for _ in range(steps):
        if env.step(rng.uniform(-1, 1, 3).astype(np.float32))["is_last"]:
            env.reset()
    rate = steps / (time.perf_counter() - start)
    env.close()
    return rate


def real_controller_rate(model, obs: str, steps: int) -> float:
    ctrl = Controller(model.feat_size, model.act_spec)
    fn = [lambda: make_env("gym:CarRacing-v3", obs=obs, seed=0, size=(64, 64), time_limit=steps)]
    start = time.perf_counter()
    _, taken = real_returns(model, ctrl, lambda f: f, torch.zeros(1, ctrl.size), 1, fn, parallel=False)
    return taken / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--population", type=int, default=64)
    p.add_argument("--rollouts", type=int, default=16)
    p.add_argument("--dream-steps", type=int, default=50)
    p.add_argument("--real-steps", type=int, default=300)
    args = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    from reverie.specs import ActionSpec, ArraySpec
    model = WorldModelsModel({"image": ArraySpec((64, 64, 3), np.dtype(np.uint8))}, ActionSpec(False, 3),
                             VAEConfig(), MDNRNNConfig())
    with torch.no_grad():   # untrained heads end half the dreams each step; a trained model's episodes run on
        model.rnn.done_head.bias.fill_(-30.0)
    out = {"population": args.population, "rollouts": args.rollouts,
           "dream_steps_per_s": dream_rate(model, args.population, args.rollouts, args.dream_steps),
           "dream_steps_per_s_population_only": dream_rate(model, args.population, 1, args.dream_steps),
           "real_env_steps_per_s_obs_state": real_rate("state", args.real_steps),
           "real_env_steps_per_s_obs_pixels": real_rate("pixels", args.real_steps),
           "real_with_vae_lstm_controller_steps_per_s_obs_state": real_controller_rate(model, "state",
                                                                                        args.real_steps)}
    out["dream_over_real_state"] = out["dream_steps_per_s"] / out["real_env_steps_per_s_obs_state"]
    print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in out.items()}, indent=1))


if __name__ == "__main__":
    main()
