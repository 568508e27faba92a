"""Block pushing on a grid: the 2D shapes world of C-SWM (Kipf, van der Pol and Welling, ICLR 2020).

:class:`Shapes` (gymnasium): ``num_objects`` objects on a ``width x height`` grid, each drawn in its own
colour as a circle, a triangle or a square (object ``i``'s shape is ``i mod 3``) in a 10 x 10 pixel
cell on black, so the paper's world (5 objects, 5 x 5 grid) is a ``[50, 50, 3]`` uint8 image.

Action ``a`` (``Discrete(4 * num_objects)``) pushes object ``a // 4`` one cell in direction ``a % 4``
(0 up, 1 right, 2 down, 3 left, rows counted downward). A push that would leave the grid or land on
another object does nothing: exactly one object moves per action, or none. The reward is always 0 and
episodes never end by themselves (the registered id cuts them at 100 steps, the paper's training
episodes).

``reset(options={"positions": [[row, col], ...]})`` places the objects where asked (a goal or a
hand-built test); otherwise they are drawn uniformly over distinct cells from the env's seeded
generator. ``info["positions"]`` (int64 ``[num_objects, 2]``) is the true state after every reset and
step.

The rules as batched dynamics a planner can search: :func:`push` applies one push to N configurations at
once (tensors), and :class:`ShapesGoalDynamics` is a :class:`~reverie.models.base.Dynamics` on true
configurations (state: positions ``[N, K, 2]``, int64) whose reward is minus the squared distance summed
over objects to a goal configuration, the same cost as C-SWM's latent goal cost measured on the true state:
a planner on it is the "true simulator" baseline of planning toward a goal (``benchmarks/cswm_plan.py``).

Registered ids (importing this module registers them; ``gym:reverie/...`` imports it):
``reverie/Shapes-v0`` (100-step episodes; ``width``, ``height``, ``num_objects`` settable as keyword
arguments), e.g. ``reverie train cswm --env gym:reverie/Shapes-v0``, and ``reverie/Cubes-v0``, the same world
drawn in 3D (:mod:`reverie.envs.cubes`).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor

from reverie.models.base import REWARD
from reverie.models.latent_goal import goals_for
from reverie.models.state import State
from reverie.specs import ActionSpec

CELL = 10
"""Pixels per grid cell."""
DIRECTIONS = np.array([(-1, 0), (0, 1), (1, 0), (0, -1)], np.int64)
"""(row, column) offsets of the four pushes: up, right, down, left."""
PALETTE = np.array([(228, 26, 28), (55, 126, 184), (77, 175, 74), (152, 78, 163), (255, 127, 0),
                    (255, 255, 51), (166, 86, 40), (247, 129, 191), (153, 153, 153)], np.uint8)
"""Object colours: matplotlib's Set1, as the paper's renderer took them."""
EPISODE_STEPS = 100
"""Steps of a training episode of the registered id (the paper's 1,000 x 100-step data set)."""


def _masks() -> np.ndarray:
    """The three cell stamps ``[3, CELL, CELL]`` bool: circle, triangle (apex up), square."""
    r, c = np.mgrid[0:CELL, 0:CELL]
    half = CELL // 2
    circle = (r - half) ** 2 + (c - half) ** 2 < half ** 2
    # a triangle with its apex at the top middle and its base on the cell's bottom row
    triangle = np.abs(c + 0.5 - half) <= (r + 1) * half / CELL
    square = np.ones((CELL, CELL), bool)
    return np.stack([circle, triangle, square])


MASKS = _masks()


class Shapes(gym.Env):
    """Push one of ``num_objects`` shapes per step on a grid (see the module docstring)."""

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, width: int = 5, height: int = 5, num_objects: int = 5, render_mode: str | None = None):
        for name, value in (("width", width), ("height", height), ("num_objects", num_objects)):
            if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if num_objects > len(PALETTE):
            raise ValueError(f"num_objects must be at most {len(PALETTE)} (one colour each), got {num_objects}")
        if num_objects > width * height:
            raise ValueError(f"{num_objects} objects do not fit on a {width} x {height} grid")
        self.width, self.height, self.num_objects = width, height, num_objects
        self.render_mode = render_mode
        self.image_shape = (height * CELL, width * CELL, 3)
        self.observation_space = gym.spaces.Box(0, 255, self.image_shape, np.uint8)
        self.action_space = gym.spaces.Discrete(4 * num_objects)
        self.positions = np.zeros((num_objects, 2), np.int64)

    # -- the rules ---------------------------------------------------------------------------
    def _free(self, cell: np.ndarray, mover: int) -> bool:
        """Whether ``mover`` may stand on ``cell``: inside the grid and not on another object."""
        row, col = int(cell[0]), int(cell[1])
        if not (0 <= row < self.height and 0 <= col < self.width):
            return False
        others = np.delete(self.positions, mover, axis=0)
        return not bool(np.any((others[:, 0] == row) & (others[:, 1] == col)))

    def push(self, action: int) -> bool:
        """Apply ``action`` to the positions; whether the object moved."""
        obj, direction = divmod(int(action), 4)
        target = self.positions[obj] + DIRECTIONS[direction]
        if not self._free(target, obj):
            return False
        self.positions[obj] = target
        return True

    # -- drawing -----------------------------------------------------------------------------
    def draw(self, positions: np.ndarray | None = None) -> np.ndarray:
        """The image ``[H * CELL, W * CELL, 3]`` uint8 of ``positions`` (the current ones by default)."""
        positions = self.positions if positions is None else np.asarray(positions)
        image = np.zeros(self.image_shape, np.uint8)
        for i, (row, col) in enumerate(positions):
            cell = image[row * CELL:(row + 1) * CELL, col * CELL:(col + 1) * CELL]
            cell[MASKS[i % 3]] = PALETTE[i]
        return image

    def render(self) -> np.ndarray:
        return self.draw()

    # -- gymnasium ---------------------------------------------------------------------------
    def _check_positions(self, positions: object) -> np.ndarray:
        arr = np.asarray(positions)
        if arr.shape != (self.num_objects, 2) or not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"positions must be {self.num_objects} integer (row, column) pairs, got "
                             f"{arr.dtype}{list(arr.shape)}")
        inside = (arr[:, 0] >= 0) & (arr[:, 0] < self.height) & (arr[:, 1] >= 0) & (arr[:, 1] < self.width)
        if not inside.all():
            raise ValueError(f"positions {arr[~inside].tolist()} lie outside the {self.width} x {self.height} grid")
        if len({tuple(p) for p in arr.tolist()}) != self.num_objects:
            raise ValueError(f"positions {arr.tolist()} put two objects on one cell")
        return arr.astype(np.int64)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if options and "positions" in options:
            self.positions = self._check_positions(options["positions"])
        else:
            cells = self.np_random.choice(self.width * self.height, self.num_objects, replace=False)
            self.positions = np.stack([cells // self.width, cells % self.width], 1).astype(np.int64)
        return self.draw(), {"positions": self.positions.copy()}

    def step(self, action):
        if not self.action_space.contains(action):
            raise ValueError(f"action must be an integer in [0, {self.action_space.n}), got {action!r}")
        moved = self.push(int(action))
        return self.draw(), 0.0, False, False, {"positions": self.positions.copy(), "moved": moved}


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


def register() -> None:
    """Register the block-pushing ids with gymnasium (idempotent)."""
    if "reverie/Shapes-v0" not in gym.registry:
        gym.register("reverie/Shapes-v0", entry_point=f"{__name__}:Shapes", max_episode_steps=EPISODE_STEPS)
    if "reverie/Cubes-v0" not in gym.registry:   # the same world drawn in 3D (envs/cubes.py, imported when made)
        gym.register("reverie/Cubes-v0", entry_point="reverie.envs.cubes:Cubes", max_episode_steps=EPISODE_STEPS)


register()
