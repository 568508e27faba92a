"""The one training driver: every way of training is a mode of it.

The driver is the one place that touches the run folder while a run trains: it resumes from the
newest intact checkpoint, opens the metrics logger, the progress display and the provenance record,
dispatches units of work to the mode, logs what they report, evaluates, checkpoints and finishes
(end-of-run artifacts and ``summary.json``). A *mode* (:class:`Mode`; :mod:`reverie.training.modes`)
contributes only what differs between ways of training: where the data comes from (environments
collected at a replay ratio or between refits, a fixed data set), which unit of work is next (a
collection step with the updates it owes, a stage of a staged pipeline, one update on a data set),
and the clock its budget counts in (environment steps, or updates for offline training). A
*topology* (:class:`Topology`) says whether this process is the only learner or one rank of a
data-parallel run (:mod:`reverie.training.distributed`): only the main rank writes, evaluates and
reports, and ranks agree on counters and parameters.

When to evaluate and checkpoint is the driver's: every ``run.eval_every`` and ``run.checkpoint_every``
on the mode's clock (and at the ``run.keep_checkpoints`` milestones), plus whenever a unit asks (a
staged pipeline evaluates when a stage says so and checkpoints after every unit). A
``KeyboardInterrupt`` (Ctrl-C, or SIGTERM through the CLI) checkpoints and is raised again, so the
same command resumes.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np
import torch

from reverie.agents.base import Agent, Refit
from reverie.config import to_dict
from reverie.envs.multitask import split_tasks
from reverie.failpoints import failpoint
from reverie.replay import Replay
from reverie.run_config import AgentConfig, RunConfig
from reverie.training.artifacts import write_end_of_run
from reverie.training.checkpoint import load_latest, save_checkpoint
from reverie.training.env_factory import EnvFactory, TaskFactory
from reverie.training.evaluate import run_episodes
from reverie.training.logger import Log, MetricsLogger, read_metrics
from reverie.training.progress import Display, Progress, Silent
from reverie.training.provenance import Provenance
from reverie.training.run_dir import RunFolder

__all__ = ["Counters", "Driver", "Mode", "RunResult", "SOLO", "Topology", "Unit"]


@dataclass
class Counters:
    """Progress of a run; saved with every checkpoint."""

    env_steps: int = 0
    agent_steps: int = 0
    updates: int = 0
    episodes: int = 0
    wall_time: float = 0.0
    last_eval: int = 0
    last_log: int = 0
    last_checkpoint: int = 0
    pinned: int = 0
    """How many of the run.keep_checkpoints evenly spaced points have a checkpoint kept for good."""


@dataclass
class RunResult:
    """What a finished (or interrupted) run reports."""

    run_dir: Path
    counters: Counters
    eval_return: float | None
    eval_return_std: float | None
    artifacts: dict[str, Path] = field(default_factory=dict)


@dataclass
class Unit:
    """What one unit of a mode's work did, for the driver to log."""

    episodes: list[tuple[int, float, int, int]] = field(default_factory=list)
    """``(clock, return, agent steps, environment index)`` of every episode that ended, with the clock it
    ended at (in a multitask run environment ``i`` plays task ``i % K``)."""
    train: list[dict[str, float]] = field(default_factory=list)
    """Metrics of the updates made; summarised and logged every ``run.log_every`` on the clock."""
    log: dict[str, Any] | None = None
    """A row to log now (a stage's report), with the run's wall time added."""
    say: str | None = None
    """A line for the console, after the run's wall time."""
    evaluate: bool = False
    """Evaluate now (besides every ``run.eval_every``)."""
    checkpoint: bool = False
    """Checkpoint now (besides every ``run.checkpoint_every``)."""
    failpoint: str | None = None
    """A failpoint passed once the unit is accounted for (logged, evaluated, checkpointed)."""


class Mode(Protocol):
    """What one way of training contributes to the driver (see the module docstring)."""

    name: str
    """``online``, ``staged`` or ``offline``: recorded in ``summary.json`` and the checkpoints."""
    replay: Replay
    interval_eval: bool
    """Whether the driver evaluates every ``run.eval_every`` on the clock (a staged pipeline evaluates
    only when a stage asks)."""

    def clock(self, c: Counters) -> int:
        """Where the run stands in the unit its budget counts (``run.steps``)."""

    def catch_up(self, c: Counters) -> int:
        """After a checkpoint was loaded (or none): move the counters past data kept beyond it and
        return how many agent steps that was."""

    def start(self, driver: Driver) -> None:
        """Open what the units need (environments)."""

    def done(self, c: Counters) -> bool:
        """Whether the run's budget (or its last stage) is complete."""

    def advance(self, driver: Driver) -> Unit:
        """One unit of work."""

    def close(self) -> None:
        """Release what :meth:`start` opened."""

    def summary(self) -> dict[str, Any]:
        """What this mode adds to ``summary.json``."""

    def mode_tensors(self) -> dict[str, dict[str, Any]]:
        """Tensors of the mode's own to checkpoint beside the agent's (a regulariser's anchor), by section."""

    def load_mode_tensors(self, tensors: dict[str, dict[str, Any]]) -> None:
        """Restore :meth:`mode_tensors` from a loaded checkpoint's tensors (sections it does not find: nothing saved)."""


class Topology(Protocol):
    """Whether this process trains alone or as one rank of several (see the module docstring)."""

    @property
    def is_main(self) -> bool:
        """Whether this process writes the run folder, evaluates and reports."""

    def replay_dir(self, folder: RunFolder) -> Path:
        """Where this process's replay lives."""

    def after_resume(self, driver: Driver) -> None:
        """After every process loaded the checkpoint: agree on counters, parameters and gradients."""

    def after_updates(self, agent: Agent) -> None:
        """After a unit that made updates: agree on what the updates changed from local data."""

    def summary(self, seed: int) -> dict[str, Any]:
        """What it adds to ``summary.json`` (``seed``: the run's configured seed)."""

    def finish(self) -> None:
        """After the main process wrote the end-of-run artifacts."""


class _Solo:
    """The only learner: the main process, nothing to agree on."""

    is_main = True

    def replay_dir(self, folder: RunFolder) -> Path:
        return folder.replay

    def after_resume(self, driver: Driver) -> None:
        pass

    def after_updates(self, agent: Agent) -> None:
        pass

    def summary(self, seed: int) -> dict[str, Any]:
        return {}

    def finish(self) -> None:
        pass


SOLO: Topology = _Solo()


_EPISODE_KEYS = {"step", "train/episode_return", "train/episode_length"}


def _kept_episode(until: int, row: dict) -> bool:
    """A metrics row of an episode that ended by step ``until`` (kept in a resumed run's replay)."""
    return row["step"] <= until and all(k in _EPISODE_KEYS or (k.startswith("train/") and k.endswith(
        "/episode_return")) for k in row)


class Driver:
    """Runs ``mode`` for ``agent`` in ``folder`` (whose writer lock the caller holds) to the end."""

    def __init__(self, agent: Agent, cfg: AgentConfig, run: RunConfig, folder: RunFolder, mode: Mode,
                 eval_env: EnvFactory | None, action_repeat: int, topology: Topology = SOLO,
                 say: Callable[[str], None] = print, notes: dict[str, float] | None = None, progress: bool = True):
        """``cfg``: the run's config as saved (checkpoints record it); ``run``: its run section as this process
        runs it (precision resolved, a data-parallel rank's own seed)."""
        self.agent, self.cfg, self.run, self.folder, self.mode = agent, cfg, run, folder, mode
        self.eval_env, self.action_repeat, self.topology, self.say = eval_env, action_repeat, topology, say
        self.notes = dict(notes or {})                   # facts of the run logged once when it starts
        self.show_progress = progress
        self.counters = Counters()
        self.latest_eval: tuple[float, float] | None = None
        self.provenance = Provenance(folder.path, self.run.device) if topology.is_main else None
        self.first_update_timed = not self.notes.get("run/compiled")   # a compiled update: say what compiling cost
        self._pending: list[dict[str, float]] = []      # update metrics not yet logged
        self.tasks = split_tasks(run.env)                # a multitask run's tasks, by index
        self.task_eval: dict[str, float] = {}            # a multitask run's latest return of each task

    # -- resuming ------------------------------------------------------------------------------
    def resume(self) -> tuple[bool, int]:
        """Load the newest intact checkpoint (a damaged one is named and the one before it loaded), then
        let the mode count the data kept after it. Returns (resumed, the clock of the checkpoint)."""
        found = load_latest(self.folder.checkpoints, expected_agent=self.agent.name, device=self.agent.device,
                            warn=lambda m: self.say(f"warning: {m}"))
        if found is not None:
            tensors, meta, _ = found
            self.agent.load_tensors(tensors)
            self.mode.load_mode_tensors(tensors)
            self.counters = Counters(**meta["counters"])
            if "rng" in meta:
                torch.set_rng_state(torch.tensor(meta["rng"], dtype=torch.uint8))
        c, mode = self.counters, self.mode
        at = mode.clock(c)
        kept = mode.catch_up(c)
        if self.provenance is not None:
            self.provenance.session["start_step"] = mode.clock(c)
        skipped = mode.replay.stats["files_skipped"]
        self.topology.after_resume(self)
        if found is None and not kept:
            return False, at
        self.notes.update({"resume/checkpoint_step": at, "resume/replay_files_skipped": skipped,
                           "resume/steps_kept_after_checkpoint": kept * self.run.num_envs * self.action_repeat})
        evals = [m for m in read_metrics(self.folder.metrics) if "eval/return" in m and m["step"] <= at]
        if evals:
            self.latest_eval = (evals[-1]["eval/return"], evals[-1].get("eval/return_std", 0.0))
        unit = "update" if mode.name == "offline" else "step"
        since = "no checkpoint" if found is None else f"the checkpoint at {unit} {at}"
        self.say(f"resuming {self.folder.path} at {unit} {mode.clock(c)} from {since} and {len(mode.replay)} replay "
                 f"steps" + (f" ({skipped} damaged replay file(s) skipped)" if skipped else ""))
        return True, at

    # -- the run -------------------------------------------------------------------------------
    def run_to_end(self) -> RunResult:
        """Resume, run the mode's units until it is done, finish; the run's result."""
        resumed, at = self.resume()
        c, mode, main = self.counters, self.mode, self.topology.is_main
        # Rows logged after the checkpoint describe rolled-back work: drop them, except episodes the replay kept.
        logger: Log = MetricsLogger(self.folder.path, resume_step=at if resumed else None,
                                    keep_after=functools.partial(_kept_episode, mode.clock(c))) if main else Silent()
        if self.notes:
            logger.log(mode.clock(c), self.notes)
        progress: Display = Silent() if not (main and self.show_progress) or mode.name == "staged" else Progress(
            total=self.run.steps, start=mode.clock(c), refits=isinstance(self.agent.schedule, Refit))
        if self.provenance is not None:
            self.provenance.save(mode.clock(c))
        started = time.perf_counter() - c.wall_time
        interrupted = False
        try:
            mode.start(self)
            while not mode.done(c):
                unit = mode.advance(self)
                c.wall_time = time.perf_counter() - started
                self._account(unit, logger, progress)
        except KeyboardInterrupt:
            interrupted = True
            self.say("interrupted: saving a checkpoint so the same command resumes")
        finally:
            progress.close()
            mode.close()
        c.wall_time = time.perf_counter() - started
        return self._finish(logger, interrupted)

    def _account(self, unit: Unit, logger: Log, progress: Display) -> None:
        """Log what ``unit`` did, evaluate and checkpoint when due."""
        c, run, clock = self.counters, self.run, self.mode.clock(self.counters)
        for at, ret, length, env in unit.episodes:
            c.episodes += 1
            row = {"train/episode_return": ret, "train/episode_length": length * self.action_repeat}
            if len(self.tasks) > 1:
                row[f"train/{self.tasks[env % len(self.tasks)]}/episode_return"] = ret
            logger.log(at, row)
            progress.episode(ret)
        if unit.train:
            self.topology.after_updates(self.agent)
            self._pending += unit.train
        if unit.log is not None:
            logger.log(clock, {**unit.log, "time/wall_s": c.wall_time})
        if unit.say is not None:
            self.say(f"[{c.wall_time:7.0f}s] {unit.say}")
        progress.update(clock, c.updates, c.wall_time, self.latest_eval)
        if clock - c.last_log >= run.log_every and self._pending:
            logger.log(clock, self._summarise(self._pending))
            self._pending = []
            c.last_log = clock
        if unit.evaluate or (self.mode.interval_eval and clock - c.last_eval >= run.eval_every):
            self.evaluate(logger)
        if unit.checkpoint or clock - c.last_checkpoint >= run.checkpoint_every or self._milestones() > c.pinned:
            self.checkpoint()
        if unit.failpoint is not None:
            failpoint(unit.failpoint)

    def _summarise(self, metrics: list[dict[str, float]]) -> dict[str, float]:
        c = self.counters
        keys = metrics[-1].keys()
        out = {f"train/{k}": float(np.nanmean([m[k] for m in metrics if k in m])) for k in keys}
        out["train/updates"] = c.updates
        out["train/updates_per_second"] = c.updates / max(c.wall_time, 1e-9)
        out["train/replay_steps"] = len(self.mode.replay)
        return out

    def updated(self, seconds: float) -> None:
        """A mode made an update that took ``seconds``: the first one of a compiled run says what it cost."""
        if not self.first_update_timed:
            self.first_update_timed = True
            self.say(f"compiled update: the first took {seconds:.1f} s, compiling included")

    # -- evaluation and checkpoints ------------------------------------------------------------
    def evaluate(self, logger: Log) -> None:
        """Greedy episodes in the evaluation environment (main process only; none without one)."""
        c, run = self.counters, self.run
        clock = self.mode.clock(c)
        c.last_eval = clock
        if self.eval_env is None:
            return
        if not self.topology.is_main:   # only the main rank evaluates; the others keep its bookkeeping
            self.latest_eval = self.latest_eval or (float("nan"), float("nan"))
            return
        seeds = [run.seed + 10_000 + 1000 * clock + i for i in range(run.eval_episodes)]
        if not isinstance(self.eval_env, TaskFactory):
            returns, _ = run_episodes(self.agent, [functools.partial(self.eval_env, s) for s in seeds])
            self.latest_eval = (float(returns.mean()), float(returns.std()))
            logger.log(clock, {"eval/return": self.latest_eval[0], "eval/return_std": self.latest_eval[1],
                               "eval/episodes": len(returns), "time/wall_s": c.wall_time})
            return
        # every task plays run.eval_episodes episodes; the run's return (and std) is over the tasks' means
        row: dict[str, float] = {}
        for k, name in enumerate(self.eval_env.names):
            returns, _ = run_episodes(self.agent, [functools.partial(self.eval_env.task(k), s) for s in seeds])
            row.update({f"eval/{name}/return": float(returns.mean()), f"eval/{name}/return_std": float(returns.std())})
        means = [row[f"eval/{name}/return"] for name in self.eval_env.names]
        self.latest_eval = (float(np.mean(means)), float(np.std(means)))
        self.task_eval = {k: v for k, v in row.items() if k.endswith("/return")}
        logger.log(clock, {"eval/return": self.latest_eval[0], "eval/return_std": self.latest_eval[1],
                           "eval/episodes": run.eval_episodes * len(means), **row, "time/wall_s": c.wall_time})

    def _milestones(self) -> int:
        """How many of the run.keep_checkpoints evenly spaced points of run.steps the run has passed."""
        n, steps, clock = self.run.keep_checkpoints, self.run.steps, self.mode.clock(self.counters)
        return sum(1 for i in range(1, n + 1) if clock * n >= steps * i)

    def checkpoint(self) -> None:
        """Flush the replay and save the agent, the counters and the RNG (only the main process writes)."""
        self.mode.replay.flush()
        c = self.counters
        clock = self.mode.clock(c)
        c.last_checkpoint = clock
        reached = self._milestones()
        pin = reached > c.pinned
        c.pinned = max(c.pinned, reached)
        if not self.topology.is_main:
            return
        meta = {"agent": self.agent.name, "config": to_dict(self.cfg), "counters": vars(c).copy(),
                "rng": torch.get_rng_state().tolist(), "mode": self.mode.name}
        save_checkpoint(self.folder.checkpoints, clock, {**self.agent.tensors(), **self.mode.mode_tensors()}, meta,
                        keep=2, pin=pin)
        if self.provenance is not None:
            self.provenance.save(clock)

    # -- the end -------------------------------------------------------------------------------
    def _finish(self, logger: Log, interrupted: bool) -> RunResult:
        """An interrupted run is checkpointed and the interrupt raised again; a finished one is evaluated
        (unless it just was), checkpointed, and its artifacts written."""
        c = self.counters
        clock = self.mode.clock(c)
        if interrupted:
            self.checkpoint()
            self._close(logger, clock)
            raise KeyboardInterrupt
        if self.eval_env is not None and (c.last_eval != clock or self.latest_eval is None):
            self.evaluate(logger)
        self.checkpoint()
        self._close(logger, clock)
        mean, std = self.latest_eval or (None, None)
        result = RunResult(self.folder.path, c, mean, std)
        if self.topology.is_main:
            self._write_artifacts(result, self.topology.summary(self.cfg.run.seed))
        self.topology.finish()
        return result

    def _close(self, logger: Log, clock: int) -> None:
        if self.provenance is not None:
            self.provenance.close(clock)
        logger.close()

    def _write_artifacts(self, result: RunResult, extra: dict[str, Any]) -> None:
        """The learning curve, a dream (for a model with a decoder and an environment) and summary.json."""
        run, c = self.run, result.counters
        dream = None if self.eval_env is None else functools.partial(self.eval_env, run.seed + 999)
        result.artifacts.update(write_end_of_run(self.folder.path, self.agent, dream, {
            "agent": self.agent.name, "mode": self.mode.name, "env": run.env, "obs": run.obs,
            "env_steps": c.env_steps, "updates": c.updates, "episodes": c.episodes,
            "wall_time_s": round(c.wall_time, 1), "eval/return": result.eval_return,
            "eval/return_std": result.eval_return_std, **self.task_eval, **self.mode.summary(), **extra}))
