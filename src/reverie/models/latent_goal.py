"""Planning toward a goal observation in a model's latent space.

A model that can say how far a state is from a goal (:class:`LatentGoalModel`: ``goal_state`` encodes goal
observations, ``goal_cost`` measures states against them; C-SWM's is its energy, the squared distance
summed over object slots) becomes, with :class:`GoalReward`, a world model whose ``reward`` is minus that
cost. Every reward-maximising planner (``reverie.planning``: CEM, random shooting, ...) then plans toward
the goal unchanged: the predicted return of a candidate is ``-sum_t cost(s_{t+1}, goal)``, so plans that
reach the goal sooner and stay there win.

Goals are per row: ``goal`` holds B states for the B start states a planner is called with; the planners
imagine ``C`` candidates per start state as rows ``b * C + c`` (:func:`reverie.models.state.repeat_state`),
so a batch of ``B * C`` imagined states is scored against each goal repeated ``C`` times.
"""

from __future__ import annotations

from typing import Mapping, Protocol, runtime_checkable

from torch import Tensor

from reverie.models.base import REWARD, ModelWithHeads, WorldModel
from reverie.models.state import State, repeat_state, state_batch

__all__ = ["GoalError", "GoalReward", "LatentGoalModel", "goal_model", "goals_for"]


class GoalError(ValueError):
    """A goal that cannot be planned toward (the message says which and why), or a model with no goal cost."""


@runtime_checkable
class LatentGoalModel(WorldModel, Protocol):
    """A world model with a latent goal cost."""

    def goal_state(self, obs: Mapping[str, Tensor]) -> State:
        """Goal observations ``{key: [N, *shape]}`` -> their states ``[N]``."""
        ...

    def goal_cost(self, state: State, goal: State) -> Tensor:
        """How far each state is from the goal of its row, ``[N]`` (0 at the goal)."""
        ...


def goals_for(goal: State, rows: int) -> State:
    """The goals of ``rows`` imagined states: each of the B goal rows repeated ``rows / B`` times (rows
    ``b * C + c``, as planners lay out C candidates per start state); GoalError if B does not divide ``rows``."""
    goals, _ = state_batch(goal)
    if rows % goals:
        raise GoalError(f"{rows} states cannot be scored against {goals} goals: the planner must be called with "
                        "one start state per goal")
    return goal if rows == goals else repeat_state(goal, rows // goals)


def goal_model(model: WorldModel, agent: str) -> LatentGoalModel:
    """``model`` as a :class:`LatentGoalModel`, or GoalError naming ``agent`` in one sentence."""
    if not isinstance(model, LatentGoalModel):
        raise GoalError(f"agent '{agent}' has a world model with no latent goal cost, so it cannot plan toward a "
                        "goal; --goal needs a model that has one (cswm)")
    return model


class GoalReward(ModelWithHeads):
    """``model`` with ``reward(state) = -model.goal_cost(state, goal)``: what a planner maximises to reach
    ``goal`` (B states, one per start state the planner is called with; see the module docstring). The core
    passes through as :class:`~reverie.models.base.ModelWithHeads` passes it; the only capability declared
    is the reward."""

    def __init__(self, model: LatentGoalModel, goal: State):
        super().__init__(model)
        self.goal_model, self.goal = model, goal
        self.capabilities = frozenset({REWARD})

    def reward(self, state: State) -> Tensor:
        """``-goal_cost`` of states ``[B * C]`` (C candidates per goal, rows ``b * C + c``) -> ``[B * C]``."""
        rows, _ = state_batch(state)
        return -self.goal_model.goal_cost(state, goals_for(self.goal, rows))
