"""Model-predictive planners over learned world models.

Every planner is a function ``(model, state [B], settings, warm) -> PlanResult``
that needs only the model's dynamics (``act_spec``, ``capabilities``,
``step``) and the capabilities its settings use (``reward``; ``cont``,
``value`` and ``policy`` when asked), makes one batched ``step`` call per
horizon step, and returns its warm start instead of keeping it.

    from reverie.planning import plan
    result = plan("cem", model, state, horizon=12)
    action, warm = result.action, result.warm          # [B, A]; pass warm next time
"""

from reverie.models.state import repeat_state

from .api import PLANNERS, plan, planner_settings, planner_spec
from .base import PlannerSettings, PlannerSpec, PlanningError, PlanResult, Policy, State, WarmStart
from .cem import CEMSettings, cem
from .gradient import GradientSettings, gradient
from .mppi import MPPISettings, mppi, mppi_weights
from .returns import rollout_returns
from .sampling import categorical_candidates, colored_noise, gaussian_candidates, uniform_candidates
from .shooting import ShootingSettings, shooting
from .tree_search import MCTSPlannerSettings, mcts_plan

__all__ = [
    "PLANNERS",
    "CEMSettings",
    "GradientSettings",
    "MCTSPlannerSettings",
    "MPPISettings",
    "PlanResult",
    "PlannerSettings",
    "PlannerSpec",
    "PlanningError",
    "Policy",
    "ShootingSettings",
    "State",
    "WarmStart",
    "categorical_candidates",
    "cem",
    "colored_noise",
    "gaussian_candidates",
    "gradient",
    "mcts_plan",
    "mppi",
    "mppi_weights",
    "plan",
    "planner_settings",
    "planner_spec",
    "repeat_state",
    "rollout_returns",
    "shooting",
    "uniform_candidates",
]
