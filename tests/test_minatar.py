"""MinAtar as an environment suite: ``minatar:GAME`` gives the game's object channels unchanged."""

import numpy as np
import pytest

from reverie.analysis.plots import channels_as_rgb, write_dream_video
from reverie.envs import EnvError, check_step, make_env
from reverie.envs.minatar_env import GAMES, minatar_palette

CHANNELS = {"asterix": 4, "breakout": 4, "freeway": 7, "seaquest": 10, "space_invaders": 6}
ACTIONS = {"asterix": 5, "breakout": 3, "freeway": 3, "seaquest": 6, "space_invaders": 4}


def play(env, actions):
    steps = [env.reset()]
    for a in actions:
        steps.append(env.step(a))
        if steps[-1]["is_last"]:
            break
    return steps


@pytest.mark.parametrize("game", GAMES)
def test_every_game_gives_its_object_channels_as_a_0_255_image(game):
    env = make_env(f"minatar:{game}")
    assert env.obs_spec["image"].shape == (10, 10, CHANNELS[game]) and env.obs_spec["image"].is_image
    assert env.act_spec.discrete and env.act_spec.size == ACTIONS[game]
    rng = np.random.default_rng(0)
    step = env.reset()
    for a in rng.integers(0, env.act_spec.size, 50):
        check_step(step, env.obs_spec)
        assert set(np.unique(step["image"])) <= {0, 255}
        # the image is the game's own grid: channel c of cell (y, x) is on exactly when MinAtar says so
        assert np.array_equal(step["image"] > 0, np.asarray(env._env.state(), bool))
        if step["is_last"]:
            break
        step = env.step(a)
    assert env.render().shape == (10, 10, 3) and env.timing.seconds is None


def test_the_state_mode_is_the_same_grid_flattened_and_a_seed_fixes_the_episode():
    pixels, state = make_env("minatar:breakout", seed=3), make_env("minatar:breakout", obs="state", seed=3)
    actions = np.random.default_rng(1).integers(0, 3, 200)
    a, b = play(pixels, actions), play(state, actions)
    assert len(a) == len(b) > 1 and a[-1]["is_terminal"] and a[-1]["is_last"]
    for x, y in zip(a, b):
        assert np.array_equal((x["image"] > 0).reshape(-1).astype(np.float32), y["vector"])
        assert x["reward"] == y["reward"]
    other = play(make_env("minatar:breakout", seed=4), actions)
    assert len(other) != len(a) or any(not np.array_equal(x["image"], y["image"]) for x, y in zip(a, other))


def test_render_draws_the_front_object_in_minatars_palette():
    env = make_env("minatar:space_invaders")
    env.reset()
    grid = np.asarray(env._env.state(), bool)
    palette = minatar_palette(grid.shape[-1])
    frame = env.render()
    y, x = np.argwhere(grid.any(-1))[0]
    assert np.array_equal(frame[y, x], palette[np.flatnonzero(grid[y, x]).max() + 1])
    empty = np.argwhere(~grid.any(-1))[0]
    assert np.array_equal(frame[tuple(empty)], [0, 0, 0])


def test_object_channels_are_shown_in_colour_in_dream_videos(tmp_path):
    frames = np.zeros((2, 10, 10, 4), np.uint8)
    frames[:, 0, 0, [0, 2]] = 255          # two objects in one cell: the higher channel is drawn
    frames[:, 5, 5, 0] = 255
    rgb = channels_as_rgb(frames)
    assert rgb.shape == (2, 10, 10, 3) and np.array_equal(rgb[:, 9, 9], np.zeros((2, 3)))
    assert not np.array_equal(rgb[0, 0, 0], rgb[0, 5, 5]) and rgb[0, 0, 0].any()
    one = channels_as_rgb(frames[..., :1])
    assert np.array_equal(one[..., 0], one[..., 2]) and np.array_equal(channels_as_rgb(rgb), rgb)
    assert write_dream_video(frames, frames, 1, tmp_path / "d.gif").stat().st_size > 0


def test_a_misspelt_game_is_one_sentence():
    with pytest.raises(EnvError, match=r"^MinAtar has no game 'breakot'; did you mean 'breakout'\?$"):
        make_env("minatar:breakot")
    assert make_env("minatar:SpaceInvaders").name == "minatar:space_invaders"
