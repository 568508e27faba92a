"""MinAtar games (Young & Tian, 2019) through the ``minatar`` package: ``minatar:breakout``.

MinAtar's state is a 10x10 grid of boolean channels, one per kind of object (Breakout: paddle, ball,
trail, brick; 4 to 10 channels by game). reverie gives it unchanged, as one of two observations:

- ``obs="pixels"`` (the default): ``image`` uint8 ``[10, 10, C]``, each channel 0 or 255. It is an image
  to every model (three axes, uint8), with C channels instead of 3: nothing is lost or blended, so a
  model predicting it predicts each object channel, and a prediction can be scored per cell and channel.
  Videos show it through :meth:`MinAtarEnv.render`, MinAtar's own palette (a cubehelix colour per
  channel, the highest-numbered object in front, black where the cell is empty), ``[10, 10, 3]``.
- ``obs="state"``: the same grid flattened, ``vector`` float32 ``[100 C]`` of 0 and 1.

Actions are each game's minimal action set (as MinAtar's gymnasium ids ``-v1``), taken with MinAtar's
defaults: sticky actions with probability 0.1 and difficulty ramping. Every end of a MinAtar episode is
the game's own (a lost ball, Freeway's 2,500-frame clock), so it is terminal. MinAtar has no clock of
its own, so :attr:`MinAtarEnv.timing` is unknown (analyses count in steps).
"""

from __future__ import annotations

import difflib
import re

import numpy as np

from reverie.envs.packages import missing_package
from reverie.envs.spaces import ActionSpec, ArraySpec, EnvError, Timing, default_obs_names, discrete_index, make_step

#: The games of MinAtar, by the name used after ``minatar:``.
GAMES = ("asterix", "breakout", "freeway", "seaquest", "space_invaders")
#: MinAtar's defaults: the probability an action is replaced by the previous one.
STICKY_ACTIONS = 0.1

__all__ = ["GAMES", "MinAtarEnv", "minatar_palette"]


def _normalise(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def game_name(task: str) -> str:
    """The MinAtar game ``task`` names, in any spelling (``SpaceInvaders``, ``space-invaders``)."""
    by_key = {_normalise(g): g for g in GAMES}
    game = by_key.get(_normalise(task))
    if game is None:
        close = difflib.get_close_matches(task.lower(), GAMES, n=2, cutoff=0.5)
        hint = f"did you mean {', '.join(repr(c) for c in close)}?" if close else f"choose one of {', '.join(GAMES)}"
        raise EnvError(f"MinAtar has no game {task!r}; {hint}")
    return game


def minatar_palette(channels: int) -> np.ndarray:
    """MinAtar's display colours, uint8 ``[channels + 1, 3]``: black for an empty cell, then a cubehelix colour
    per channel (seaborn's ``cubehelix`` palette, what MinAtar's ``display_state`` draws with)."""
    import seaborn as sns

    colours = np.asarray([(0.0, 0.0, 0.0), *sns.color_palette("cubehelix", channels)])
    return (colours * 255).round().astype(np.uint8)


class MinAtarEnv:
    """One MinAtar game speaking step dicts (see the module docstring).

    Args:
        task: the game (``"breakout"``, ``"space_invaders"``, ...).
        obs: ``"pixels"`` (``image`` uint8 ``[10, 10, C]``, 0/255) or ``"state"`` (``vector`` float32).
        seed: seeds the game's randomness and its sticky actions.
        sticky: probability that the previous action is repeated instead of the one given.
    """

    def __init__(self, task: str, obs: str = "pixels", seed: int | None = 0, sticky: float = STICKY_ACTIONS):
        if obs not in ("pixels", "state"):
            raise EnvError(f"obs={obs!r} is not an observation mode: choose one of ('state', 'pixels')")
        game = game_name(task)
        try:
            from minatar import Environment
        except ModuleNotFoundError as err:
            raise missing_package(f"minatar:{task}", err) or err from None
        self.name = f"minatar:{game}"
        self._env = Environment(game, sticky_action_prob=sticky)
        self._env.seed(seed if seed is not None else int(np.random.SeedSequence().generate_state(1)[0]))
        self._actions = list(self._env.minimal_action_set())
        height, width, self.channels = (int(s) for s in self._env.state_shape())
        by_index = {int(i): str(name) for name, i in self._env.env.channels.items()}
        #: The object channels' names in channel order (MinAtar's own: Breakout's paddle, ball, trail, brick).
        self.channel_names = tuple(by_index.get(i, f"channel{i}") for i in range(self.channels))
        self._pixels = obs == "pixels"
        if self._pixels:
            self.obs_spec = {"image": ArraySpec((height, width, self.channels), np.dtype(np.uint8))}
        else:
            self.obs_spec = {"vector": ArraySpec((height * width * self.channels,), np.dtype(np.float32))}
        self.act_spec = ActionSpec(discrete=True, size=len(self._actions))
        self._palette: np.ndarray | None = None
        self._needs_reset = True

    @property
    def timing(self) -> Timing:
        """Unknown: MinAtar's games have no clock."""
        return Timing()

    @property
    def obs_names(self) -> dict[str, tuple[str, ...]]:
        return default_obs_names(self.obs_spec)

    def _observe(self) -> dict[str, np.ndarray]:
        grid = np.asarray(self._env.state(), dtype=bool)                     # [10, 10, C]
        if self._pixels:
            return {"image": grid.astype(np.uint8) * np.uint8(255)}
        return {"vector": grid.astype(np.float32).reshape(-1)}

    def reset(self) -> dict[str, np.ndarray]:
        self._env.reset()
        self._needs_reset = False
        return make_step(self._observe(), is_first=True)

    def step(self, action) -> dict[str, np.ndarray]:
        if self._needs_reset:
            raise EnvError(f"{self.name}: call reset() before step(), and again after a step with is_last")
        index = discrete_index(action, len(self._actions))
        reward, terminal = self._env.act(self._actions[index])
        self._needs_reset = bool(terminal)
        return make_step(self._observe(), reward=float(reward), is_last=bool(terminal), is_terminal=bool(terminal))

    def render(self) -> np.ndarray:
        """The current grid in MinAtar's palette, uint8 ``[10, 10, 3]``."""
        if self._palette is None:
            self._palette = minatar_palette(self.channels)
        grid = np.asarray(self._env.state(), dtype=bool)
        # MinAtar draws the highest-numbered channel present in a cell; 0 is an empty cell
        front = (grid * np.arange(1, self.channels + 1)).max(-1)
        return self._palette[front]

    def close(self) -> None:
        pass
