"""Build any environment from one string, ``"SUITE:TASK"``.

======================================  ===========================================
name                                    environment
======================================  ===========================================
``gym:CartPole-v1``                     any id registered with gymnasium
``gym:my_pkg.module:MyEnv-v0``          a user's id; ``my_pkg.module`` is imported first
``dmc:cartpole-swingup``                dm_control suite ``DOMAIN-TASK``
``atari:Pong``                          ale-py ``ALE/Pong-v5``, sticky actions, pixels
``minatar:breakout``                    a MinAtar game: 10x10 boolean object channels
``gym:Pendulum-v1?g=4.0``               a physics variant: ``key=value`` pairs joined by ``&``
                                        go to ``gymnasium.make`` (any keyword the env takes)
``dmc:cartpole-swingup?pole_length=1.5``  dm_control cartpole with its pole (``pole_length``,
                                        ``pole_mass``) or cart (``cart_mass``) edited in its XML
``gym:Pendulum-v1?g=10>gym:Pendulum-v1?g=4``  a task sequence (training runs only): ``>`` between
                                        tasks, each trained for ``run.continual.switch_every``
                                        env steps (``--switch-every``; default: ``run.steps``
                                        split evenly), see :mod:`reverie.envs.sequence`
``popgym:RepeatPreviousEasy``           a POPGym task: flattened vector observations
======================================  ===========================================

Variants are parsed by :mod:`reverie.envs.variants`; a key the environment does not take is refused in
one sentence listing the keys it does take.

Suite defaults, used when ``obs`` or ``action_repeat`` is left at ``None``:
``obs`` is ``"state"`` for gym, dmc and popgym (its only mode) and ``"pixels"`` for atari (its only
mode) and minatar (its grid as a ``[10, 10, C]`` image, see :mod:`reverie.envs.minatar_env`);
``action_repeat`` is 1 for gym, dmc, minatar and popgym and 4 for atari, where it is
ALE's frameskip. An explicit value is always used as given, so
``action_repeat=1`` on Atari really means every frame.
"""

from __future__ import annotations

import difflib
import functools
from typing import TYPE_CHECKING, Any

from reverie.envs.spaces import Env, EnvError
from reverie.envs.variants import check_gym_keys, split_variant

if TYPE_CHECKING:
    from reverie.envs.batch import BatchEnv

SUITES = ("gym", "dmc", "atari", "minatar", "popgym")
OBS_MODES = ("state", "pixels")


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    try:
        height, width = (int(s) for s in size)
    except (TypeError, ValueError):
        raise EnvError(f"size must be (height, width), got {size!r}") from None
    if height < 1 or width < 1:
        raise EnvError(f"size must be positive (height, width), got {size!r}")
    return height, width


def _check_positive(value: object, what: str) -> None:
    if value is not None and not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        raise EnvError(f"{what} must be a positive integer, got {value!r}")


def make_env(
    name: str,
    obs: str | None = None,
    seed: int = 0,
    action_repeat: int | None = None,
    size: tuple[int, int] = (64, 64),
    time_limit: int | None = None,
) -> Env:
    """Build the environment ``name`` (``"SUITE:TASK"``, see the module docstring).

    Args:
        name: ``"gym:..."``, ``"dmc:DOMAIN-TASK"``, ``"atari:GAME"``, ``"minatar:GAME"`` or ``"popgym:TASK"``.
        obs: ``"state"`` or ``"pixels"``; ``None`` picks the suite default.
        seed: seeds the env's first reset (gym, atari) or its task (dmc).
        action_repeat: env steps per agent step, rewards summed; ``None`` picks
            the suite default (atari 4, others 1).
        size: ``(height, width)`` of every image observation and dmc frame (MinAtar keeps its 10x10 grid).
        time_limit: end episodes after this many agent steps (truncation, not
            terminal); the suite's own limit still applies.

    Returns:
        An :class:`~reverie.envs.spaces.Env` whose steps are dicts of numpy arrays.

    Raises:
        EnvError: an unknown suite or task, a missing optional package, or a
            bad setting, in one sentence that says how to fix it.
    """
    if not isinstance(name, str) or ":" not in name:
        hint = ""
        if isinstance(name, str) and name:
            hint = f" (for a gymnasium id write 'gym:{name}')"
        raise EnvError(f"environment name {name!r} must be 'SUITE:TASK' with SUITE one of {SUITES}{hint}")
    suite, _, task = name.partition(":")
    if suite not in SUITES:
        close = difflib.get_close_matches(suite, SUITES, n=1, cutoff=0.4)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        if suite == "reverie":   # reverie's own worlds (memory suite, shapes) are gymnasium ids
            hint = f"; reverie's own environments are gymnasium ids: write 'gym:reverie/{task}'"
        raise EnvError(f"unknown environment suite {suite!r} in {name!r}: choose one of {SUITES}{hint}")
    if not task:
        raise EnvError(f"environment name {name!r} names no task after '{suite}:'")
    if ">" in name:
        raise EnvError(f"{name!r} is a task sequence, which a training run steps through "
                       "(reverie train --env 'A>B'); make_env builds one task: name one of them")
    task, variant = split_variant(task)
    if variant and suite in ("atari", "minatar", "popgym"):
        raise EnvError(f"{suite}:{task} takes no variant keys; physics variants exist for gym and dmc tasks")
    if obs is not None and obs not in OBS_MODES:
        raise EnvError(f"obs={obs!r} is not an observation mode: choose one of {OBS_MODES}")
    _check_positive(action_repeat, "action_repeat")
    _check_positive(time_limit, "time_limit")
    size = _check_size(size)

    if suite == "atari":
        from reverie.envs.atari_env import DEFAULT_FRAMESKIP, make_atari

        frameskip = DEFAULT_FRAMESKIP if action_repeat is None else action_repeat
        env: Env = make_atari(task, obs=obs or "pixels", seed=seed, size=size, frameskip=frameskip)
        action_repeat = 1  # done inside the emulator
    elif suite == "minatar":
        from reverie.envs.minatar_env import MinAtarEnv

        env = MinAtarEnv(task, obs=obs or "pixels", seed=seed)
    elif suite == "popgym":
        from reverie.envs.popgym_env import PopGymEnv

        if obs not in (None, "state"):
            raise EnvError(f"POPGym's observations are vectors: {name!r} takes obs='state', not {obs!r}")
        env = PopGymEnv(task, seed=seed)
    elif suite == "dmc":
        from reverie.envs.dmc_env import DmcEnv

        env = DmcEnv(task, obs=obs or "state", seed=seed, size=size, variant=variant)
    else:
        from reverie.envs.gym_env import GymEnv, find_gym_spec

        if variant:
            check_gym_keys(task, find_gym_spec(task).entry_point, variant)
        env = GymEnv(task, obs=obs or "state", seed=seed, image_size=size, **variant)

    from reverie.envs.wrappers import ActionRepeat, TimeLimit

    if action_repeat is not None and action_repeat > 1:
        env = ActionRepeat(env, action_repeat)
    if time_limit is not None:
        env = TimeLimit(env, time_limit)
    return env


def make_batch_env(name: str, num_envs: int, seed: int = 0, parallel: bool = False, **kwargs: Any) -> BatchEnv:
    """A :class:`~reverie.envs.batch.BatchEnv` of ``num_envs`` copies of ``name``.

    Env ``i`` is seeded ``seed + i``; each constructor is a ``functools.partial``
    of :func:`make_env`, so it pickles for ``parallel=True``.

    ``kwargs`` go to :func:`make_env` (``obs``, ``action_repeat``, ``size``, ``time_limit``).
    """
    from reverie.envs.batch import BatchEnv

    _check_positive(num_envs, "num_envs")
    fns = [functools.partial(make_env, name, seed=seed + i, **kwargs) for i in range(num_envs)]
    return BatchEnv(fns, parallel=parallel)
