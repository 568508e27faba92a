"""Atari 2600 games through ale-py, set up the way the world-model papers use them.

``atari:Pong`` becomes gymnasium's ``ALE/Pong-v5`` with sticky actions
(``repeat_action_probability=0.25``), the minimal action set, and ALE's own
frameskip as the action repeat (default 4: the ALE v5 convention; the frames
are skipped inside the emulator, which is faster than a Python wrapper).
Observations are pixels only: the RGB screen resized to ``size`` as
``image`` uint8 ``[H, W, 3]``. ``render()`` gives the full 210x160 screen.
"""

from __future__ import annotations

import difflib
import re

from reverie.envs.gym_env import GymEnv
from reverie.envs.spaces import EnvError, Timing

#: ALE v5's frameskip, used when no action repeat is asked for.
DEFAULT_FRAMESKIP = 4
#: Frames per second of the Atari 2600 (NTSC), the emulator's clock.
ATARI_FPS = 60.0
#: Probability that the emulator repeats the previous action (Machado et al., 2018).
STICKY_ACTIONS = 0.25


def _import_gym_with_ale():
    try:
        import ale_py
    except ModuleNotFoundError:
        raise EnvError(
            "ale-py is not installed: pip install 'reverie[atari]' for atari:GAME envs"
        ) from None
    import gymnasium as gym

    gym.register_envs(ale_py)
    return gym


def _normalise(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def atari_games() -> list[str]:
    """Every game ale-py registers, as used after ``atari:`` (e.g. ``"Pong"``, ``"SpaceInvaders"``)."""
    gym = _import_gym_with_ale()
    return sorted(
        key[len("ALE/") : -len("-v5")]
        for key in gym.registry
        if key.startswith("ALE/") and key.endswith("-v5") and "-ram" not in key
    )


def make_atari(
    game: str,
    obs: str = "pixels",
    seed: int | None = 0,
    size: tuple[int, int] = (64, 64),
    frameskip: int = DEFAULT_FRAMESKIP,
    sticky: float = STICKY_ACTIONS,
) -> GymEnv:
    """An Atari game as a :class:`GymEnv` with ``image`` uint8 ``[*size, 3]`` observations.

    Args:
        game: the game's name in any spelling ale-py knows: ``"Pong"``,
            ``"pong"``, ``"space_invaders"``, ``"SpaceInvaders"``.
        obs: must be ``"pixels"``; Atari has no low-dimensional state here.
        seed: seeds the emulator and the sticky-action randomness.
        size: ``(height, width)`` of the image observation.
        frameskip: emulator frames per agent step (rewards summed inside ALE).
        sticky: repeat-action probability.
    """
    if obs != "pixels":
        raise EnvError(
            f"atari:{game} gives pixel observations only, not obs={obs!r}: use obs='pixels'"
        )
    if not (isinstance(frameskip, int) and frameskip >= 1):
        raise EnvError(f"Atari frameskip must be a positive integer, got {frameskip!r}")
    gym = _import_gym_with_ale()
    games = atari_games()
    by_key = {_normalise(g): g for g in games}
    canonical = by_key.get(_normalise(game))
    if canonical is None:
        close = difflib.get_close_matches(game, games, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else (
            f"; known games include {', '.join(games[:8])}, ..."
        )
        raise EnvError(f"ale-py has no Atari game {game!r}{hint}")
    try:
        env = gym.make(
            f"ALE/{canonical}-v5",
            obs_type="rgb",
            frameskip=frameskip,
            repeat_action_probability=sticky,
            full_action_space=False,
            render_mode="rgb_array",
        )
    except OSError as err:   # ale-py reads the ROM file at make: absent (ALE_ROMS_DIR elsewhere) or corrupt
        raise EnvError(f"ale-py cannot load the ROM of atari:{canonical} ({err}); reinstall ale-py, whose wheel "
                       "ships every ROM, or point ALE_ROMS_DIR at a folder holding it") from None
    timing = Timing(frameskip / ATARI_FPS, f"{frameskip} frames at {ATARI_FPS:g} Hz")
    adapter = GymEnv(env, obs="state", seed=seed, image_size=size, timing=timing)
    adapter.name = f"atari:{canonical}"
    return adapter
