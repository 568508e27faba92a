"""The ways of training, as modes of the one driver (:mod:`reverie.training.driver`).

Each mode says only what differs: where batches come from, which unit of work is next, and the clock
its budget counts in.

- :class:`Online`: environments collected one agent step at a time, uniformly random actions for
  the first ``run.prefill`` steps, then the agent's own; the updates the agent's declared schedule
  owes are made while the environments step (:class:`~reverie.agents.base.ReplayRatio`: so that
  updates = agent steps x ``num_envs`` x ``run.train_ratio`` / (batch x sequence length);
  :class:`~reverie.agents.base.Refit`: a refit on everything stored every ``every`` agent steps).
  Clock: environment steps.
- :class:`Staged`: random-policy collection (each action held as the agent's schedule declares) until
  ``run.prefill`` agent steps are stored, then the
  agent's stages one unit at a time (:class:`~reverie.agents.base.Staged`: ``advance(work)``), each
  checkpointed, evaluated when the stage says so; a stage may ask for more data
  (:class:`~reverie.agents.base.Collection`), collected the same way with the agent acting and held
  random actions mixed in. Clock: environment steps (stages that act in the real environment count
  theirs).
- :class:`Offline`: updates (or refits) on a fixed replay, no environment stepping. Clock: updates. A
  staged agent whose stages learn from the replay alone (``Staged(offline=True)``: C-SWM) runs its
  stages on the dataset instead of its own collection; the clock then counts its units.

Data-parallel training is not a mode but a topology of any gradient-update mode
(:mod:`reverie.training.distributed`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from reverie.agents.base import Agent, Refit, ReplayRatio, StageReport, StageWork
from reverie.agents.base import Staged as StagedSchedule
from reverie.envs.multitask import split_tasks
from reverie.envs.random_actions import HeldRandomActions, RandomRuns
from reverie.failpoints import failpoint
from reverie.models.batch import Batch
from reverie.replay import Replay
from reverie.run_config import RunConfig
from reverie.training.collect import Collector, EnvBatch, open_envs, parallel_collection
from reverie.training.driver import Counters, Driver, Unit
from reverie.training.env_factory import EnvFactory

__all__ = ["Offline", "Online", "Staged", "collection_replay"]


def collection_replay(run: RunConfig, directory: Path) -> Replay:
    """The replay a collecting mode writes (this process holds the run folder's lock); a multitask run's
    batches hold an equal share of every task (stream ``i`` collects task ``i % K``)."""
    return Replay(directory, capacity=run.replay_capacity, seq_len=run.seq_len, chunk_size=run.replay_chunk,
                  eviction=run.replay_eviction, seed=run.seed, owner=True, groups=len(split_tasks(run.env)))


def _no_extras(agent: Agent, n: int) -> dict[str, np.ndarray]:
    """Zeros for the agent's extras on steps it did not act on (prefill)."""
    return {k: np.zeros((n, *spec.shape), spec.dtype) for k, spec in agent.extras_spec.items()}


def _batch(agent: Agent, replay: Replay, batch_size: int) -> Batch:
    return Batch.build(replay.sample(batch_size), agent.obs_spec, agent.act_spec, agent.device, agent.extras_spec)


class _Collecting:
    """What :class:`Online` and :class:`Staged` share: collection into a replay, clocked in env steps."""

    name = "online"
    interval_eval = True

    def __init__(self, run: RunConfig, make_env: EnvFactory, action_repeat: int, replay: Replay,
                 vector_env: EnvBatch | None = None):
        self.run, self.make_env, self.action_repeat, self.replay = run, make_env, action_repeat, replay
        self.vector_env = vector_env
        self.collector: Collector | None = None
        self.rng = np.random.default_rng(run.seed)
        self.state: Any = None   # the agent's recurrent state of the collection environments
        self.hold = (1, 1)       # agent steps each random action is held for
        self.random: HeldRandomActions | None = None
        self.explorer: RandomRuns | None = None   # random runs mixed into the agent's actions

    def clock(self, c: Counters) -> int:
        return c.env_steps

    def catch_up(self, c: Counters) -> int:
        """Move the counters past the agent steps the replay holds beyond them (a kill came after the
        checkpoint; those steps were taken and stay in the replay, so they count); return how many."""
        streams = self.run.num_envs
        extra = self.replay.clock // streams - c.agent_steps
        if extra <= 0:
            return 0
        c.episodes += self.replay.count_from(c.agent_steps * streams, "is_last")
        c.agent_steps += extra
        c.env_steps += extra * streams * self.action_repeat
        return extra

    def _open(self, c: Counters) -> None:
        envs = self.vector_env if self.vector_env is not None else open_envs(self.run, self.make_env, c.agent_steps)
        self.rng = np.random.default_rng(self.run.seed + c.agent_steps)
        self.collector = Collector(envs, self.replay)
        self.random = (HeldRandomActions(self.collector.act_spec, self.run.num_envs, self.hold, self.rng)
                       if self.hold != (1, 1) else None)

    def _collect(self, driver: Driver, act: bool) -> tuple[list[tuple[int, float, int, int]], list[dict[str, float]]]:
        """One agent step of every environment (the agent's action if ``act``, else a random one) and the
        updates owed meanwhile; returns the episodes that ended and the updates' metrics."""
        c, run, col, agent = driver.counters, self.run, self.collector, driver.agent
        assert col is not None, "start() opens the environments"
        step = col.current(c.env_steps)
        if act:
            env_action, _, self.state, extras = agent.act(step, self.state, explore=True)
            if self.explorer is not None:
                env_action = self.explorer(env_action)
        else:
            env_action = self.random() if self.random is not None else col.act_spec.sample(self.rng, run.num_envs)
            extras = _no_extras(agent, run.num_envs)
        # what the agent computed on this step (a search policy, say) is stored beside it
        ended = [(c.env_steps, ret, length, env) for ret, length, env in col.record(step, extras)]
        col.send(env_action)
        c.agent_steps += 1
        c.env_steps += run.num_envs * self.action_repeat
        metrics = self._updates(driver) if c.agent_steps >= self._prefill() else []
        col.receive()
        failpoint("loop.collect")
        return ended, metrics

    def _prefill(self) -> int:
        return self.run.prefill

    def _updates(self, driver: Driver) -> list[dict[str, float]]:
        return []

    def close(self) -> None:
        if self.collector is not None:
            self.collector.close()
            self.collector = None

    def mode_tensors(self) -> dict[str, dict[str, Any]]:
        return {}

    def load_mode_tensors(self, tensors: dict[str, dict[str, Any]]) -> None:
        pass


class Online(_Collecting):
    """Collection with the agent's policy and the updates its schedule owes (see the module docstring)."""

    def __init__(self, run: RunConfig, make_env: EnvFactory, action_repeat: int, replay: Replay, agent: Agent,
                 vector_env: EnvBatch | None = None):
        super().__init__(run, make_env, action_repeat, replay, vector_env)
        self.schedule = agent.schedule
        if not isinstance(self.schedule, (ReplayRatio, Refit)):
            raise TypeError(f"agent '{agent.name}' declares an unknown schedule {self.schedule!r}")

    def _prefill(self) -> int:
        # sequences run along one stream: each needs seq_len steps before the first batch
        return max(self.run.prefill, self.run.seq_len)

    def start(self, driver: Driver) -> None:
        self._open(driver.counters)
        self.state = driver.agent.init_state(self.run.num_envs)

    def done(self, c: Counters) -> bool:
        return c.env_steps >= self.run.steps

    def advance(self, driver: Driver) -> Unit:
        ended, metrics = self._collect(driver, act=driver.counters.agent_steps >= self._prefill())
        return Unit(episodes=ended, train=metrics)

    def _updates(self, driver: Driver) -> list[dict[str, float]]:
        """The updates the agent's declared schedule owes by now."""
        c, run, agent = driver.counters, self.run, driver.agent
        done_since_prefill = c.agent_steps - self._prefill() + 1
        if isinstance(self.schedule, Refit):
            if (done_since_prefill - 1) % self.schedule.every:
                return []
            c.updates += 1
            return [agent.refit(self.replay)]
        out = []
        for _ in range(max(self._owed(c, done_since_prefill), 0)):
            batch = _batch(agent, self.replay, run.batch_size)
            started = time.perf_counter()
            metrics = agent.update(batch)
            driver.updated(time.perf_counter() - started)
            c.updates += 1
            out.append({**metrics, **self._after_update(driver)})
            failpoint("loop.update")
        return out

    def _owed(self, c: Counters, done_since_prefill: int) -> int:
        """Updates the replay ratio owes after ``done_since_prefill`` agent steps of training."""
        run = self.run
        return int(done_since_prefill * run.num_envs * run.train_ratio / (run.batch_size * run.seq_len)) - c.updates

    def _after_update(self, driver: Driver) -> dict[str, float]:
        """What follows every update (a subclass's regulariser); metrics to log beside the update's."""
        return {}

    def summary(self) -> dict[str, Any]:
        return {}


def _stage_unit(driver: Driver, work: StageWork) -> tuple[Unit, StageReport]:
    """One unit of a staged agent's work, checkpointed and logged; and the agent's report of it."""
    c = driver.counters
    work.directory.mkdir(exist_ok=True)
    report = driver.agent.advance(work)
    c.updates += 1
    c.env_steps += report.env_steps
    shown = ", ".join(f"{k}={v:.4g}" for k, v in list(report.metrics.items())[:4] if isinstance(v, (int, float)))
    return Unit(log={**report.metrics, "train/updates": c.updates}, say=f"{report.stage}: {shown}",
                evaluate=report.evaluate, checkpoint=True, failpoint="loop.stage"), report


class Staged(_Collecting):
    """Random-policy collection, then the agent's stages and the collections they ask for (see the module
    docstring)."""

    name = "staged"
    interval_eval = False

    def __init__(self, run: RunConfig, make_env: EnvFactory, action_repeat: int, replay: Replay, stages: Path):
        super().__init__(run, make_env, action_repeat, replay)
        self.stages = stages
        self.finished = False
        self.until = run.prefill   # agent steps to have collected before the next stage: the prefill, or a stage's ask
        self.explore = 0.0

    def start(self, driver: Driver) -> None:
        schedule = driver.agent.schedule
        self.hold = schedule.hold if isinstance(schedule, StagedSchedule) else (1, 1)
        if driver.counters.agent_steps < self.run.prefill:
            self._open(driver.counters)

    def done(self, c: Counters) -> bool:
        return self.finished

    def advance(self, driver: Driver) -> Unit:
        c, run = driver.counters, self.run
        if c.agent_steps < self.until:   # the data set: random actions before the stages, the agent's after
            if self.collector is None:   # a stage asked for more: the environments open anew
                self._open(c)
                self.state = driver.agent.init_state(run.num_envs)
                self.explorer = (RandomRuns(driver.agent.act_spec, run.num_envs, self.hold, self.explore, self.rng)
                                 if self.explore > 0 else None)
            ended, _ = self._collect(driver, act=c.agent_steps >= run.prefill)
            collected = c.agent_steps >= self.until
            if collected:
                self.close()
            return Unit(episodes=ended, checkpoint=collected)
        work = StageWork(replay=self.replay, directory=self.stages, make_env=self.make_env, num_envs=run.num_envs,
                         parallel=parallel_collection(run), seed=run.seed, agent_steps=c.agent_steps)
        unit, report = _stage_unit(driver, work)
        if report.collect is not None:
            self.until, self.explore = report.collect.until, report.collect.explore
        self.finished = report.done
        return unit

    def summary(self) -> dict[str, Any]:
        return {}


class Offline:
    """Updates (or refits, or the stages of a staged agent that learns from the replay alone) on a fixed
    replay; the clock counts updates, or units of the stages (see the module docstring)."""

    name = "offline"

    def __init__(self, run: RunConfig, replay: Replay, agent: Agent, source: str, stages: Path | None = None):
        """``stages``: the folder a staged agent's stages write their own files to."""
        self.run, self.replay, self.source = run, replay, source
        self.refit = isinstance(agent.schedule, Refit)
        self.staged = isinstance(agent.schedule, StagedSchedule)
        if self.staged and stages is None:
            raise TypeError("a staged agent trained offline needs a folder for its stages")
        self.stages = stages
        self.finished = False
        # a staged pipeline evaluates when a stage asks; updates every run.eval_every
        self.interval_eval = not self.staged

    def clock(self, c: Counters) -> int:
        return c.updates

    def catch_up(self, c: Counters) -> int:
        return 0

    def start(self, driver: Driver) -> None:
        pass

    def done(self, c: Counters) -> bool:
        return self.finished if self.staged else c.updates >= self.run.steps

    def advance(self, driver: Driver) -> Unit:
        agent = driver.agent
        if self.staged:
            assert self.stages is not None, "checked in __init__"
            work = StageWork(replay=self.replay, directory=self.stages, make_env=None, num_envs=self.run.num_envs,
                             parallel=False, seed=self.run.seed, agent_steps=driver.counters.agent_steps)
            unit, report = _stage_unit(driver, work)
            self.finished = report.done
            return unit
        if self.refit:
            metrics = agent.refit(self.replay)
        else:
            batch = _batch(agent, self.replay, self.run.batch_size)
            started = time.perf_counter()
            metrics = agent.update(batch)
            driver.updated(time.perf_counter() - started)
        driver.counters.updates += 1
        return Unit(train=[metrics])

    def close(self) -> None:
        pass

    def mode_tensors(self) -> dict[str, dict[str, Any]]:
        return {}

    def load_mode_tensors(self, tensors: dict[str, dict[str, Any]]) -> None:
        pass

    def summary(self) -> dict[str, Any]:
        return {"offline": True, "dataset": self.source, "replay_steps": len(self.replay)}
