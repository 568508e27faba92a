"""The run's environment as a picklable ``seed -> Env`` factory, with the suite's action repeat."""

from __future__ import annotations

import functools
from typing import Callable

from reverie.envs import Env, make_env
from reverie.run_config import RunConfig

__all__ = ["SUITE_ACTION_REPEAT", "EnvFactory", "action_repeat_of", "env_factory"]

#: Action repeat per suite when the config leaves it unset.
SUITE_ACTION_REPEAT = {"atari": 4, "dmc": 2}

#: ``seed -> Env``: how the driver, evaluation and the end-of-run artifacts make environments.
EnvFactory = Callable[[int], Env]


def action_repeat_of(run: RunConfig) -> int:
    """The run's action repeat: ``run.action_repeat``, else the suite's default (atari 4, dmc 2, else 1)."""
    return run.action_repeat or SUITE_ACTION_REPEAT.get(run.env.partition(":")[0], 1)


def env_factory(run: RunConfig) -> EnvFactory:
    """A picklable ``seed -> Env`` for the run's environment (subprocess collection pickles it)."""
    size = (run.image_size, run.image_size)
    return functools.partial(_make, run.env, run.obs, action_repeat_of(run), size, run.time_limit)


def _make(name: str, obs: str, repeat: int, size: tuple[int, int], time_limit: int | None, seed: int) -> Env:
    return make_env(name, obs=obs, seed=seed, action_repeat=repeat, size=size, time_limit=time_limit)
