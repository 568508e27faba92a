"""Environments speaking one convention: dicts of numpy arrays per step.

``make_env("gym:CartPole-v1")``, ``make_env("dmc:walker-walk", obs="pixels")``
and ``make_env("atari:Pong")`` all return an :class:`Env` whose ``reset`` and
``step`` give observation keys plus ``reward``, ``is_first``, ``is_last`` and
``is_terminal`` (see :mod:`reverie.envs.spaces`). :class:`BatchEnv` steps
several together, in subprocesses if asked. dm_control and ale-py are
imported only when a ``dmc:`` or ``atari:`` env is made.
"""

from reverie.envs.batch import BatchEnv
from reverie.envs.dmc_env import DmcEnv
from reverie.envs.gym_env import GymEnv
from reverie.envs.make import SUITES, make_batch_env, make_env
from reverie.envs.atari_env import make_atari
from reverie.envs.spaces import (
    STEP_KEYS,
    ActionSpec,
    ArraySpec,
    Env,
    EnvError,
    Timing,
    check_finite,
    check_step,
    make_step,
)
from reverie.envs.wrappers import ActionRepeat, TimeLimit, Wrapper

__all__ = [
    "STEP_KEYS",
    "SUITES",
    "ActionRepeat",
    "ActionSpec",
    "ArraySpec",
    "BatchEnv",
    "DmcEnv",
    "Env",
    "EnvError",
    "GymEnv",
    "TimeLimit",
    "Timing",
    "Wrapper",
    "check_finite",
    "check_step",
    "make_atari",
    "make_batch_env",
    "make_env",
    "make_step",
]
