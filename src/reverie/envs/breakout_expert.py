"""A scripted player of MinAtar Breakout that reads only the frame: the paddle goes where the ball will land.

It stands in for the "videos of competent play" that LAPO (Schmidt and Jiang, ICLR 2024) learns from: no
learned agent, a controller written from the game's rules (``minatar/environments/breakout.py``):

- the frame ``[10, 10, 4]`` holds the paddle (channel 0, bottom row), the ball (1), the ball's previous cell
  (the trail, 2) and the bricks (3); the ball moves one cell along a diagonal per step;
- its direction is the step from the trail to the ball; where that step has no horizontal part the ball
  has just hit a side wall (it leaves it), and where it has no vertical part the ball has just bounced (off
  the paddle, in row 8, it goes up; off a brick or the ceiling, elsewhere, it comes down);
- a falling ball's landing column is found by stepping it down to the bottom row with reflections off the
  side walls (bricks are above it: a falling ball meets none); the paddle moves one cell towards that column,
  and towards the ball's column while the ball rises.

Measured with MinAtar's sticky actions (0.1) and episodes cut at 1,000 steps: a mean return of about 13 over
20 episodes (docs/notes/latent-actions.md); without sticky actions it never loses the ball. It is fragile to
random actions (10 % of them, anywhere, bring the return to about 3): most misses come from a sticky action at
the wrong step. Its actions are a function of the frame, so a model of the next frame can predict them from
the past frames and need not learn them as latent actions; the noisy variant (``rng``) takes a random action
wherever it has slack (about 8 % of its steps), which costs little return (about 12).
"""

from __future__ import annotations

import numpy as np

__all__ = ["LEFT", "NOOP", "RIGHT", "follow_ball", "landing_column"]

#: Breakout's minimal action set in reverie's order (MinAtar's ``minimal_action_set``: no-op, left, right).
NOOP, LEFT, RIGHT = 0, 1, 2
_PADDLE, _BALL, _TRAIL = 0, 1, 2


def landing_column(x: int, y: int, dx: int, size: int = 10) -> int:
    """The column a ball at column ``x``, row ``y``, falling one row a step with horizontal step ``dx`` (+1 or
    -1), reaches the bottom row (``size - 1``) in, reflected off the side walls as MinAtar does (a move past a
    wall is clamped to it and reverses ``dx``)."""
    while y < size - 1:
        nx = x + dx
        if nx < 0 or nx > size - 1:
            nx, dx = min(max(nx, 0), size - 1), -dx
        x, y = nx, y + 1
    return x


def _read(frame: np.ndarray) -> tuple[int, int, int, int] | None:
    """(paddle column, ball row, column the paddle should go to, steps of slack) of one frame, or None where the
    frame lacks the paddle, the ball or the trail. The slack is the steps the paddle can waste before a falling
    ball lands out of its reach (rows left minus columns to go); a rising ball has none (-1): where it will
    come down is not known yet."""
    cells = frame > 0
    paddle = np.flatnonzero(cells[-1, :, _PADDLE])
    ball, trail = np.argwhere(cells[:, :, _BALL]), np.argwhere(cells[:, :, _TRAIL])
    if not len(paddle) or not len(ball) or not len(trail):
        return None
    (by, bx), (ty, tx) = ball[0], trail[0]
    height, width = frame.shape[:2]
    dx, dy = int(np.sign(bx - tx)), int(np.sign(by - ty))
    if dx == 0:                      # clamped at a side wall: it leaves the wall
        dx = 1 if bx == 0 else -1
    if dy == 0:                      # just bounced: off the paddle it rises, elsewhere it falls
        dy = -1 if by == height - 2 else 1
    pos = int(paddle[0])
    if dy < 0:
        return pos, int(by), int(bx), -1
    target = landing_column(int(bx), int(by), dx, width)
    return pos, int(by), target, (height - 1 - int(by)) - abs(target - pos)


def follow_ball(image: np.ndarray, rng: np.random.Generator | None = None, slack: int = 3) -> np.ndarray:
    """Actions ``[B]`` int64 (no-op, left, right) for MinAtar Breakout frames ``image [B, 10, 10, 4]`` (0/255 or
    booleans); a frame without paddle, ball or trail gets the no-op. With ``rng``: a uniformly random action
    wherever the paddle has at least ``slack`` steps of slack (a falling ball it can reach even after a wrong
    move), so that the actions are not all a function of the frame."""
    image = np.asarray(image)
    if image.ndim != 4 or image.shape[-1] < 3:
        raise ValueError(f"follow_ball plays MinAtar Breakout frames [B, 10, 10, 4], got shape {image.shape}")
    actions = np.full(len(image), NOOP, np.int64)
    for i, frame in enumerate(image):
        read = _read(frame)
        if read is None:
            continue
        pos, _, target, spare = read
        actions[i] = LEFT if target < pos else RIGHT if target > pos else NOOP
        if rng is not None and spare >= slack:
            actions[i] = int(rng.integers(3))
    return actions
