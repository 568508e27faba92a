"""The 2D shapes world: one object moves per action, walls and other objects block, what is drawn is where
the objects are, and the registered id works through reverie's adapter."""

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from reverie.envs import make_env
from reverie.envs.shapes import CELL, MASKS, PALETTE, Shapes

UP, RIGHT, DOWN, LEFT = range(4)


def placed(positions, **kwargs):
    env = Shapes(**kwargs)
    env.reset(seed=0, options={"positions": np.array(positions)})
    return env


def test_the_paper_world_is_50_by_50_rgb_with_20_actions_and_passes_gymnasiums_checker():
    env = Shapes()
    assert env.observation_space.shape == (50, 50, 3) and env.action_space.n == 20
    check_env(env, skip_render_check=True)


def test_every_action_moves_exactly_its_object_one_cell_or_nothing():
    env = Shapes()
    env.reset(seed=3)
    rng = np.random.default_rng(0)
    for _ in range(500):
        before = env.positions.copy()
        action = int(rng.integers(20))
        _, reward, terminated, truncated, info = env.step(action)
        moved = np.flatnonzero(np.any(info["positions"] != before, axis=1))
        assert reward == 0.0 and not terminated and not truncated
        if info["moved"]:
            obj, direction = divmod(action, 4)
            assert moved.tolist() == [obj]
            delta = info["positions"][obj] - before[obj]
            assert delta.tolist() == [[-1, 0], [0, 1], [1, 0], [0, -1]][direction]
        else:
            assert moved.size == 0
        # every object on its own cell, inside the grid
        assert len({tuple(p) for p in info["positions"].tolist()}) == 5
        assert info["positions"].min() >= 0 and info["positions"].max() <= 4


def test_walls_block_pushes_off_the_grid():
    env = placed([[0, 0], [4, 4], [0, 4], [4, 0], [2, 2]])
    for obj, direction in [(0, UP), (0, LEFT), (1, DOWN), (1, RIGHT), (2, UP), (2, RIGHT), (3, DOWN), (3, LEFT)]:
        _, _, _, _, info = env.step(4 * obj + direction)
        assert not info["moved"]
    np.testing.assert_array_equal(env.positions, [[0, 0], [4, 4], [0, 4], [4, 0], [2, 2]])
    env.step(4 * 4 + UP)                                   # the free object moves
    np.testing.assert_array_equal(env.positions[4], [1, 2])


def test_an_object_blocks_a_push_onto_its_cell_and_is_not_pushed_along():
    env = placed([[2, 2], [2, 3], [0, 0], [4, 4], [0, 4]])
    _, _, _, _, info = env.step(4 * 0 + RIGHT)             # object 0 into object 1
    assert not info["moved"]
    np.testing.assert_array_equal(env.positions[:2], [[2, 2], [2, 3]])
    env.step(4 * 1 + RIGHT)                                 # object 1 steps away, then 0 may follow
    _, _, _, _, info = env.step(4 * 0 + RIGHT)
    assert info["moved"]
    np.testing.assert_array_equal(env.positions[:2], [[2, 3], [2, 4]])


def test_the_image_shows_each_object_in_its_colour_and_shape_at_its_cell():
    positions = [[0, 0], [1, 3], [4, 2], [3, 0], [2, 4]]
    env = placed(positions)
    image = env.draw()
    for i, (row, col) in enumerate(positions):
        cell = image[row * CELL:(row + 1) * CELL, col * CELL:(col + 1) * CELL]
        lit = np.any(cell > 0, axis=-1)
        np.testing.assert_array_equal(lit, MASKS[i % 3])
        assert (cell[lit] == PALETTE[i]).all()
    assert np.count_nonzero(np.any(image > 0, axis=-1)) == sum(MASKS[i % 3].sum() for i in range(5))
    assert MASKS[0].sum() < MASKS[1].sum() + 30 and MASKS[1].sum() < MASKS[2].sum() == 100   # three distinct shapes


def test_seeded_resets_repeat_and_bad_placements_are_one_sentence():
    a, b = Shapes(), Shapes()
    np.testing.assert_array_equal(a.reset(seed=7)[0], b.reset(seed=7)[0])
    with pytest.raises(ValueError, match=r"put two objects on one cell"):
        placed([[0, 0], [0, 0], [1, 1], [2, 2], [3, 3]])
    with pytest.raises(ValueError, match=r"lie outside the 5 x 5 grid"):
        placed([[0, 5], [0, 0], [1, 1], [2, 2], [3, 3]])
    with pytest.raises(ValueError, match=r"5 objects do not fit on a 2 x 2 grid"):
        Shapes(width=2, height=2, num_objects=5)
    with pytest.raises(ValueError, match=r"action must be an integer in \[0, 20\)"):
        a.step(20)


def test_the_registered_id_gives_50x50_images_and_100_step_episodes_through_the_adapter():
    env = make_env("gym:reverie/Shapes-v0", seed=1, size=(50, 50))
    assert env.obs_spec["image"].shape == (50, 50, 3) and env.act_spec.discrete and env.act_spec.size == 20
    step = env.reset()
    assert step["is_first"] and step["image"].dtype == np.uint8
    for t in range(100):
        step = env.step(np.int64(t % 20))
    assert step["is_last"] and not step["is_terminal"]        # a time limit, not a terminal state
