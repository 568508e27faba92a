"""The run's environment as a picklable ``seed -> Env`` factory, with the suite's action repeat.

A run on a task sequence (``run.env = "A>B>C"``, :mod:`reverie.envs.sequence`) has one factory per task;
:func:`env_factory` gives the last one, the task the run ends on (evaluation, dreams and analysis of the
finished run use it), and :func:`task_factories` all of them in order.

A multitask run (several names in ``run.env`` joined by commas, see :mod:`reverie.envs.multitask`) gets a
:class:`TaskFactory`: :meth:`TaskFactory.task` gives each task's own padded factory, which collection
and evaluation use; called with a seed it builds one of the tasks (all speak the same specs).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

from reverie.envs import Env, EnvError, make_env
from reverie.envs.multitask import PaddedTask, TaskLayout, split_tasks, task_layout
from reverie.envs.sequence import SEPARATOR
from reverie.run_config import RunConfig

__all__ = ["SUITE_ACTION_REPEAT", "EnvFactory", "TaskFactory", "action_repeat_of", "env_factory", "stream_factory",
           "task_factories"]

#: Action repeat per suite when the config leaves it unset.
SUITE_ACTION_REPEAT = {"atari": 4, "dmc": 2}

#: ``seed -> Env``: how the driver, evaluation and the end-of-run artifacts make environments.
EnvFactory = Callable[[int], Env]


def action_repeat_of(run: RunConfig) -> int:
    """The run's action repeat: ``run.action_repeat``, else the suite's default (atari 4, dmc 2, else 1); the
    tasks of a multitask run or a task sequence must agree on it."""
    if run.action_repeat:
        return run.action_repeat
    repeats = {name: SUITE_ACTION_REPEAT.get(name.partition(":")[0], 1) for name in _names(run.env)}
    if len(set(repeats.values())) > 1:
        said = ", ".join(f"{name} {repeat}" for name, repeat in repeats.items())
        raise EnvError(f"the tasks' suites repeat actions differently by default ({said}); set run.action_repeat")
    return next(iter(repeats.values()))


@dataclass(frozen=True)
class TaskFactory:
    """The environments of a multitask run: ``task(k)`` is task ``k``'s factory; ``factory(seed)`` builds task
    ``seed % K`` (so that consecutive seeds, as ``reverie analyze`` plays them, visit every task)."""

    layout: TaskLayout
    """The shared specs and each task's place in them."""
    own: tuple[EnvFactory, ...]
    """Each task's own (unpadded) factory."""

    def __call__(self, seed: int) -> Env:
        return self.task(seed % len(self.names))(seed)

    def task(self, index: int) -> EnvFactory:
        """Task ``index``'s factory, speaking the layout's specs."""
        return functools.partial(_padded, self.own[index], index, self.layout)

    @property
    def names(self) -> tuple[str, ...]:
        return self.layout.names


def stream_factory(make: EnvFactory, stream: int) -> EnvFactory:
    """The factory of collection stream ``stream``: ``make`` itself, or task ``stream % K`` of a multitask run."""
    if isinstance(make, TaskFactory):
        return make.task(stream % len(make.names))
    return make


def task_factories(run: RunConfig) -> list[EnvFactory]:
    """A picklable ``seed -> Env`` per task of a task sequence ``run.env`` (one for a single task), in
    training order."""
    size = (run.image_size, run.image_size)
    return [functools.partial(_make, task, run.obs, action_repeat_of(run), size, run.time_limit)
            for task in _names(run.env)]


def env_factory(run: RunConfig) -> EnvFactory:
    """A picklable ``seed -> Env`` for the run's environment (subprocess collection pickles it): a task
    sequence's last task; a :class:`TaskFactory` for several tasks at once (each is built once here to read
    its specs)."""
    if SEPARATOR in run.env:
        return task_factories(run)[-1]
    size = (run.image_size, run.image_size)
    names = split_tasks(run.env)
    repeat = action_repeat_of(run)
    own = tuple(functools.partial(_make, name, run.obs, repeat, size, run.time_limit) for name in names)
    if len(names) == 1:
        return own[0]
    specs = []
    for make in own:
        probe = make(run.seed)
        try:
            specs.append((probe.obs_spec, probe.act_spec))
        finally:
            probe.close()
    return TaskFactory(task_layout(names, specs), own)


def _names(env: str) -> tuple[str, ...]:
    """The tasks of a sequence (``A>B``) or of a multitask run (``A,B``); both at once is refused."""
    if SEPARATOR in env:
        if "," in env:
            raise EnvError(f"run.env={env!r} is both a task sequence ('>') and a multitask list (','); "
                           "train a sequence of single tasks, or several tasks at once, not both")
        return tuple(part.strip() for part in env.split(SEPARATOR))
    return split_tasks(env)


def _make(name: str, obs: str, repeat: int, size: tuple[int, int], time_limit: int | None, seed: int) -> Env:
    return make_env(name, obs=obs, seed=seed, action_repeat=repeat, size=size, time_limit=time_limit)


def _padded(own: EnvFactory, index: int, layout: TaskLayout, seed: int) -> Env:
    return PaddedTask(own(seed), index, layout)
