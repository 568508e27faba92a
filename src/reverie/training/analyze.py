"""``reverie analyze``: what a trained world model has learned, in numbers, figures and one HTML page.

It loads a run folder's checkpoint (the newest, or ``--checkpoint STEP``),
plays ``--episodes`` greedy episodes with the agent's own policy in the run's
environment (seeded), filters them with the model and runs every analysis the
model's capabilities allow (each from :mod:`reverie.analysis`):

- ``open_loop``: :func:`~reverie.analysis.open_loop.open_loop_error` on the episodes;
- ``spectral``: :func:`~reverie.analysis.spectral.model_spectrum` at the visited states, each with the
  action really taken next (needs ``transition``);
- ``fourier``: :func:`~reverie.analysis.fourier.compare_spectra` of the real against the open-loop
  predicted vector observations (needs ``decoder`` and vector observations; pixels are skipped);
- ``projection``: :func:`~reverie.analysis.projection.projection_distortion` of the visited features
  against the JL bound, and :func:`~reverie.analysis.projection.projection_r2` of the real reward (and the
  model's value) from the projected features;
- ``checkpoints``: over the checkpoints pinned during training (``run.keep_checkpoints``, at least two),
  :func:`~reverie.analysis.fourier.learning_order` per frequency band and the spectral radius per checkpoint.

The sections are built in :mod:`reverie.training.analysis_sections` (this module brings the data and
loads the checkpoints); :mod:`reverie.training.report_html` writes them out.
Nothing here writes into the run folder except its ``analysis/`` folder, and no lock is taken, so
a run may be analysed while it trains.
"""

from __future__ import annotations

import copy
import difflib
import functools
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reverie.analysis import fourier, spectral
from reverie.analysis.open_loop import OpenLoopReport
from reverie.config import ConfigError
from reverie.models.base import DECODER, TRANSITION, has
from reverie.training import analysis_figures as figs
from reverie.training.analysis_sections import (
    ANALYSES,
    TITLES,
    Section,
    _fmt,
    band_edges,
    filter_episodes,
    fourier_section,
    open_loop_section,
    projection_section,
    seeded_open_loop,
    spectral_section,
    visited,
)
from reverie.training.checkpoint import list_checkpoints, load_checkpoint
from reverie.training.evaluate import run_episodes
from reverie.training.run_dir import RunFolder

__all__ = ["ANALYSES", "AnalyzeError", "RunAnalysis", "Section", "StageProgress", "analyze_run", "check_inputs",
           "collect_episodes", "env_dt", "parse_only", "pinned_steps"]


class AnalyzeError(ConfigError):
    """A bad input to ``reverie analyze`` (said in one sentence; a :class:`ConfigError`, so the CLI prints it)."""


class StageProgress:
    """A rich progress bar over the stages in a terminal, one line per stage elsewhere (logs, CI)."""

    def __init__(self, label: str, total: int):
        from rich.console import Console

        self.label, self.total, self.done = label, total, 0
        self.console = Console(stderr=True)
        self.live = self.console.is_terminal
        self.started = time.perf_counter()

    def __enter__(self):
        if self.live:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self.bar = Progress(TextColumn(f"[bold]analyze {self.label}"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=self.console)
            self.task = self.bar.add_task("analyze", total=self.total, info="")
            self.bar.start()
        return self

    def stage(self, name: str) -> None:
        if self.live:
            self.bar.update(self.task, completed=self.done, info=name)
        else:
            print(f"analyze {self.label} [{self.done + 1}/{self.total}] {name} "
                  f"({time.perf_counter() - self.started:.0f} s)", file=sys.stderr, flush=True)
        self.done += 1

    def __exit__(self, *exc) -> None:
        if self.live:
            self.bar.update(self.task, completed=self.total, info="done")
            self.bar.stop()


@dataclass
class RunAnalysis:
    """Everything ``reverie analyze`` found about one run."""

    run_dir: Path
    agent: str
    env: str
    obs: str
    step: int
    dt: float | None
    episodes: int
    episode_lengths: list
    episode_returns: list
    sections: dict                              # name -> Section
    seconds: dict = field(default_factory=dict)  # stage -> wall seconds (filled by the caller)


# ------------------------------------------------------------------------------------------
# Checking the inputs (before anything is loaded)
# ------------------------------------------------------------------------------------------


def parse_only(text: str | None) -> tuple[str, ...]:
    """``"open_loop,spectral"`` -> the analyses to run (all when None); an unknown name is one sentence."""
    if not text:
        return ANALYSES
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    for n in names:
        if n not in ANALYSES:
            close = difflib.get_close_matches(n, ANALYSES, n=1, cutoff=0.5)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise AnalyzeError(f"unknown analysis '{n}' in --only{hint} (choose from {', '.join(ANALYSES)})")
    return tuple(a for a in ANALYSES if a in names)


def pinned_steps(run_dir: str | Path) -> list[int]:
    """Steps of the checkpoints pinned for good during training (``run.keep_checkpoints``), oldest first."""
    out = []
    for marker in list_checkpoints(RunFolder(run_dir).checkpoints):
        try:
            record = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if record.get("pinned"):
            out.append(int(record["step"]))
    return out


def checkpoint_steps(run_dir: str | Path) -> dict[int, Path]:
    """Step -> JSON path of every complete checkpoint of the run."""
    return {int(p.name[5:-5]): p for p in list_checkpoints(RunFolder(run_dir).checkpoints)}


def check_inputs(run_dirs: list[str], checkpoint: int | None, episodes: int, only: str | None) -> tuple[str, ...]:
    """Check everything the user typed, before anything is loaded; returns the analyses to run."""
    if episodes < 1:
        raise AnalyzeError(f"--episodes must be at least 1, got {episodes}")
    chosen = parse_only(only)
    for run_dir in run_dirs:
        RunFolder.existing(run_dir)
        if checkpoint is not None:
            steps = checkpoint_steps(run_dir)
            if checkpoint not in steps:
                have = ", ".join(map(str, sorted(steps))) or "none"
                raise AnalyzeError(f"{run_dir} has no checkpoint at step {checkpoint}; steps available: {have}")
    return chosen


# ------------------------------------------------------------------------------------------
# Data: episodes, visited states, the environment's time step
# ------------------------------------------------------------------------------------------


def collect_episodes(agent: Any, env_fns: list[Callable[[], Any]], max_steps: int = 2000) -> list[dict]:
    """One greedy episode per environment, side by side: ``[{key: [T, ...], action, reward, is_first,
    is_terminal}]`` with model-space ``action[t]`` leading into step t (zeros at the first step)."""
    _, episodes = run_episodes(agent, env_fns, explore=False, record=True, max_steps=max_steps)
    keys = (*agent.obs_spec, "action", "reward", "is_first", "is_terminal")
    return [{k: ep[k] for k in keys} for ep in episodes]


def env_dt(run: Any, action_repeat: int) -> float | None:
    """Seconds per agent step of the run's environment (its physics step times the action repeat), or None
    when the environment does not say (then every time is in steps)."""
    suite, _, task = run.env.partition(":")
    try:
        if suite == "dmc":
            from reverie.envs.dmc_env import import_suite

            domain, _, name = task.partition("-")
            env = import_suite().load(domain, name)
            base = float(env.control_timestep())
        elif suite == "gym":
            import gymnasium as gym

            from reverie.envs.gym_env import find_gym_spec

            env = gym.make(find_gym_spec(task))
            raw = env.unwrapped
            fps = env.metadata.get("render_fps")
            # physics step by its usual names (Pendulum: dt, CartPole: tau, MuJoCo: dt), else the frame rate
            base = next((float(getattr(raw, a)) for a in ("dt", "tau") if isinstance(getattr(raw, a, None),
                                                                                      (int, float))), None)
            base = base if base is not None else (1.0 / float(fps) if fps else None)
            env.close()
        else:
            return None
    except Exception:   # noqa: BLE001 - no time step known: report in steps
        return None
    return None if base is None else base * action_repeat


# ------------------------------------------------------------------------------------------
# Over training
# ------------------------------------------------------------------------------------------


def checkpoints_section(agent, run_dir, name, episodes, r: OpenLoopReport | None, context, horizon,
                        discount, dt, current_step: int, current_tensors, max_states, seed) -> Section:
    steps = pinned_steps(run_dir)
    if len(steps) < 2:
        return Section("checkpoints", TITLES["checkpoints"], False,
                       f"Not available: the run has {len(steps)} pinned checkpoint(s); train with "
                       "run.keep_checkpoints=N (N >= 2) to keep evenly spaced ones for this analysis.")
    model = agent.model
    paths = checkpoint_steps(run_dir)
    can_decode = has(model, DECODER) and r is not None and bool(r.real)
    can_spectrum = has(model, TRANSITION)
    preds, radius, mse = [], [], []
    try:
        # the analysed checkpoint joins the pinned ones when it is newer (the run's latest state)
        for step in steps + ([current_step] if current_step > steps[-1] else []):
            if step == current_step:
                agent.load_tensors(current_tensors)
            elif step in paths:
                agent.load_tensors(load_checkpoint(paths[step], expected_agent=name, device=agent.device)[0])
            else:                      # pruned meanwhile (should not happen to a pinned one)
                continue
            if can_decode:
                rr = seeded_open_loop(model, episodes, r.context, r.horizon.size, discount, agent.device)
                preds.append((step, np.concatenate([rr.predicted[k] for k in sorted(rr.predicted)], -1)))
                mse.append(float(np.mean([v.mean() for v in rr.obs_mse.values()])))
            if can_spectrum:
                states = filter_episodes(model, episodes, agent.device)
                picked = visited(model, episodes, states, max_states, seed)
                if picked is not None:
                    st, act, _ = picked
                    s = spectral.model_spectrum(model, st, torch.as_tensor(act, device=agent.device,
                                                                          dtype=torch.float32), dt=dt)
                    radius.append((step, s.radius_distribution["median"], s.radius_distribution["q05"],
                                   s.radius_distribution["q95"]))
    finally:
        agent.load_tensors(current_tensors)
    data: dict = {"steps": [s for s, _ in preds] or [s for s, *_ in radius], "analysed_step": current_step}
    facts = {"pinned checkpoints": ", ".join(map(str, steps))
             + (f" (and the analysed {current_step})" if current_step > steps[-1] else "")}
    text = "The same real episodes, replayed through the checkpoints kept during training."
    order = None
    if preds:
        real = np.concatenate([r.real[k] for k in sorted(r.real)], -1)
        order = fourier.learning_order(preds, real, dt=dt or 1.0, band_edges=band_edges(real.shape[1], dt))
        unit = "Hz" if dt else "cycles/step"
        data.update(band_edges=order.band_edges.tolist(), relative_error=order.relative_error.tolist(),
                    threshold=order.threshold, first_below=list(order.first_below),
                    low_before_high=order.low_before_high, open_loop_mse=mse, unit=unit)
        verdict = {True: "yes", False: "no", None: "no band reached the threshold"}[order.low_before_high]
        facts["low frequencies learned before high ones"] = verdict
        for (lo, hi), first in zip(zip(order.band_edges[:-1], order.band_edges[1:]), order.first_below):
            facts[f"band {lo:.3g}-{hi:.3g} {unit} first below {order.threshold:g}"] = (
                f"step {first}" if first is not None else "never")
        # an order relative to where each band started, for models that reach the absolute threshold in no band
        halved = []
        for b in range(order.relative_error.shape[1]):
            hit = np.flatnonzero(order.relative_error[:, b] <= 0.5 * order.relative_error[0, b])
            halved.append(int(order.steps[hit[0]]) if hit.size and order.relative_error[0, b] > 0 else None)
        data["halved_by"] = halved
        for (lo, hi), when in zip(zip(order.band_edges[:-1], order.band_edges[1:]), halved):
            facts[f"band {lo:.3g}-{hi:.3g} {unit} error halved (vs first pinned) by"] = (
                f"step {when}" if when is not None else "never")
        text += (" Which frequency bands of the observations the model predicted well first (relative error "
                 f"per band below {order.threshold:g}, and halved from the first pinned checkpoint), the "
                 "spectral-bias question.")
    else:
        text += " (No learning order by frequency: the model has no decoder or no vector observations.)"
    if radius:
        data["spectral_radius"] = [{"step": s, "median": m, "q05": lo, "q95": hi} for s, m, lo, hi in radius]
        facts["median spectral radius, first / last checkpoint"] = f"{_fmt(radius[0][1], 4)} / {_fmt(radius[-1][1], 4)}"
        text += " The spectral radius of the learned transition at the visited states, per checkpoint."
    return Section("checkpoints", TITLES["checkpoints"], True, text, facts,
                   {"checkpoints": figs.checkpoints(order, radius, mse)}, data)


# ------------------------------------------------------------------------------------------
# The whole run
# ------------------------------------------------------------------------------------------


def analyze_run(run_dir: str | Path, *, checkpoint: int | None = None, episodes: int = 4,
                only: tuple[str, ...] = ANALYSES, context: int = 15, horizon: int = 50, max_states: int = 600,
                device: str | None = None, stage: Callable[[str], None] = lambda s: None,
                seed_offset: int = 60_000) -> RunAnalysis:
    """Run the analyses ``only`` on ``run_dir``; ``stage(name)`` is called as each stage starts."""
    from reverie.training.session import action_repeat_of, load_run

    seconds = {}
    t0 = time.perf_counter()
    stage("loading the run")
    agent, cfg, make, meta = load_run(run_dir, device=device)
    name = json.loads((Path(run_dir) / "run.json").read_text())["agent"]
    step = int(meta["step"])
    if checkpoint is not None and checkpoint != step:
        path = checkpoint_steps(run_dir).get(checkpoint)
        if path is None:
            raise AnalyzeError(f"{run_dir} has no checkpoint at step {checkpoint} (pruned meanwhile); steps "
                               f"available: {', '.join(map(str, sorted(checkpoint_steps(run_dir))))}")
        tensors, meta = load_checkpoint(path, expected_agent=name, device=agent.device)
        agent.load_tensors(tensors)
        step = int(meta["step"])
    # the checkpoints analysis loads other weights into the agent: keep a copy of these to restore after
    current = copy.deepcopy(agent.tensors()) if "checkpoints" in only else None
    model = agent.model
    dt = env_dt(cfg.run, action_repeat_of(cfg.run))
    seconds["load"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    stage(f"playing {episodes} episode(s)")
    base = cfg.run.seed + seed_offset
    eps = collect_episodes(agent, [functools.partial(make, base + i) for i in range(episodes)])
    seconds["episodes"] = time.perf_counter() - t0
    sections: dict[str, Section] = {}
    if model is None:
        for a in only:
            sections[a] = Section(a, TITLES[a], False, f"Not available: agent '{agent.name}' has no world model.")
        return RunAnalysis(Path(run_dir), name, cfg.run.env, cfg.run.obs, step, dt, episodes,
                           [len(e["action"]) for e in eps], [float(e["reward"].sum()) for e in eps], sections, seconds)
    states = filter_episodes(model, eps, agent.device)
    picked = visited(model, eps, states, max_states, cfg.run.seed)
    r = None
    for a in only:
        t0 = time.perf_counter()
        stage(TITLES[a].lower())
        if a == "open_loop" or (a in ("fourier", "checkpoints") and r is None and "open_loop" not in only):
            sec, r = open_loop_section(model, eps, context, horizon, agent.discount, agent.device)
            if a == "open_loop":
                sections[a] = sec
        if a == "spectral":
            sections[a] = (spectral_section(model, picked[0], picked[1], dt, agent.device) if picked else
                           Section(a, TITLES[a], False, "Not available: the episodes were too short."))
        elif a == "fourier":
            sections[a] = fourier_section(model, r, dt)
        elif a == "projection":
            sections[a] = (projection_section(model, picked[0], picked[2], seed=cfg.run.seed) if picked else
                           Section(a, TITLES[a], False, "Not available: the episodes were too short."))
        elif a == "checkpoints":
            sections[a] = checkpoints_section(agent, run_dir, name, eps, r, context, horizon, agent.discount, dt,
                                              step, current, max_states, cfg.run.seed)
        seconds[a] = time.perf_counter() - t0
    return RunAnalysis(Path(run_dir), name, cfg.run.env, cfg.run.obs, step, dt, episodes,
                       [len(e["action"]) for e in eps], [float(e["reward"].sum()) for e in eps], sections, seconds)
