"""Atari Pong and Space Invaders as C-SWM (Kipf, van der Pol and Welling, ICLR 2020) records them: short
episodes of two-frame observations, each started after a run of random actions.

:class:`AtariPairs` (gymnasium) wraps an ale-py game set up as the reference's ``PongDeterministic-v4`` and
``SpaceInvadersDeterministic-v4``: 4 emulator frames per step, no sticky actions, the minimal action set
(6 actions in both games). ``reset`` resets the game, takes ``warmstart`` uniformly random actions (58 in
Pong, 50 in Space Invaders: past the games' opening frames) and then one no-op; every observation is the
screen cropped to the play field's rows (Pong 35-190, Space Invaders 30-200), resized to ``size x size``
with PIL's Lanczos filter, as the pair ``{"image": this frame, "previous": the frame before}`` (uint8
``[size, size, 3]`` each; a model stacks them to 6 channels, as the reference concatenates them). The
warm-start actions come from the env's seeded generator, so a seeded reset repeats its episode; the
reward is the game's.

Registered ids (episodes of ``EPISODE_STEPS`` steps after the warm start: the reference's
``max_episode_steps = warmstart + 11``): ``reverie/PongCSWM-v0`` and ``reverie/SpaceInvadersCSWM-v0``,
e.g. ``reverie train cswm --preset pong``.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from PIL import Image

from reverie.envs.spaces import EnvError

#: The reference's settings per game: warm-start random actions and the rows of the screen kept
GAMES: dict[str, tuple[int, tuple[int, int]]] = {
    "Pong": (58, (35, 190)),
    "SpaceInvaders": (50, (30, 200)),
}
EPISODE_STEPS = 10
"""Steps of an episode after its warm start (the paper's 10-step episodes, training and evaluation)."""
FRAMESKIP = 4
"""Emulator frames per step (the ``Deterministic-v4`` games)."""


def crop_resize(screen: np.ndarray, rows: tuple[int, int], size: int) -> np.ndarray:
    """The screen's rows ``rows[0]:rows[1]`` resized to ``[size, size, 3]`` uint8 (Lanczos, antialiased)."""
    image = Image.fromarray(np.ascontiguousarray(screen[rows[0]:rows[1]]))
    return np.asarray(image.resize((size, size), Image.Resampling.LANCZOS), np.uint8)


class AtariPairs(gym.Env):
    """One Atari game in C-SWM's episodes of frame pairs (see the module docstring)."""

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, game: str = "Pong", size: int = 50, warmstart: int | None = None,
                 render_mode: str | None = None):
        if game not in GAMES:
            raise ValueError(f"C-SWM's Atari episodes are set up for {sorted(GAMES)}, not {game!r}")
        if not (isinstance(size, int) and not isinstance(size, bool) and size >= 8):
            raise ValueError(f"size must be an integer of at least 8 pixels, got {size!r}")
        default_warmstart, self.rows = GAMES[game]
        self.warmstart = default_warmstart if warmstart is None else warmstart
        if not (isinstance(self.warmstart, int) and self.warmstart >= 0):
            raise ValueError(f"warmstart must be a non-negative integer, got {warmstart!r}")
        try:
            import ale_py
        except ModuleNotFoundError:
            raise EnvError("ale-py is not installed: pip install 'reverie[atari]' for C-SWM's Atari episodes") from None
        gym.register_envs(ale_py)
        self.game, self.size, self.render_mode = game, size, render_mode
        self.ale = gym.make(f"ALE/{game}-v5", frameskip=FRAMESKIP, repeat_action_probability=0.0,
                            full_action_space=False)
        frame = gym.spaces.Box(0, 255, (size, size, 3), np.uint8)
        self.observation_space = gym.spaces.Dict({"image": frame, "previous": frame})
        actions = self.ale.action_space
        assert isinstance(actions, gym.spaces.Discrete)     # ALE's minimal action set
        self.action_space, self.actions = actions, int(actions.n)
        self._screen = np.zeros((210, 160, 3), np.uint8)
        self._frame = np.zeros((size, size, 3), np.uint8)

    def _observe(self, screen: np.ndarray) -> dict[str, np.ndarray]:
        previous, self._screen = self._frame, screen
        self._frame = crop_resize(screen, self.rows, self.size)
        return {"image": self._frame, "previous": previous}

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        screen, info = self.ale.reset(seed=None if seed is None else int(self.np_random.integers(2**31)))
        for _ in range(self.warmstart):
            screen, _, terminated, truncated, info = self.ale.step(int(self.np_random.integers(self.actions)))
            if terminated or truncated:
                raise EnvError(f"{self.game} ended during the {self.warmstart} warm-start steps; lower warmstart")
        self._observe(screen)
        screen, _, _, _, info = self.ale.step(0)            # the no-op after the warm start
        return self._observe(screen), info

    def step(self, action):
        screen, reward, terminated, truncated, info = self.ale.step(action)
        return self._observe(screen), float(reward), terminated, truncated, info

    def render(self) -> np.ndarray:
        return self._screen

    def close(self) -> None:
        self.ale.close()


def register() -> None:
    """Register the games' ids with gymnasium (idempotent)."""
    for game in GAMES:
        if f"reverie/{game}CSWM-v0" not in gym.registry:
            gym.register(f"reverie/{game}CSWM-v0", entry_point=f"{__name__}:AtariPairs",
                         max_episode_steps=EPISODE_STEPS, kwargs={"game": game})


register()
