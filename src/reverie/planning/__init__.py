"""Model-predictive planners over learned world models.

Every planner is a function ``(model, state [B], settings, warm) -> PlanResult``
that needs only ``model.step(state, action)`` and ``model.reward(state)``
(``cont`` and ``value`` when the settings ask for them), makes one batched
``step`` call per horizon step, and returns its warm start instead of keeping it.

    from reverie.planning import plan
    result = plan("cem", model, state, action_size=6)
    action, warm = result.action, result.warm          # [B, 6]; pass warm next time
"""

from .api import PLANNERS, plan, planner_settings
from .base import (
    PlannerSettings,
    PlanningError,
    PlanningModel,
    PlanResult,
    Policy,
    State,
    WarmStart,
    repeat_state,
)
from .cem import CEMSettings, cem
from .gradient import GradientSettings, gradient
from .mppi import MPPISettings, mppi, mppi_weights
from .returns import rollout_returns
from .sampling import categorical_candidates, colored_noise, gaussian_candidates, uniform_candidates
from .shooting import ShootingSettings, shooting

__all__ = [
    "PLANNERS",
    "CEMSettings",
    "GradientSettings",
    "MPPISettings",
    "PlanResult",
    "PlannerSettings",
    "PlanningError",
    "PlanningModel",
    "Policy",
    "ShootingSettings",
    "State",
    "WarmStart",
    "categorical_candidates",
    "cem",
    "colored_noise",
    "gaussian_candidates",
    "gradient",
    "mppi",
    "mppi_weights",
    "plan",
    "planner_settings",
    "repeat_state",
    "rollout_returns",
    "shooting",
    "uniform_candidates",
]
