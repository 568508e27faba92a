"""The 3D cubes world: the shapes world's rules (one cube moves per action, walls and other cubes block), a
deterministic perspective drawing in which every cube shows its colour on its own cell, and the registered id
through reverie's adapter."""

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from reverie.envs import make_env
from reverie.envs.cubes import COLOURS, FLOOR, Camera, Cubes, cell_sprites, painter_order
from reverie.envs.shapes import Shapes, push

UP, RIGHT, DOWN, LEFT = range(4)


def placed(positions, **kwargs):
    env = Cubes(**kwargs)
    env.reset(seed=0, options={"positions": np.array(positions)})
    return env


def top_centre(env, row, col):
    """Pixel (row, column) of the centre of the top face of the cube on (row, col)."""
    x, y = Camera(env.width, env.height, env.image_shape[0]).pixels(
        np.array([[col + 0.5, env.height - 1 - row + 0.5, 1.0]]))[0]
    return int(y), int(x)


def test_the_paper_world_is_50_by_50_rgb_with_20_actions_and_passes_gymnasiums_checker():
    env = Cubes()
    assert env.observation_space.shape == (50, 50, 3) and env.action_space.n == 20
    check_env(env, skip_render_check=True)


def test_the_rules_are_the_shapes_worlds_step_for_step():
    cubes, shapes = Cubes(), Shapes()
    cubes.reset(seed=5)
    shapes.reset(seed=5)
    np.testing.assert_array_equal(cubes.positions, shapes.positions)      # the same seeded placement
    rng = np.random.default_rng(1)
    moves = 0
    for _ in range(300):
        action = int(rng.integers(20))
        before = cubes.positions.copy()
        _, _, _, _, info = cubes.step(action)
        _, _, _, _, expected = shapes.step(action)
        np.testing.assert_array_equal(info["positions"], expected["positions"])
        changed = np.flatnonzero(np.any(info["positions"] != before, axis=1))
        assert changed.tolist() == ([action // 4] if info["moved"] else [])
        if info["moved"]:
            assert np.abs(info["positions"] - before).sum() == 1        # exactly one cell
        moves += info["moved"]
    assert 100 < moves < 300                                            # some pushes were blocked, most not


def test_walls_and_other_cubes_block_a_push():
    env = placed([[0, 0], [4, 4], [2, 2], [2, 3], [0, 4]])
    for obj, direction in [(0, UP), (0, LEFT), (1, DOWN), (1, RIGHT), (4, UP), (4, RIGHT), (2, RIGHT)]:
        _, _, _, _, info = env.step(4 * obj + direction)
        assert not info["moved"]
    np.testing.assert_array_equal(env.positions, [[0, 0], [4, 4], [2, 2], [2, 3], [0, 4]])
    _, _, _, _, info = env.step(4 * 3 + RIGHT)                            # the blocking cube steps away
    assert info["moved"]
    _, _, _, _, info = env.step(4 * 2 + RIGHT)                            # and the blocked one may follow
    assert info["moved"] and env.positions[2].tolist() == [2, 3]


def test_each_cube_shows_its_colour_on_its_cell_and_the_empty_floor_is_grey():
    positions = [[0, 0], [1, 3], [4, 2], [3, 0], [2, 4]]
    env = placed(positions, image_size=100)
    image = env.draw().astype(float)
    for i, (row, col) in enumerate(positions):
        pixel = image[top_centre(env, row, col)]
        # the top face is lit: a positive multiple of the cube's own colour, closer to it than to any other
        shade = pixel @ COLOURS[i] / (COLOURS[i] @ COLOURS[i])
        assert 0.5 < shade <= 1.0 and np.abs(pixel - shade * COLOURS[i]).max() <= 2
        hue = pixel / np.linalg.norm(pixel)
        assert np.argmax(COLOURS[:5] @ hue / np.linalg.norm(COLOURS[:5], axis=1)) == i
    assert (image[top_centre(env, 2, 2)] == FLOOR).all()                     # cell (2, 2) is empty floor
    assert (image[0, 0] == 255).all()                                        # white behind the floor


def test_drawing_is_deterministic_and_follows_the_positions_only():
    a, b = placed([[0, 0], [1, 1], [2, 2], [3, 3], [4, 4]]), placed([[0, 0], [1, 1], [2, 2], [3, 3], [4, 4]])
    np.testing.assert_array_equal(a.draw(), b.draw())
    first = a.draw()
    a.step(4 * 0 + RIGHT)
    assert not np.array_equal(a.draw(), first)
    a.step(4 * 0 + LEFT)
    np.testing.assert_array_equal(a.draw(), first)
    np.testing.assert_array_equal(Cubes().reset(seed=9)[0], Cubes().reset(seed=9)[0])


def test_a_cube_in_front_hides_the_one_behind_it():
    # back rows first; within a row the cube farther sideways from the camera (which stands to the right) first
    order = painter_order(np.array([[4, 2], [0, 2], [2, 0], [2, 4]]), 5, 5)
    assert order[0] == 1 and order[-1] == 0
    _, coverage, _ = cell_sprites(5, 5, 100)
    for back, front in [((2, 2), (3, 2)), ((3, 1), (3, 2)), ((3, 2), (3, 3)), ((1, 1), (2, 2))]:
        both = (coverage[back] > 0.999) & (coverage[front] > 0.999)      # where the two cubes overlap on screen
        assert both.sum() > 5
        for first, second in [(0, 1), (1, 0)]:                          # whichever object index each cube has
            cells = [back, front] if first == 0 else [front, back]
            env = placed([list(cells[0]), list(cells[1]), [0, 0], [0, 4], [4, 0]], image_size=100)
            image = env.draw().astype(float)[both]
            in_front = 1 if first == 0 else 0
            shade = image @ COLOURS[in_front] / (COLOURS[in_front] @ COLOURS[in_front])
            # every overlapping pixel is a shade of the front cube's colour (or its black edge)
            assert np.abs(image - shade[:, None] * COLOURS[in_front]).max() <= 2


def test_the_batched_push_is_the_cubes_rules_too():
    env = Cubes()
    env.reset(seed=2)
    import torch

    state = torch.as_tensor(env.positions)[None]
    for action in range(20):
        probe = Cubes()
        probe.reset(seed=0, options={"positions": env.positions.copy()})
        probe.step(action)
        np.testing.assert_array_equal(push(state, torch.tensor([action]), 5, 5)[0].numpy(), probe.positions)


def test_bad_settings_are_one_sentence():
    with pytest.raises(ValueError, match=r"7 objects do not fit on a 2 x 3 grid"):
        Cubes(width=2, height=3, num_objects=7)
    with pytest.raises(ValueError, match=r"num_objects must be at most 9 \(one colour each\), got 10"):
        Cubes(width=5, height=5, num_objects=10)
    with pytest.raises(ValueError, match=r"image_size must be an integer of at least 8 pixels, got 4"):
        Cubes(image_size=4)


def test_the_registered_id_gives_50x50_images_and_100_step_episodes_through_the_adapter():
    env = make_env("gym:reverie/Cubes-v0", seed=1, size=(50, 50))
    assert env.obs_spec["image"].shape == (50, 50, 3) and env.act_spec.discrete and env.act_spec.size == 20
    step = env.reset()
    assert step["is_first"] and step["image"].dtype == np.uint8
    for t in range(100):
        step = env.step(np.int64(t % 20))
    assert step["is_last"] and not step["is_terminal"]
