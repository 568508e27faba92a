"""What the report needs from an environment, declared by the adapters: seconds per step and observation names."""

import numpy as np
import pytest

from reverie.envs import EnvError, make_env
from reverie.envs.spaces import Timing


@pytest.mark.parametrize("name, repeat, seconds, source", [
    ("gym:Pendulum-v1", None, 0.05, "dt"),                       # gymnasium's Pendulum: dt = 0.05
    ("gym:CartPole-v1", 2, 0.04, "tau x 2 (action repeat)"),     # CartPole's tau = 0.02, twice per agent step
    ("gym:MountainCar-v0", None, 1 / 30, "render_fps"),          # no physics step: one rendered frame
    ("atari:Pong", None, 4 / 60, "4 frames at 60 Hz"),           # ALE's frameskip at the console's 60 Hz
])
def test_adapters_declare_their_time_step(name, repeat, seconds, source):
    env = make_env(name, action_repeat=repeat)
    try:
        assert env.timing.seconds == pytest.approx(seconds) and env.timing.source == source
    finally:
        env.close()


def test_an_env_that_says_nothing_has_an_unknown_time_step_and_default_names():
    env = make_env("gym:reverie/MemoryCue-v0", time_limit=5)
    try:
        assert env.timing == Timing() and env.timing.seconds is None and env.timing.source == "unknown"
        assert env.obs_names == {"vector": tuple(f"vector[{i}]" for i in range(6))}
    finally:
        env.close()


def test_dm_control_names_its_observations_and_counts_the_action_repeat():
    env = make_env("dmc:cartpole-swingup", action_repeat=2)
    try:
        assert env.timing.seconds == pytest.approx(0.02) and env.timing.source.startswith("control_timestep x 2")
        assert env.obs_names == {"vector": ("position[0]", "position[1]", "position[2]", "velocity[0]",
                                            "velocity[1]")}
        assert len(env.obs_names["vector"]) == env.obs_spec["vector"].shape[0]
    finally:
        env.close()


def test_pixel_observations_have_no_named_dimensions():
    env = make_env("gym:Pendulum-v1", obs="pixels", size=(16, 16))
    try:
        assert env.obs_names == {} and env.timing.seconds == pytest.approx(0.05)
    finally:
        env.close()


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_a_time_step_must_be_a_positive_number_of_seconds(bad):
    with pytest.raises(EnvError, match="a time step must be a positive number of seconds"):
        Timing(bad, "dt")
    assert Timing(0.5, "dt").repeated(3) == Timing(1.5, "dt x 3 (action repeat)")
    assert Timing().repeated(3) == Timing() and np.isfinite(Timing(0.5).repeated(1).seconds)
