"""One entry point for every planner: ``plan("cem", model, state, horizon=30)``.

Used by ``reverie eval --planner NAME`` and by agents that pick their planner
from a config string.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import torch

from .base import PlannerSettings, PlanningError, PlanResult, Policy, State, WarmStart
from .cem import CEMSettings, cem
from .gradient import GradientSettings, gradient
from .mppi import MPPISettings, mppi
from .shooting import ShootingSettings, shooting

#: name -> (planner function, its settings class)
PLANNERS: dict[str, tuple[Callable[..., PlanResult], type[PlannerSettings]]] = {
    "shooting": (shooting, ShootingSettings),
    "cem": (cem, CEMSettings),
    "mppi": (mppi, MPPISettings),
    "gradient": (gradient, GradientSettings),
}


def planner_settings(name: str, settings: PlannerSettings | None = None, **overrides: Any) -> PlannerSettings:
    """The settings of planner ``name``: ``settings`` (or the defaults) with ``overrides`` applied.

    Raises PlanningError for an unknown planner, a settings object of another
    planner, or an override that is not a field of the settings.
    """
    if name not in PLANNERS:
        raise PlanningError(f"Unknown planner {name!r}; choose one of {', '.join(sorted(PLANNERS))}.")
    settings_type = PLANNERS[name][1]
    if settings is None:
        settings = settings_type()
    elif type(settings) is not settings_type:
        raise PlanningError(
            f"Planner {name!r} takes {settings_type.__name__}, not {type(settings).__name__}; "
            f"pass {settings_type.__name__}(...) or only keyword overrides."
        )
    fields = {f.name for f in dataclasses.fields(settings_type)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise PlanningError(
            f"{settings_type.__name__} has no setting {', '.join(map(repr, unknown))}; "
            f"valid settings are {', '.join(sorted(fields))}."
        )
    return dataclasses.replace(settings, **overrides) if overrides else settings


def plan(
    name: str,
    model: object,
    state: State,
    settings: PlannerSettings | None = None,
    warm: WarmStart | None = None,
    *,
    policy: Policy | None = None,
    generator: torch.Generator | None = None,
    **overrides: Any,
) -> PlanResult:
    """Run planner ``name`` ("shooting", "cem", "mppi" or "gradient") on B start states.

    Args:
        name: which planner.
        model: has ``step`` and ``reward`` (optionally ``cont``, ``value``, ``action_size``).
        state: B start states, a tensor [B, ...] or a dict of tensors [B, ...].
        settings: that planner's settings dataclass, or None for its defaults.
        warm: ``result.warm`` of the previous call, or None.
        policy: optional prior policy ``policy(state [N, ...]) -> action [N, A]``.
        generator: optional ``torch.Generator`` on the state's device.
        overrides: settings fields to change, e.g. ``horizon=30, candidates=500``.

    Returns:
        The planner's :class:`PlanResult` (action [B, A], refined plan, warm start, diagnostics).
    """
    resolved = planner_settings(name, settings, **overrides)
    return PLANNERS[name][0](model, state, resolved, warm, policy=policy, generator=generator)
