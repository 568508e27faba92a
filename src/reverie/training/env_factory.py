"""The run's environment as a picklable ``seed -> Env`` factory, with the suite's action repeat.

A run on a task sequence (``run.env = "A>B>C"``, :mod:`reverie.envs.sequence`) has one factory per task;
:func:`env_factory` gives the last one, the task the run ends on (evaluation, dreams and analysis of the
finished run use it), and :func:`task_factories` all of them in order.
"""

from __future__ import annotations

import functools
from typing import Callable

from reverie.envs import Env, make_env
from reverie.envs.sequence import SEPARATOR
from reverie.run_config import RunConfig

__all__ = ["SUITE_ACTION_REPEAT", "EnvFactory", "action_repeat_of", "env_factory", "task_factories"]

#: Action repeat per suite when the config leaves it unset.
SUITE_ACTION_REPEAT = {"atari": 4, "dmc": 2}

#: ``seed -> Env``: how the driver, evaluation and the end-of-run artifacts make environments.
EnvFactory = Callable[[int], Env]


def action_repeat_of(run: RunConfig) -> int:
    """The run's action repeat: ``run.action_repeat``, else the suite's default (atari 4, dmc 2, else 1);
    a task sequence's first task names the suite."""
    return run.action_repeat or SUITE_ACTION_REPEAT.get(run.env.strip().partition(":")[0], 1)


def task_factories(run: RunConfig) -> list[EnvFactory]:
    """A picklable ``seed -> Env`` per task of ``run.env`` (one for a single task), in training order."""
    size = (run.image_size, run.image_size)
    return [functools.partial(_make, task.strip(), run.obs, action_repeat_of(run), size, run.time_limit)
            for task in run.env.split(SEPARATOR)]


def env_factory(run: RunConfig) -> EnvFactory:
    """A picklable ``seed -> Env`` for the run's environment (its last task for a task sequence)."""
    return task_factories(run)[-1]


def _make(name: str, obs: str, repeat: int, size: tuple[int, int], time_limit: int | None, seed: int) -> Env:
    return make_env(name, obs=obs, seed=seed, action_repeat=repeat, size=size, time_limit=time_limit)
