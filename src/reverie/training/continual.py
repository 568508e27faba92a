"""Learning in a world that changes: a mode of the driver for task sequences and streams.

:class:`Continual` is :class:`~reverie.training.modes.Online` collection (the world model and the
behaviour updated on the incoming stream at the replay ratio, under the replay's fixed capacity and its
eviction, ``run.replay_eviction``: ``fifo`` or ``reservoir``) plus what ``run.continual`` asks for:

- a task sequence (``run.env = "A>B>C"``, :mod:`reverie.envs.sequence`): the training environments are
  reopened on the next task at each switch step; the unit that switches logs ``event/task_switch`` (the new
  task's index) and is checkpointed. Every task is evaluated (``run.eval_episodes`` greedy episodes each)
  before any training, at each switch and at the end: row ``i`` of the score matrix ``R[i][j]`` is the
  return on task ``j`` after training on task ``i``; each row is logged (``continual/after_task``,
  ``continual/return/J``) and the whole matrix written to ``continual.json`` in the run folder. A resumed
  run takes its rows back from the metrics kept up to its checkpoint and trains on the task of its step.
- ``regularizer`` ``l2`` / ``ewc``: after every update the agent's weights are pulled towards the anchor
  set at the last switch (:class:`~reverie.nn.anchor.WeightAnchor`); anchor and Fisher are checkpointed.
- ``updates_per_second``: at most that many updates per second of the run's wall time (DayDreamer's
  setting: the learner keeps pace with the robot, not the other way round).
- ``detect_change``: every ``detect_every`` agent steps the world model's one-step prediction error on the
  last ``run.seq_len`` incoming steps (:func:`~reverie.analysis.change.one_step_error`) is logged as
  ``train/change/error`` and fed to a Page-Hinkley test; when it fires, ``event/world_change`` is logged at
  that step. (The detector restarts with a new baseline after a resume.)
"""

from __future__ import annotations

import collections
import functools
import json
from typing import Any

from pathlib import Path

import numpy as np

from reverie.agents.base import Agent, AgentBase
from reverie.analysis.change import PageHinkley, one_step_error
from reverie.config import ConfigError
from reverie.envs.sequence import TaskSequence
from reverie.io import atomic_write_text
from reverie.models.batch import Batch
from reverie.nn.anchor import WeightAnchor
from reverie.replay import Replay
from reverie.run_config import RunConfig
from reverie.training.driver import Counters, Driver, Unit
from reverie.training.env_factory import EnvFactory
from reverie.training.evaluate import run_episodes
from reverie.training.logger import read_metrics
from reverie.training.modes import Online

__all__ = ["SCORES_FILE", "Continual", "wants_continual"]

_STEP_KEYS = ("action", "reward", "is_first", "is_last", "is_terminal")

#: The score matrix's file in the run folder.
SCORES_FILE = "continual.json"


def wants_continual(run: RunConfig, sequence: TaskSequence) -> bool:
    """Whether a run needs :class:`Continual` rather than plain :class:`Online` collection."""
    c = run.continual
    return (len(sequence.tasks) > 1 or c.regularizer != "none" or c.updates_per_second is not None
            or c.detect_change)


def _anchor(agent: Agent, run: RunConfig) -> WeightAnchor | None:
    c = run.continual
    if c.regularizer == "none":
        return None
    if not isinstance(agent, AgentBase):
        raise ConfigError(f"run.continual.regularizer={c.regularizer} pulls the weights of an agent's modules, "
                          f"and agent '{agent.name}' keeps none in AgentBase.modules; set it to none")
    params = {f"{m}.{n}": p for m, module in agent.modules.items() for n, p in module.named_parameters()}
    return WeightAnchor(params, c.regularizer, c.reg_weight, c.fisher_decay)


class Continual(Online):
    """Online collection through a task sequence, with a regulariser, an update budget and a change
    detector (see the module docstring)."""

    def __init__(self, run: RunConfig, tasks: list[EnvFactory], sequence: TaskSequence, action_repeat: int,
                 replay: Replay, agent: Agent):
        super().__init__(run, tasks[0], action_repeat, replay, agent)
        self.tasks, self.sequence = tasks, sequence
        self.task = -1                                   # the task the environments are open on
        self.rows: list[dict[str, Any]] = []             # score rows: after_task, step, returns
        self.anchor = _anchor(agent, run)
        c = run.continual
        self.detector = PageHinkley(c.detect_threshold, c.detect_slack) if c.detect_change else None
        self.window: collections.deque[dict[str, np.ndarray]] = collections.deque(maxlen=run.seq_len)
        self.scores_path: Path | None = None

    # -- the driver's calls --------------------------------------------------------------------
    def start(self, driver: Driver) -> None:
        self.scores_path = driver.folder.path / SCORES_FILE
        self.rows = [{"after_task": int(m["continual/after_task"]), "step": int(m["continual/at_step"]),
                      "returns": [m.get(f"continual/return/{j}") for j in range(len(self.tasks))]}
                     for m in read_metrics(driver.folder.metrics) if "continual/after_task" in m]
        self.state = driver.agent.init_state(self.run.num_envs)

    def advance(self, driver: Driver) -> Unit:
        c, agent = driver.counters, driver.agent
        log: dict[str, float] = {}
        checkpoint = False
        index = self.sequence.index_at(c.env_steps)
        if index != self.task:
            fresh = self.task < 0                        # the first unit of this session
            scored = {r["after_task"] for r in self.rows}
            if fresh and c.env_steps == 0 and -1 not in scored:
                log.update(self._score(driver, -1))      # before any training: every task's baseline
            owed = [k for k in range(index) if k not in scored]   # a resume may land past an unscored switch
            for k in owed:
                log.update(self._score(driver, k))
            if not fresh or owed:                        # a switch (seen now, or rolled back by the resume)
                if self.anchor is not None:
                    self.anchor.set_anchor()
                log["event/task_switch"] = index
                checkpoint = True
                driver.say(f"switching to task {index}: {self.sequence.tasks[index]}")
            self._switch(c, index, agent)
        ended, metrics = self._collect(driver, act=c.agent_steps >= self._prefill())
        metrics += self._watch(driver, log)
        if self.done(c):
            log.update(self._score(driver, len(self.tasks) - 1))
        return Unit(episodes=ended, train=metrics, log=log or None, checkpoint=checkpoint)

    def mode_tensors(self) -> dict[str, dict[str, Any]]:
        return {} if self.anchor is None else {"continual_anchor": self.anchor.state_dict()}

    def load_mode_tensors(self, tensors: dict[str, dict[str, Any]]) -> None:
        if self.anchor is not None and "continual_anchor" in tensors:
            self.anchor.load_state_dict(tensors["continual_anchor"])

    def summary(self) -> dict[str, Any]:
        return {"tasks": list(self.sequence.tasks), "switch_every": self.sequence.switch_every}

    # -- pieces --------------------------------------------------------------------------------
    def _switch(self, c: Counters, index: int, agent: Agent) -> None:
        """Reopen the training environments on task ``index`` (the agent's state starts over)."""
        self.close()
        self.task, self.make_env = index, self.tasks[index]
        self._open(c)
        self.state = agent.init_state(self.run.num_envs)
        self.window.clear()

    def _owed(self, c: Counters, done_since_prefill: int) -> int:
        owed = super()._owed(c, done_since_prefill)
        rate = self.run.continual.updates_per_second
        if rate is None:
            return owed
        return min(owed, int(rate * c.wall_time) + 1 - c.updates)   # the first update is always allowed

    def _after_update(self, driver: Driver) -> dict[str, float]:
        if self.anchor is None:
            return {}
        self.anchor.observe_gradients()
        return {"reg/penalty": self.anchor.pull()}

    def _score(self, driver: Driver, after: int) -> dict[str, float]:
        """Evaluate every task; row ``after`` of the score matrix (-1: before training), logged and written."""
        c, run = driver.counters, self.run
        returns = []
        for j, make in enumerate(self.tasks):
            seeds = [run.seed + 20_000 + 1000 * j + i for i in range(run.eval_episodes)]
            got, _ = run_episodes(driver.agent, [functools.partial(make, s) for s in seeds])
            returns.append(float(got.mean()))
        self.rows = [r for r in self.rows if r["after_task"] != after]
        self.rows.append({"after_task": after, "step": self.clock(c), "returns": returns})
        self._write()
        driver.say(f"scores after task {after}: " + ", ".join(f"{r:.1f}" for r in returns))
        return {"continual/after_task": after, "continual/at_step": self.clock(c), **{f"continual/return/{j}": r for j, r in enumerate(returns)}}

    def _write(self) -> None:
        if self.scores_path is None:
            return
        rows = sorted(self.rows, key=lambda r: r["after_task"])
        initial = next((r["returns"] for r in rows if r["after_task"] == -1), None)
        matrix = [r for r in rows if r["after_task"] >= 0]
        atomic_write_text(self.scores_path, json.dumps({
            "tasks": list(self.sequence.tasks), "switch_every": self.sequence.switch_every,
            "switch_steps": list(self.sequence.switches), "eval_episodes": self.run.eval_episodes,
            "initial": initial, "R": [r["returns"] for r in matrix], "R_steps": [r["step"] for r in matrix],
            "R_after_task": [r["after_task"] for r in matrix]}, indent=1) + "\n")

    def _watch(self, driver: Driver, log: dict[str, float]) -> list[dict[str, float]]:
        """Keep the incoming window; every ``detect_every`` agent steps measure the prediction error and test
        it (a fired test goes into ``log``). Returns the error as a metric when measured."""
        col, agent, c = self.collector, driver.agent, driver.counters
        if self.detector is None or col is None or agent.model is None:
            return []
        if col.recorded is not None:   # stream 0 of the step just stored
            self.window.append({k: np.asarray(col.recorded[k])[0] for k in (*agent.obs_spec, *_STEP_KEYS)})
        if len(self.window) < self.run.seq_len or c.agent_steps % self.run.continual.detect_every:
            return []
        data = {k: np.stack([s[k] for s in self.window])[None] for k in self.window[0]}   # [1, T, ...]
        batch = Batch.build(data, agent.obs_spec, agent.act_spec, agent.device)
        error = float(np.nanmean(one_step_error(agent.model, batch.obs, batch.action, batch.is_first).cpu()))
        if self.detector.update(error):
            log["event/world_change"] = error
            driver.say(f"world change detected at step {c.env_steps} (one-step error {error:.4g})")
        return [{"change/error": error}]
