"""``reverie analyze``, the shell: open a run, play episodes, run every analysis, time the stages.

It opens a run folder's checkpoint (the newest, or ``--checkpoint STEP``), plays ``--episodes`` greedy
episodes with the agent's own policy in the run's environment (seeded), filters them with the model and
runs every analysis the model's capabilities allow (each from :mod:`reverie.analysis`):

- ``open_loop``: :func:`~reverie.analysis.open_loop.open_loop_error` on the episodes;
- ``spectral``: DMD of the model's free-running imagination (:mod:`reverie.analysis.modes`, the report's
  headline) and :func:`~reverie.analysis.spectral.model_spectrum` at the visited states, each with the
  action really taken next (needs ``transition``);
- ``fourier``: :func:`~reverie.analysis.fourier.compare_spectra` of the real against the open-loop
  predicted vector observations (needs ``decoder`` and vector observations; pixels are skipped);
- ``projection``: :func:`~reverie.analysis.projection.projection_distortion` of the visited features
  against the JL bound, and :func:`~reverie.analysis.projection.projection_r2` of the real reward (and the
  model's value) from the projected features;
- ``checkpoints``: over the checkpoints pinned during training (``run.keep_checkpoints``, at least two),
  :func:`~reverie.analysis.fourier.learning_order` per frequency band and the spectral radius per checkpoint;
- ``fidelity``: dream fidelity (:mod:`.fidelity`): fixed policies and the agent's own played for ``--episodes``
  episodes each in the environment and in the model's dream, ranked on both sides (needs ``reward`` and
  ``cont``);
- ``experts``: for mixture-of-experts dynamics (needs ``routing``), each task's share of inputs per expert
  (:mod:`.experts`); left out of the report of a model without it unless ``--only`` names it.

The sections are built in :mod:`.sections`, :mod:`.dynamics` and :mod:`.over_training`; :mod:`.html`
writes them out. Run folders are reached through a :class:`RunAccess`: the training shell's own functions
(open a run, list and load its checkpoints, play episodes), handed in by the caller, so that
``reverie.analysis`` never imports ``reverie.training``. What the report needs of the environment (its
time step, the names of its observations) it reads from the env's declared ``timing`` and ``obs_names``.
Nothing here writes into the run folder, and no lock is taken, so a run may be analysed while it trains.
"""

from __future__ import annotations

import copy
import difflib
import functools
import json
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from reverie.agents.base import Agent
from reverie.analysis.report.dynamics import spectral_section
from reverie.analysis.report.experts import experts_section
from reverie.analysis.report.fidelity import fidelity_section
from reverie.analysis.report.over_training import Checkpoints, checkpoints_section
from reverie.analysis.report.sections import (
    ANALYSES,
    TITLES,
    Section,
    filter_episodes,
    fourier_section,
    open_loop_section,
    projection_section,
    visited,
)
from reverie.config import ConfigError
from reverie.envs.multitask import split_tasks
from reverie.envs.spaces import Env, Timing
from reverie.models.base import ROUTING, has
from reverie.run_config import RunConfig
from reverie.specs import ArraySpec

__all__ = ["ANALYSES", "AnalyzeError", "RunAccess", "RunAnalysis", "Section", "StageProgress", "analyze_run",
           "check_inputs", "collect_episodes", "parse_only", "pinned_steps"]


class AnalyzeError(ConfigError):
    """A bad input to ``reverie analyze`` (said in one sentence; a :class:`ConfigError`, so the CLI prints it)."""


class RunSettings(Protocol):
    """An agent's resolved config, as far as the report reads it."""

    @property
    def run(self) -> RunConfig: ...


#: ``seed -> Env``: the run's environment, as training made it (action repeat and time limit included).
EnvFactory = Callable[[int], Env]


@dataclass(frozen=True)
class RunAccess:
    """How the report reaches run folders: the training shell's own functions, handed in by the caller (the
    CLI passes ``reverie.training``'s), so that ``reverie.analysis`` never imports ``reverie.training``."""

    open_run: Callable[..., tuple[Agent, RunSettings, EnvFactory, dict]]
    """``(run_dir, device=None) -> (agent with the newest intact checkpoint loaded, config, env factory,
    checkpoint meta with "step")``."""
    checkpoints: Callable[[str | Path], list[Path]]
    """``run_dir -> JSON paths of its complete checkpoints, oldest step first``; a folder that is not a run
    raises its one-sentence error."""
    load_checkpoint: Callable[..., tuple[dict, dict]]
    """``(path, expected_agent, device=...) -> (tensors, meta with "step")``."""
    play: Callable[..., tuple[np.ndarray, list[dict] | None]]
    """``(agent, env_fns, explore=False, record=True, max_steps=...) -> (returns [N], episodes)``: one
    episode per environment, ``{key: [T, ...]}`` with model-space ``action[t]`` leading into step t."""


class StageProgress:
    """A rich progress bar over the stages in a terminal, one line per stage elsewhere (logs, CI)."""

    def __init__(self, label: str, total: int) -> None:
        from rich.console import Console

        self.label, self.total, self.done = label, total, 0
        self.console = Console(stderr=True)
        self.live = self.console.is_terminal
        self.started = time.perf_counter()

    def __enter__(self) -> StageProgress:
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

    def __exit__(self, *exc: object) -> None:
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
    timing: Timing
    episodes: int
    episode_lengths: list[int]
    episode_returns: list[float]
    sections: dict[str, Section]
    seconds: dict[str, float] = field(default_factory=dict)  # stage -> wall seconds (filled by the caller)

    @property
    def dt(self) -> float | None:
        """Seconds per agent step, or None when the environment does not say (times are then in steps)."""
        return self.timing.seconds

    @property
    def headline(self) -> dict[str, Any] | None:
        """The spectral section's headline (method, period, decay rate, sentence), when it ran."""
        s = self.sections.get("spectral")
        return s.data.get("headline") if s is not None and s.applies else None


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


def checkpoint_steps(access: RunAccess, run_dir: str | Path) -> dict[int, Path]:
    """Step -> JSON path of every complete checkpoint of the run (``ckpt-<step>.json``)."""
    return {int(p.name[5:-5]): p for p in access.checkpoints(run_dir)}


def pinned_steps(access: RunAccess, run_dir: str | Path) -> list[int]:
    """Steps of the checkpoints pinned for good during training (``run.keep_checkpoints``), oldest first."""
    out: list[int] = []
    for marker in access.checkpoints(run_dir):
        try:
            record = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if record.get("pinned"):
            out.append(int(record["step"]))
    return out


def check_inputs(access: RunAccess, run_dirs: list[str], checkpoint: int | None, episodes: int,
                 only: str | None) -> tuple[str, ...]:
    """Check everything the user typed, before anything is loaded; returns the analyses to run."""
    if episodes < 1:
        raise AnalyzeError(f"--episodes must be at least 1, got {episodes}")
    chosen = parse_only(only)
    for run_dir in run_dirs:
        steps = checkpoint_steps(access, run_dir)        # a folder that is not a run says so here
        if checkpoint is not None and checkpoint not in steps:
            have = ", ".join(map(str, sorted(steps))) or "none"
            raise AnalyzeError(f"{run_dir} has no checkpoint at step {checkpoint}; steps available: {have}")
    return chosen


# ------------------------------------------------------------------------------------------
# Data: episodes and what the environment says about itself
# ------------------------------------------------------------------------------------------


def collect_episodes(access: RunAccess, agent: Agent, env_fns: list[Callable[[], Env]],
                     max_steps: int = 2000) -> list[dict[str, np.ndarray]]:
    """One greedy episode per environment, side by side: ``[{key: [T, ...], action, reward, is_first,
    is_terminal}]`` with model-space ``action[t]`` leading into step t (zeros at the first step)."""
    _, episodes = access.play(agent, env_fns, explore=False, record=True, max_steps=max_steps)
    assert episodes is not None, "play returns the episodes it was asked to record"
    keys = (*agent.obs_spec, "action", "reward", "is_first", "is_terminal")
    return [{k: ep[k] for k in keys} for ep in episodes]


def describe_env(make: EnvFactory, seed: int) -> tuple[Timing, dict[str, tuple[str, ...]]]:
    """The environment's declared time step (action repeat included) and observation names."""
    env = make(seed)
    try:
        return env.timing, env.obs_names
    finally:
        env.close()


def _names(model_keys: Mapping[str, ArraySpec], obs_names: dict[str, tuple[str, ...]]) -> tuple[str, ...] | None:
    """Names of the vector observations' dimensions in sorted key order, as the decoded ones concatenate."""
    keys = sorted(k for k, spec in model_keys.items() if not spec.is_image)
    if not all(k in obs_names for k in keys):
        return None
    return tuple(n for k in keys for n in obs_names[k])


# ------------------------------------------------------------------------------------------
# The whole run
# ------------------------------------------------------------------------------------------


def analyze_run(access: RunAccess, run_dir: str | Path, *, checkpoint: int | None = None, episodes: int = 4,
                only: tuple[str, ...] = ANALYSES, context: int = 15, horizon: int = 50, max_states: int = 600,
                device: str | None = None, stage: Callable[[str], None] = lambda s: None,
                seed_offset: int = 60_000) -> RunAnalysis:
    """Run the analyses ``only`` on ``run_dir``; ``stage(name)`` is called as each stage starts."""
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    stage("loading the run")
    agent, cfg, make, meta = access.open_run(run_dir, device=device)
    name = agent.name
    step = int(meta["step"])
    paths = checkpoint_steps(access, run_dir)
    if checkpoint is not None and checkpoint != step:
        if checkpoint not in paths:
            raise AnalyzeError(f"{run_dir} has no checkpoint at step {checkpoint} (pruned meanwhile); steps "
                               f"available: {', '.join(map(str, sorted(paths)))}")
        tensors, meta = access.load_checkpoint(paths[checkpoint], name, device=agent.device)
        agent.load_tensors(tensors)
        step = int(meta["step"])
    # the checkpoints analysis loads other weights into the agent: keep a copy of these to restore after
    current = copy.deepcopy(agent.tensors()) if "checkpoints" in only else None
    model = agent.model
    timing, obs_names = describe_env(make, cfg.run.seed)
    dt = timing.seconds
    seconds["load"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    stage(f"playing {episodes} episode(s)")
    base = cfg.run.seed + seed_offset
    eps = collect_episodes(access, agent, [functools.partial(make, base + i) for i in range(episodes)])
    seconds["episodes"] = time.perf_counter() - t0
    sections: dict[str, Section] = {}

    def result() -> RunAnalysis:
        return RunAnalysis(Path(run_dir), name, cfg.run.env, cfg.run.obs, step, timing, episodes,
                           [len(e["action"]) for e in eps], [float(e["reward"].sum()) for e in eps], sections,
                           seconds)

    if model is None:
        for a in only:
            sections[a] = Section(a, TITLES[a], False, f"Not available: agent '{agent.name}' has no world model.")
        return result()
    states = filter_episodes(model, eps, agent.device)
    picked = visited(model, eps, states, max_states, cfg.run.seed)
    short = "Not available: the episodes were too short."
    r = None
    for a in only:
        t0 = time.perf_counter()
        stage(TITLES[a].lower())
        if a == "open_loop" or (a in ("fourier", "checkpoints") and r is None and "open_loop" not in only):
            sec, r = open_loop_section(model, eps, context, horizon, agent.discount, agent.device)
            if a == "open_loop":
                sections[a] = sec
        if a == "spectral":
            sections[a] = (spectral_section(model, picked[0], picked[1], dt, agent.device,
                                            names=_names(model.obs_spec, obs_names), seed=cfg.run.seed)
                           if picked else Section(a, TITLES[a], False, short))
        elif a == "fourier":
            sections[a] = fourier_section(model, r, dt)
        elif a == "projection":
            sections[a] = (projection_section(model, picked[0], picked[2], seed=cfg.run.seed) if picked else
                           Section(a, TITLES[a], False, short))
        elif a == "checkpoints":
            assert current is not None, "the tensors are kept when the checkpoints analysis is chosen"
            ckpts = Checkpoints(paths=checkpoint_steps(access, run_dir), pinned=pinned_steps(access, run_dir),
                                load=lambda path: access.load_checkpoint(path, name, device=agent.device)[0])
            sections[a] = checkpoints_section(agent, ckpts, eps, r, agent.discount, dt, step, current, max_states,
                                              cfg.run.seed)
        elif a == "experts":   # shown for a model that routes, or when --only asks for it
            if has(model, ROUTING) or only != ANALYSES:
                sections[a] = experts_section(model, eps, states, split_tasks(cfg.run.env), agent.device)
        elif a == "fidelity":
            env = make(base + episodes)
            try:
                sections[a] = fidelity_section(agent, env, episodes, cfg.run.time_limit or 1000, base)
            finally:
                env.close()
        seconds[a] = time.perf_counter() - t0
    return result()
