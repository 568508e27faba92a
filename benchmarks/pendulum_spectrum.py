"""Does a world model of Pendulum-v1 know the pendulum's period? The report's headline against the physics.

gymnasium's Pendulum-v1 is a rod (``theta'' = 3 g / (2 l) sin(theta) + 3 / (m l^2) u``, theta = 0
upright), so near the bottom it swings with period ``2 pi sqrt(2 l / (3 g)) = 1.622 s`` (g = 10,
l = 1; its semi-implicit Euler step of dt = 0.05 s gives 1.621 s), not the point mass's 1.987 s. A
swing of amplitude ``a`` takes longer, ``T(a) = T0 (2 / pi) K(sin(a / 2))`` (+4 % at 45 degrees,
+18 % at 90 degrees), and the balanced pendulum at the top does not oscillate at all.

For one run this prints, as JSON:

- ``report``: the headline of ``reverie analyze`` (DMD of the model's free-running imagination from the
  states its greedy episodes visit, zero torque), and the latent spectrum's median period;
- ``truth_at_report_starts``: the same DMD of the real pendulum swinging freely from the same states
  (the simulator set to each visited state): the period the headline should match there;
- ``near_bottom``: the model's imagination and the real pendulum, DMD'd alike, from states of
  zero-torque episodes that start within ``--max-angle`` of the bottom (small swings: the
  small-oscillation period), and the latent spectrum there;
- the small-oscillation period from the constants of gymnasium's own Pendulum, and every relative gap.

    python benchmarks/pendulum_spectrum.py RUN_DIR
"""

from __future__ import annotations

import argparse
import functools
import json
import math

import gymnasium as gym
import numpy as np
import torch

from reverie.agents.base import observe_step
from reverie.analysis import model_spectrum
from reverie.analysis.dmd import dmd
from reverie.analysis.modes import default_delays, imagined_modes
from reverie.analysis.report import RunAccess, analyze_run
from reverie.analysis.report.sections import filter_episodes, visited
from reverie.models.state import stack_states
from reverie.training.checkpoint import list_checkpoints, load_checkpoint
from reverie.training.evaluate import run_episodes
from reverie.training.run_dir import RunFolder
from reverie.training.session import load_run

HORIZON = 64          # imagined steps, as the report


def small_oscillation_periods() -> dict:
    """The period near the bottom from gymnasium's own Pendulum constants: continuous time and its Euler step."""
    raw = gym.make("Pendulum-v1").unwrapped
    w2 = 3 * raw.g / (2 * raw.l)
    continuous = 2 * math.pi / math.sqrt(w2)
    discrete = 2 * math.pi * raw.dt / math.acos(1 - w2 * raw.dt ** 2 / 2)
    return {"g": raw.g, "l": raw.l, "m": raw.m, "dt": raw.dt, "continuous_s": continuous, "euler_step_s": discrete}


def real_free_swings(obs: np.ndarray, steps: int) -> np.ndarray:
    """``[N, steps + 1, 3]`` observations of the real Pendulum-v1 swinging freely (zero torque) from each
    observed state ``obs [N, 3]`` (cos theta, sin theta, theta dot)."""
    env = gym.make("Pendulum-v1").unwrapped
    env.reset(seed=0)
    out = []
    for cos, sin, speed in obs:
        env.state = np.array([math.atan2(sin, cos), speed], dtype=np.float64)
        rows = [np.array([cos, sin, speed])]
        for _ in range(steps):
            rows.append(env.step(np.zeros(1, np.float32))[0])
        out.append(np.stack(rows))
    return np.stack(out).astype(np.float64)


def report_starts(agent, cfg, make, episodes: int, max_states: int = 600, max_windows: int = 128):
    """The states the report imagines from, and the real observations there (as ``analyze_run`` picks them)."""
    eps, base = None, cfg.run.seed + 60_000
    _, eps = run_episodes(agent, [functools.partial(make, base + i) for i in range(episodes)], record=True)
    states = filter_episodes(agent.model, eps, agent.device)
    state, action, _ = visited(agent.model, eps, states, max_states, cfg.run.seed)
    obs = np.concatenate([ep["vector"][:len(ep["action"]) - 1] for ep in eps if len(ep["action"]) >= 2])
    n = obs.shape[0]
    idx = np.sort(np.random.default_rng(cfg.run.seed).choice(n, size=min(n, max_states), replace=False))
    obs = obs[idx]
    pick = np.unique(np.linspace(0, len(idx) - 1, min(len(idx), max_windows)).round().astype(int))
    return state, action, obs[pick]


def near_bottom_states(agent, make, episodes: int, steps: int, max_angle: float, skip: int):
    """Filtered states ``[N]`` and real observations ``[N, 3]`` of zero-torque episodes that start within
    ``max_angle`` of the bottom."""
    states, obs, seed = [], [], 0
    while len(states) < episodes * (steps - skip) and seed < 100 * episodes:
        env = make(seed)
        seed += 1
        step = env.reset()
        cos, sin, speed = step["vector"]
        if math.pi - abs(math.atan2(sin, cos)) > max_angle or abs(speed) > max_angle:
            env.close()
            continue
        state = None
        for t in range(steps):
            batch = {k: np.asarray(v)[None] for k, v in step.items()}
            batch["action"] = np.zeros((1, agent.act_spec.size), np.float32)
            with torch.no_grad():
                state = observe_step(agent.model, batch, state, agent.device)
            if t >= skip:   # let the filter settle first
                states.append(state)
                obs.append(np.asarray(step["vector"], np.float64))
            step = env.step(np.zeros(agent.act_spec.size, np.float32))
        env.close()
    return {k: v.squeeze(1) for k, v in stack_states(states, 0).items()}, np.stack(obs)


def gap(x: float, ref: float) -> float:
    return round((x - ref) / ref, 4) if np.isfinite(x) else float("nan")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir")
    p.add_argument("--episodes", type=int, default=4, help="greedy episodes, as reverie analyze")
    p.add_argument("--bottom-episodes", type=int, default=8)
    p.add_argument("--steps", type=int, default=60, help="steps per near-bottom episode")
    p.add_argument("--skip", type=int, default=10, help="first steps of each near-bottom episode left out")
    p.add_argument("--max-angle", type=float, default=0.5, help="start within this many radians of the bottom")
    args = p.parse_args()
    torch.set_num_threads(1)
    phys = small_oscillation_periods()
    t0 = phys["euler_step_s"]
    access = RunAccess(open_run=load_run, load_checkpoint=load_checkpoint, play=run_episodes,
                       checkpoints=lambda run: list_checkpoints(RunFolder.existing(run).checkpoints))
    a = analyze_run(access, args.run_dir, episodes=args.episodes, only=("spectral",))
    head, data = a.headline, a.sections["spectral"].data
    agent, cfg, make, meta = load_run(args.run_dir)
    dt = phys["dt"]

    _, _, start_obs = report_starts(agent, cfg, make, args.episodes)
    delays = data["dmd"]["delays"] if "dmd" in data else default_delays(3, HORIZON + 1)
    truth = dmd(real_free_swings(start_obs, HORIZON), dt, delays=delays)
    angle = np.pi - np.abs(np.arctan2(start_obs[:, 1], start_obs[:, 0]))      # 0 at the bottom
    energy = 0.5 * start_obs[:, 2] ** 2 / 15.0 + (1 - np.cos(angle))            # swing amplitude from energy
    amplitude = np.degrees(np.arccos(np.clip(1 - energy, -1, 1)))

    states, bottom_obs = near_bottom_states(agent, make, args.bottom_episodes, args.steps, args.max_angle, args.skip)
    zero = torch.zeros(len(bottom_obs), agent.act_spec.size)
    torch.manual_seed(0)
    model_bottom = imagined_modes(agent.model, states, zero, horizon=HORIZON, dt=dt)
    pick = np.unique(np.linspace(0, len(bottom_obs) - 1, min(len(bottom_obs), 128)).round().astype(int))
    truth_bottom = dmd(real_free_swings(bottom_obs[pick], HORIZON), dt, delays=model_bottom.dmd.delays)
    latent = model_spectrum(agent.model, states, torch.zeros(1, agent.act_spec.size), dt=dt)
    latent_period = latent.summary()["median_dominant_period"]

    print(json.dumps({
        "run": args.run_dir, "agent": a.agent, "checkpoint_step": meta["step"],
        "episode_returns": [round(r, 1) for r in a.episode_returns],
        "small_oscillation_period_s": {k: round(v, 4) for k, v in phys.items()},
        "report": {"method": head["method"], "headline_period_s": head["period"],
                   "headline_decay_rate_per_s": head["decay_rate"], "headline_energy": head["energy"],
                   "gap_to_small_oscillation": gap(head["period"], t0),
                   "latent_spectrum_median_period_s": data.get("median_dominant_period"),
                   "text": head["text"]},
        "report_starts_amplitude_deg": {q: round(float(np.percentile(amplitude, p)), 1)
                                        for q, p in (("q10", 10), ("q50", 50), ("q90", 90))},
        "truth_at_report_starts": {"period_s": truth.dominant_period, "decay_rate_per_s": truth.dominant_decay_rate,
                                   "headline_gap_to_it": gap(head["period"], truth.dominant_period)},
        "near_bottom": {"states": len(bottom_obs), "max_angle_rad": args.max_angle,
                        "model_period_s": model_bottom.dmd.dominant_period,
                        "model_decay_rate_per_s": model_bottom.dmd.dominant_decay_rate,
                        "model_method": model_bottom.method,
                        "model_gap_to_small_oscillation": gap(model_bottom.dmd.dominant_period, t0),
                        "real_period_s": truth_bottom.dominant_period,
                        "latent_spectrum_median_period_s": latent_period,
                        "latent_spectrum_gap_to_small_oscillation": gap(latent_period, t0)},
    }, indent=1, default=float))


if __name__ == "__main__":
    main()
