"""One entry point for every planner: ``plan("cem", model, state, horizon=30)``.

Used by ``reverie eval --planner NAME`` and by agents that pick their planner
from a config string.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from reverie.models.base import Dynamics
from reverie.specs import ActionSpec

from .base import PlannerSettings, PlannerSpec, PlanningError, PlanResult, State, WarmStart, unsupported
from .cem import SPEC as CEM
from .gradient import SPEC as GRADIENT
from .mppi import SPEC as MPPI
from .shooting import SPEC as SHOOTING
from .tree_search import SPEC as MCTS

#: Every planner by name, with what it declares (see :class:`~reverie.planning.base.PlannerSpec`).
PLANNERS: dict[str, PlannerSpec] = {spec.name: spec for spec in (SHOOTING, CEM, MPPI, GRADIENT, MCTS)}


def planner_spec(name: str, act_spec: ActionSpec | None = None) -> PlannerSpec:
    """The declaration of planner ``name``; with ``act_spec``, also check that it plans that kind of action."""
    if name not in PLANNERS:
        raise PlanningError(f"Unknown planner {name!r}; choose one of {', '.join(sorted(PLANNERS))}.")
    spec = PLANNERS[name]
    if act_spec is not None and not spec.supports(act_spec):
        raise PlanningError(unsupported(spec, act_spec, PLANNERS))
    return spec


def planner_settings(name: str, settings: PlannerSettings | None = None, **overrides: Any) -> PlannerSettings:
    """The settings of planner ``name``: ``settings`` (or the defaults) with ``overrides`` applied.

    Raises PlanningError for an unknown planner, a settings object of another
    planner, or an override that is not a field of the settings.
    """
    settings_type = planner_spec(name).settings_type
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
    model: Dynamics,
    state: State,
    settings: PlannerSettings | None = None,
    warm: WarmStart | None = None,
    *,
    generator: torch.Generator | None = None,
    **overrides: Any,
) -> PlanResult:
    """Run planner ``name`` (one of :data:`PLANNERS`) on B start states.

    Args:
        name: which planner.
        model: a :class:`~reverie.models.base.Dynamics`: ``act_spec``, ``capabilities`` and ``step``, plus
            the capabilities the settings use (``reward``; ``cont``, ``value``, ``policy`` as asked).
        state: B start states, a tensor [B, ...] or a dict of tensors [B, ...].
        settings: that planner's settings dataclass, or None for its defaults.
        warm: ``result.warm`` of the previous call, or None.
        generator: optional ``torch.Generator`` on the state's device.
        overrides: settings fields to change, e.g. ``horizon=30, candidates=500``.

    Returns:
        The planner's :class:`PlanResult` (action [B, A], refined plan, warm start, diagnostics).
    """
    resolved = planner_settings(name, settings, **overrides)
    act_spec = getattr(model, "act_spec", None)
    spec = planner_spec(name, act_spec if isinstance(act_spec, ActionSpec) else None)
    return spec.fn(model, state, resolved, warm, generator=generator)
