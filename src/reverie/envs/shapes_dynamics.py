"""The 2D shapes world's true rules as batched, differentiable-free dynamics a planner can search.

:func:`push` applies one push to N configurations at once, by the rules of :class:`reverie.envs.shapes.Shapes`
(a push that would leave the grid or land on another object does nothing). :class:`ShapesGoalDynamics` is a
:class:`~reverie.models.base.Dynamics` on true configurations (state: positions ``[N, K, 2]``, int64) whose
reward is minus the squared distance summed over objects to a goal configuration: the same cost as C-SWM's
latent goal cost, measured on the true state. A planner run on it is the "true simulator" baseline of
planning toward a goal (``benchmarks/cswm_plan.py``): what the planner achieves with a perfect model.
"""

from __future__ import annotations

import torch
from torch import Tensor

from reverie.envs.shapes import DIRECTIONS
from reverie.models.base import REWARD
from reverie.models.latent_goal import goals_for
from reverie.models.state import State
from reverie.specs import ActionSpec

__all__ = ["ShapesGoalDynamics", "push"]


def push(positions: Tensor, action: Tensor, width: int, height: int) -> Tensor:
    """Configurations after one push each: positions ``[N, K, 2]`` (row, column; int64), action ``[N]`` (int64,
    object ``a // 4`` one cell in direction ``a % 4``) -> ``[N, K, 2]``."""
    rows = torch.arange(len(action), device=positions.device)
    obj, direction = action // 4, action % 4
    offsets = torch.as_tensor(DIRECTIONS, device=positions.device)
    target = positions[rows, obj] + offsets[direction]                                    # [N, 2]
    inside = (target[:, 0] >= 0) & (target[:, 0] < height) & (target[:, 1] >= 0) & (target[:, 1] < width)
    # the mover's own cell is one step away from its target, so only other objects can occupy it
    occupied = (positions == target[:, None]).all(-1).any(-1)
    moves = inside & ~occupied
    out = positions.clone()
    out[rows[moves], obj[moves]] = target[moves]
    return out


class ShapesGoalDynamics:
    """The true shapes dynamics with ``reward = -sum_k ||p_k - g_k||^2`` toward ``goal [B, K, 2]`` (one goal per
    start state; C candidates per start state are rows ``b * C + c``)."""

    def __init__(self, goal: Tensor, width: int = 5, height: int = 5):
        self.goal, self.width, self.height = goal, width, height
        self.act_spec = ActionSpec(discrete=True, size=4 * goal.shape[1])
        self.capabilities = frozenset({REWARD})

    def step(self, state: State, action: Tensor) -> Tensor:
        """positions ``[N, K, 2]``, one-hot actions ``[N, 4 K]`` -> positions ``[N, K, 2]``."""
        assert isinstance(state, Tensor)
        return push(state, action.argmax(-1), self.width, self.height)

    def reward(self, state: State) -> Tensor:
        assert isinstance(state, Tensor)
        goal = goals_for(self.goal, len(state))
        assert isinstance(goal, Tensor)
        return -(state - goal).pow(2).sum((-2, -1)).float()
