"""POPGym as an environment suite: ``popgym:TASK`` gives POPGym's tasks as vector observations and discrete actions."""

import sys

import numpy as np
import pytest

from reverie.envs import EnvError, check_step, make_env

pytest.importorskip("popgym")

from reverie.envs.popgym_env import popgym_ids  # noqa: E402


def run(env, policy):
    """One episode: (steps, return) with ``policy(observed vectors so far) -> action``."""
    steps = [env.reset()]
    while not steps[-1]["is_last"]:
        steps.append(env.step(policy([s["vector"] for s in steps])))
        check_step(steps[-1], env.obs_spec)
        assert len(steps) < 10_000
    return steps, float(sum(s["reward"] for s in steps))


def test_the_registered_tasks_are_named_without_gymnasiums_prefix_and_version():
    ids = popgym_ids()
    for difficulty in ("Easy", "Medium", "Hard"):
        assert f"RepeatPrevious{difficulty}" in ids and f"CountRecall{difficulty}" in ids
    assert len(ids) >= 42 and not any(i.startswith("popgym-") for i in ids)


def test_repeat_previous_pays_exactly_for_naming_the_suit_seen_four_cards_back():
    env = make_env("popgym:RepeatPreviousEasy", seed=3)
    assert env.obs_spec["vector"].shape == (4,) and env.act_spec.discrete and env.act_spec.size == 4
    first = env.reset()
    check_step(first, env.obs_spec)
    assert first["is_first"] and first["vector"].sum() == 1.0           # a suit, one-hot

    def oracle(seen):
        return int(np.argmax(seen[-4])) if len(seen) >= 4 else 0

    steps, ret = run(env, oracle)
    assert len(steps) == 52 and steps[-1]["is_terminal"] and ret == pytest.approx(1.0)
    _, wrong = run(env, lambda seen: (oracle(seen) + 1) % 4)
    assert wrong == pytest.approx(-1.0)


def test_the_gymnasium_id_works_too_and_a_seed_fixes_the_episode():
    a, b = make_env("popgym:popgym-RepeatFirstEasy-v0", seed=5), make_env("popgym:RepeatFirstEasy", seed=5)
    xs, ys = run(a, lambda seen: 0)[0], run(b, lambda seen: 0)[0]
    assert len(xs) == len(ys) and all(np.array_equal(x["vector"], y["vector"]) for x, y in zip(xs, ys))


def test_tuple_observations_flatten_and_board_cells_become_one_discrete_action():
    auto = make_env("popgym:AutoencodeEasy")
    assert auto.obs_spec["vector"].shape == (6,)                        # Tuple(Discrete(2), Discrete(4))
    check_step(auto.reset(), auto.obs_spec)
    ship = make_env("popgym:BattleshipEasy")
    assert ship.act_spec.discrete and ship.act_spec.size == 64           # MultiDiscrete([8, 8])
    ship.reset()
    assert np.array_equal(ship._action(8 * 3 + 5), [3, 5])
    check_step(ship.step(63), ship.obs_spec)
    with pytest.raises(EnvError, match=r"out of range"):
        ship.step(64)
    pendulum = make_env("popgym:PositionOnlyPendulumEasy")
    assert not pendulum.act_spec.discrete and pendulum.act_spec.size == 1
    pendulum.reset()
    check_step(pendulum.step(np.array([0.5], np.float32)), pendulum.obs_spec)
    assert pendulum.render().shape == (16, 32, 3)


@pytest.mark.parametrize("name, words", [
    ("popgym:RepeatPrevousEasy", "no task 'RepeatPrevousEasy'; did you mean 'RepeatPreviousEasy'"),
    ("popgym:Tetris", "no task 'Tetris'; see"),
])
def test_an_unknown_task_is_one_sentence(name, words):
    with pytest.raises(EnvError, match=words) as info:
        make_env(name)
    assert "\n" not in str(info.value)


def test_pixels_are_refused_in_one_sentence():
    with pytest.raises(EnvError, match="vectors"):
        make_env("popgym:RepeatPreviousEasy", obs="pixels")


def test_a_missing_package_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "popgym", None)                     # import popgym now fails
    with pytest.raises(EnvError, match=r"popgym package, which is not installed: pip install 'reverie\[popgym\]'"):
        make_env("popgym:RepeatPreviousEasy")
