"""C-SWM's Atari episodes: frame pairs whose previous frame is the last step's frame, 10 steps after a seeded
random warm start, the play field cropped as the reference does, and one-sentence refusals."""

import numpy as np
import pytest

pytest.importorskip("ale_py")

from reverie.envs import make_env  # noqa: E402
from reverie.envs.atari_pairs import EPISODE_STEPS, GAMES, AtariPairs, crop_resize  # noqa: E402


@pytest.mark.parametrize("game", sorted(GAMES))
def test_each_observation_pairs_this_frame_with_the_last_one_for_ten_steps(game):
    env = make_env(f"gym:reverie/{game}CSWM-v0", seed=3, size=(50, 50))
    assert set(env.obs_spec) == {"image", "previous"} and env.obs_spec["image"].shape == (50, 50, 3)
    assert env.act_spec.discrete and env.act_spec.size == 6
    step = env.reset()
    frames = [step["image"]]
    for t in range(EPISODE_STEPS):
        assert not step["is_last"]
        step = env.step(np.int64(t % 6))
        np.testing.assert_array_equal(step["previous"], frames[-1])
        frames.append(step["image"])
    assert step["is_last"] and not step["is_terminal"]           # the 10-step time limit
    assert any(not np.array_equal(a, b) for a, b in zip(frames, frames[1:]))   # the game moves


def test_a_seeded_reset_repeats_its_warm_start_and_another_seed_does_not():
    a, b, c = AtariPairs("Pong"), AtariPairs("Pong"), AtariPairs("Pong")
    first, _ = a.reset(seed=4)
    np.testing.assert_array_equal(first["image"], b.reset(seed=4)[0]["image"])
    np.testing.assert_array_equal(first["previous"], b.reset(seed=4)[0]["previous"])
    others = [c.reset(seed=s)[0]["image"] for s in range(5, 10)]
    assert any(not np.array_equal(first["image"], o) for o in others)
    # without a warm start the first pair is the reset screen and the screen after one no-op, cropped
    import gymnasium as gym

    obs, _ = AtariPairs("Pong", warmstart=0).reset(seed=0)
    raw = gym.make("ALE/Pong-v5", frameskip=4, repeat_action_probability=0.0, full_action_space=False)
    screen, _ = raw.reset(seed=0)
    np.testing.assert_array_equal(obs["previous"], crop_resize(screen, GAMES["Pong"][1], 50))
    np.testing.assert_array_equal(obs["image"], crop_resize(raw.step(0)[0], GAMES["Pong"][1], 50))


def test_the_crop_keeps_the_play_field_rows_and_resizes_them():
    screen = np.zeros((210, 160, 3), np.uint8)
    screen[:35] = 255                                            # Pong's score bar, cropped away
    screen[190:] = 255
    assert crop_resize(screen, GAMES["Pong"][1], 50).max() == 0
    screen[100] = 200
    out = crop_resize(screen, GAMES["Pong"][1], 50)
    assert out.shape == (50, 50, 3) and out.max() > 0


def test_bad_settings_are_one_sentence():
    with pytest.raises(ValueError, match=r"set up for \['Pong', 'SpaceInvaders'\], not 'Breakout'"):
        AtariPairs("Breakout")
    with pytest.raises(ValueError, match=r"warmstart must be a non-negative integer, got -1"):
        AtariPairs("Pong", warmstart=-1)
