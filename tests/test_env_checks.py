"""An environment whose outputs break its declared spaces is answered in one sentence, checked once.

Each test env is a small gymnasium.Env that declares one observation space
and returns something else, given to GymEnv built (GymEnv(env)) or by a
registered id (the path ``gym:ID`` and ``reverie train --env`` take).
"""

import types
from typing import ClassVar

import gymnasium as gym
import numpy as np
import pytest

from reverie.cli import main
from reverie.envs import BatchEnv, EnvError, GymEnv, gym_env, make_env, make_step
from reverie.envs.checks import check_dm_observation
from reverie.specs import ActionSpec, ArraySpec

BOX4 = gym.spaces.Box(-np.inf, np.inf, (4,), np.float32)


class Scripted(gym.Env):
    """Declares ``observation_space`` but returns ``reset_obs`` and ``step_obs`` (and the given step values)."""

    action_space = gym.spaces.Discrete(2)

    def __init__(self, space=BOX4, reset_obs=None, step_obs=None, reward=0.0, terminated=False, truncated=False,
                 step_result=None):
        self.observation_space = space
        self.reset_obs = space.sample() if reset_obs is None else reset_obs
        self.step_obs = self.reset_obs if step_obs is None else step_obs
        self.reward, self.terminated, self.truncated = reward, terminated, truncated
        self.step_result = step_result

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self.reset_obs, {}

    def step(self, action):
        if self.step_result is not None:
            return self.step_result
        return self.step_obs, self.reward, self.terminated, self.truncated, {}


class FiveForFour(Scripted):
    """Declares a Box of 4 numbers and returns 5 (a registered id, also for the command line)."""

    def __init__(self):
        super().__init__(BOX4, reset_obs=np.zeros(5, np.float32))


class WrongDictKey(Scripted):
    """Declares Dict(pos, vel) and returns Dict(pos, velocity)."""

    def __init__(self):
        space = gym.spaces.Dict({"pos": gym.spaces.Box(-1, 1, (3,)), "vel": gym.spaces.Box(-1, 1, (2,))})
        super().__init__(space, reset_obs={"pos": np.zeros(3, np.float32), "velocity": np.zeros(2, np.float32)})


gym.register("ReverieCheckFiveForFour-v0", entry_point=FiveForFour)
gym.register("ReverieCheckWrongDictKey-v0", entry_point=WrongDictKey)


def first_step(env):
    """Reset ``env`` (a gymnasium.Env) through GymEnv and take one step."""
    adapter = GymEnv(env)
    adapter.reset()
    return adapter.step(0)


# -- (a) shapes ------------------------------------------------------------------------------------


def test_a_box_of_four_returning_five_numbers_is_named_at_reset():
    with pytest.raises(EnvError, match=r"reset\(\) returned observation with shape \[5\], but observation_space "
                                       r"declares shape \[4\]"):
        first_step(FiveForFour())


def test_a_wrong_shape_first_seen_at_the_first_step_is_named_there():
    with pytest.raises(EnvError, match=r"step\(\) returned observation with shape \[2, 2\].*declares shape \[4\]"):
        first_step(Scripted(step_obs=np.zeros((2, 2), np.float32)))


def test_a_registered_id_gets_the_same_sentence():
    env = make_env("gym:ReverieCheckFiveForFour-v0")
    with pytest.raises(EnvError, match=r"ReverieCheckFiveForFour-v0 reset\(\) returned observation with shape \[5\]"):
        env.reset()


# -- (b) dtypes ------------------------------------------------------------------------------------


@pytest.mark.parametrize("obs, dtype", [
    (np.array(["a", "b", "c", "d"]), "<U1"),
    (np.array([1.0, None, 2.0, 3.0], dtype=object), "object"),
])
def test_text_or_objects_where_numbers_are_declared(obs, dtype):
    with pytest.raises(EnvError, match=rf"returned observation with dtype {dtype} \(not numbers\), but "
                                       r"observation_space declares float32 numbers"):
        first_step(Scripted(reset_obs=obs))


def test_a_float_image_where_uint8_is_declared():
    space = gym.spaces.Box(0, 255, (8, 8, 3), np.uint8)
    with pytest.raises(EnvError, match="returned observation as float32, but observation_space declares uint8 images"):
        first_step(Scripted(space, reset_obs=np.zeros((8, 8, 3), np.float32)))


def test_float64_for_a_float32_box_is_accepted():
    step = first_step(Scripted(reset_obs=np.zeros(4, np.float64)))
    assert step["vector"].dtype == np.float32


# -- (c) bounds ------------------------------------------------------------------------------------


def test_a_value_above_a_bounded_box_names_entry_bound_and_value():
    space = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
    with pytest.raises(EnvError, match=r"reset\(\) returned observation\[1\] = 3, above the high bound 1 that "
                                       "observation_space declares"):
        first_step(Scripted(space, reset_obs=np.array([0.0, 3.0, 0.0], np.float32)))


def test_a_value_below_a_bound_of_one_dimension_only():
    low = np.array([-np.inf, 0.0], np.float32)
    space = gym.spaces.Box(low, np.inf, (2,), np.float32)
    with pytest.raises(EnvError, match=r"step\(\) returned observation\[1\] = -0.5, below the low bound 0"):
        first_step(Scripted(space, reset_obs=np.array([-1e6, 0.0], np.float32),
                            step_obs=np.array([-1e6, -0.5], np.float32)))


# -- (d) Dict spaces and other spaces --------------------------------------------------------------


def test_a_dict_with_a_wrong_key_through_a_registered_id():
    env = make_env("gym:ReverieCheckWrongDictKey-v0")   # gymnasium's own checker would assert first
    with pytest.raises(EnvError, match=r"returned observation with keys \['pos', 'velocity'\], but observation_space "
                                       r"declares \['pos', 'vel'\] \(missing \['vel'\], unexpected \['velocity'\]\)"):
        env.reset()


def test_a_dict_missing_a_key_and_a_dict_entry_of_the_wrong_shape():
    space = gym.spaces.Dict({"pos": gym.spaces.Box(-1, 1, (3,)), "vel": gym.spaces.Box(-1, 1, (2,))})
    with pytest.raises(EnvError, match=r"declares \['pos', 'vel'\] \(missing \['vel'\]\)"):
        first_step(Scripted(space, reset_obs={"pos": np.zeros(3, np.float32)}))
    with pytest.raises(EnvError, match=r"returned observation\['vel'\] with shape \[4\], but observation_space "
                                       r"declares shape \[2\]"):
        first_step(Scripted(space, reset_obs={"pos": np.zeros(3, np.float32), "vel": np.zeros(4, np.float32)}))


def test_a_dict_where_a_box_is_declared():
    with pytest.raises(EnvError, match=r"returned observation as a dict with keys \['x'\], but observation_space "
                                       "declares Box"):
        first_step(Scripted(reset_obs={"x": np.zeros(4, np.float32)}))


def test_a_discrete_observation_outside_its_range_or_not_an_integer():
    space = gym.spaces.Discrete(3)
    with pytest.raises(EnvError, match=r"returned observation = 3, outside observation_space Discrete\(3\)"):
        first_step(Scripted(space, reset_obs=3))
    with pytest.raises(EnvError, match=r"returned observation = 1.5, but observation_space is Discrete\(3\)"):
        first_step(Scripted(space, reset_obs=1.5))


def test_a_multibinary_observation_holding_other_values():
    space = gym.spaces.MultiBinary(3)
    with pytest.raises(EnvError, match=r"holding 2, but observation_space is MultiBinary\(3\)"):
        first_step(Scripted(space, reset_obs=np.array([0, 1, 2], np.int8)))


# -- rewards, flags and the step API ---------------------------------------------------------------


@pytest.mark.parametrize("reward, message", [
    (float("nan"), r"returned reward nan, but a reward must be finite"),
    (np.array([1.0, 2.0]), r"returned reward array\(\[1., 2.\]\) \(ndarray\), but a reward must be one number"),
    ("1.0", r"returned reward '1.0' \(str\), but a reward must be one number"),
])
def test_a_reward_that_is_not_one_finite_number(reward, message):
    with pytest.raises(EnvError, match=message):
        first_step(Scripted(reward=reward))


def test_flags_that_are_not_bools():
    with pytest.raises(EnvError, match=r"returned terminated=0 \(int\), but terminated must be a bool"):
        first_step(Scripted(terminated=0))
    with pytest.raises(EnvError, match=r"returned truncated=None \(NoneType\), but truncated must be a bool"):
        first_step(Scripted(truncated=None))
    step = first_step(Scripted(terminated=np.bool_(True)))   # numpy bools are bools
    assert step["is_terminal"]


def test_the_old_four_value_step_api():
    with pytest.raises(EnvError, match=r"step\(\) returned 4 values, not the five values"):
        first_step(Scripted(step_result=(np.zeros(4, np.float32), 0.0, False, {})))


# -- checked once, and everywhere steps enter ------------------------------------------------------


def test_only_the_first_reset_and_step_are_checked(monkeypatch):
    calls = {"reset": 0, "step": 0}
    for name in calls:
        original = getattr(gym_env, f"check_gym_{name}")

        def counting(*args, _name=name, _original=original):
            calls[_name] += 1
            return _original(*args)

        monkeypatch.setattr(gym_env, f"check_gym_{name}", counting)
    env = GymEnv("CartPole-v1")
    step = env.reset()
    for _ in range(30):
        step = env.reset() if step["is_last"] else env.step(0)
    assert calls == {"reset": 1, "step": 1}


class OwnEnv:
    """An Env of one's own (no gymnasium) whose steps have one observation number too many."""

    obs_spec: ClassVar[dict[str, ArraySpec]] = {"vector": ArraySpec((4,), np.dtype(np.float32))}
    act_spec = ActionSpec(discrete=True, size=2)

    def __init__(self, size=4):
        self.size = size

    def reset(self):
        return make_step({"vector": np.zeros(self.size, np.float32)}, is_first=True)

    def step(self, action):
        return make_step({"vector": np.zeros(self.size, np.float32)})

    def render(self):
        return np.zeros((8, 8, 3), np.uint8)

    def close(self):
        pass


def test_a_batch_names_the_env_that_breaks_the_step_convention():
    batch = BatchEnv([OwnEnv, lambda: OwnEnv(size=5)])
    with pytest.raises(EnvError, match=r"environment 1 broke the step-dict convention: observation 'vector' is "
                                       r"float32\[5\] but its spec says float32\[4\]"):
        batch.reset()
    batch.close()


def test_dm_control_observations_are_checked_against_their_spec():
    spec = {"position": types.SimpleNamespace(shape=(3,)), "velocity": types.SimpleNamespace(shape=(2,))}
    check_dm_observation({"position": np.zeros(3), "velocity": np.zeros(2)}, spec, "walker-walk reset()")
    with pytest.raises(EnvError, match=r"walker-walk reset\(\) returned observation\['velocity'\] with shape \[3\], "
                                       r"but observation_spec\(\) declares \[2\]"):
        check_dm_observation({"position": np.zeros(3), "velocity": np.zeros(3)}, spec, "walker-walk reset()")
    with pytest.raises(EnvError, match=r"returned observation keys \['position'\], but observation_spec\(\) declares"):
        check_dm_observation({"position": np.zeros(3)}, spec, "walker-walk reset()")


# -- the command line ------------------------------------------------------------------------------


def test_training_on_an_env_that_breaks_its_space_exits_with_one_sentence(tmp_path, capsys):
    code = main(["train", "--preset", "tiny", "--env", "gym:ReverieCheckFiveForFour-v0", "--steps", "50",
                 "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == (
        "error: ReverieCheckFiveForFour-v0 reset() returned observation with shape [5], but observation_space "
        "declares shape [4]; return what observation_space declares or declare what the env returns")
