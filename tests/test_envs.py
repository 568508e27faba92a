"""Behaviour of the environment adapters, wrappers and BatchEnv."""

from __future__ import annotations

import functools
import sys
import textwrap

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reverie.envs import (
    STEP_KEYS,
    ActionSpec,
    BatchEnv,
    EnvError,
    GymEnv,
    check_step,
    make_batch_env,
    make_env,
)
from reverie.envs.gym_env import resize_image
from reverie.envs.spaces import unit_to_bounds


def run_episode(env, action_fn, max_steps=10_000):
    """Reset and step until is_last; returns the list of step dicts (first one included)."""
    steps = [env.reset()]
    while not steps[-1]["is_last"] and len(steps) <= max_steps:
        steps.append(env.step(action_fn(len(steps) - 1)))
    return steps


# --- user-defined envs, registered inside the tests ---------------------------------------


class RecordingBoxEnv(gym.Env):
    """Records the env-side action it receives; observation is that action."""

    metadata = {"render_modes": []}

    def __init__(self):
        self.action_space = gym.spaces.Box(
            np.array([-2.0, 0.0], np.float32), np.array([3.0, 10.0], np.float32), dtype=np.float32
        )
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
        self.received = None

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(2, np.float32), {}

    def step(self, action):
        self.received = np.asarray(action)
        return self.received.astype(np.float32), 0.0, False, False, {}


class DictObsEnv(gym.Env):
    """Dict observation: a vector, a constant-colour camera and a discrete mode."""

    metadata = {"render_modes": []}
    COLOUR = np.array([10, 200, 30], np.uint8)

    def __init__(self):
        self.observation_space = gym.spaces.Dict(
            {
                "pos": gym.spaces.Box(-1.0, 1.0, (2, 1), np.float64),
                "camera": gym.spaces.Box(0, 255, (8, 8, 3), np.uint8),
                "mode": gym.spaces.Discrete(3, start=1),
            }
        )
        self.action_space = gym.spaces.Discrete(2)
        self._t = 0

    def _obs(self):
        camera = np.broadcast_to(self.COLOUR, (8, 8, 3)).copy()
        return {"pos": np.full((2, 1), 0.5 * self._t), "camera": camera, "mode": 1 + self._t % 3}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._t = 0
        return self._obs(), {}

    def step(self, action):
        self._t += 1
        return self._obs(), float(action), self._t >= 4, False, {}


@pytest.fixture(scope="module", autouse=True)
def registered_envs():
    gym.register(id="ReverieTestRecording-v0", entry_point=RecordingBoxEnv)
    gym.register(id="ReverieTestDict-v0", entry_point=DictObsEnv)
    yield
    for env_id in ("ReverieTestRecording-v0", "ReverieTestDict-v0"):
        gym.registry.pop(env_id, None)


# --- gymnasium ------------------------------------------------------------------------------


def test_cartpole_reset_and_step_follow_the_step_dict_convention():
    env = make_env("gym:CartPole-v1", seed=1)
    assert env.act_spec == ActionSpec(discrete=True, size=2)
    first = env.reset()
    assert set(first) == {"vector", *STEP_KEYS}
    check_step(first, env.obs_spec)
    assert first["is_first"] and not first["is_last"] and first["reward"] == 0
    step = env.step(np.int64(1))
    check_step(step, env.obs_spec)
    assert not step["is_first"] and step["reward"] == 1.0
    # Pushing right (action 1) raises the cart velocity (obs[1]).
    assert step["vector"][1] > first["vector"][1]
    # The same seed replays the same start; another seed does not.
    assert np.array_equal(make_env("gym:CartPole-v1", seed=1).reset()["vector"], first["vector"])
    assert not np.array_equal(make_env("gym:CartPole-v1", seed=2).reset()["vector"], first["vector"])


def test_truncation_is_last_without_terminal_and_falling_pole_is_terminal():
    # gymnasium's own TimeLimit (truncated=True), alternating pushes keep the pole up.
    env = GymEnv("CartPole-v1", seed=0, max_episode_steps=3)
    steps = run_episode(env, lambda t: t % 2)
    assert len(steps) == 4 and steps[-1]["is_last"] and not steps[-1]["is_terminal"]
    # reverie's TimeLimit wrapper does the same.
    steps = run_episode(make_env("gym:CartPole-v1", time_limit=5), lambda t: t % 2)
    assert len(steps) == 6 and steps[-1]["is_last"] and not steps[-1]["is_terminal"]
    # Always pushing right lets the pole fall: a real termination, well before 500 steps.
    steps = run_episode(make_env("gym:CartPole-v1"), lambda t: 1)
    assert len(steps) < 50 and steps[-1]["is_terminal"] and steps[-1]["is_last"]
    assert not any(s["is_last"] or s["is_terminal"] for s in steps[:-1])


def test_action_repeat_sums_rewards_and_stops_at_the_episode_end():
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, size=(100, 1)).astype(np.float32)
    single = run_episode(make_env("gym:Pendulum-v1", seed=3), lambda t: actions[t // 3])
    repeated = run_episode(make_env("gym:Pendulum-v1", seed=3, action_repeat=3), lambda t: actions[t])
    assert len(single) == 201  # Pendulum truncates after 200 steps
    assert len(repeated) == 1 + 67  # 66 full repeats + one cut short after 2 steps
    for t in range(1, len(repeated)):
        chunk = single[1 + 3 * (t - 1) : 1 + 3 * t]
        np.testing.assert_allclose(repeated[t]["reward"], sum(float(s["reward"]) for s in chunk), rtol=1e-5)
        np.testing.assert_array_equal(repeated[t]["vector"], chunk[-1]["vector"])
    assert repeated[-1]["is_last"] and not repeated[-1]["is_terminal"]


def test_continuous_actions_are_rescaled_to_the_true_bounds():
    env = make_env("gym:ReverieTestRecording-v0")
    inner = env._env.unwrapped
    assert env.act_spec == ActionSpec(discrete=False, size=2)
    env.reset()
    for action, expected in [([-1, 1], [-2, 10]), ([1, -1], [3, 0]), ([0, 0], [0.5, 5]), ([5, -7], [3, 0])]:
        env.step(np.array(action, np.float32))
        np.testing.assert_allclose(inner.received, expected, atol=1e-6)
        assert inner.received.dtype == np.float32


@settings(max_examples=50, deadline=None)
@given(
    low=st.floats(-100, 100),
    width=st.floats(1e-3, 100),
    unit=st.floats(-1, 1),
)
def test_unit_to_bounds_is_affine_and_invertible(low, width, unit):
    lo, hi = np.array([low]), np.array([low + width])
    value = unit_to_bounds(np.array([unit]), lo, hi)
    assert lo[0] - 1e-9 <= value[0] <= hi[0] + 1e-9
    np.testing.assert_allclose(2 * (value - lo) / (hi - lo) - 1, [unit], atol=1e-6)


def test_user_dict_env_keeps_keys_and_converts_each_entry():
    env = make_env("gym:ReverieTestDict-v0", size=(4, 4))
    assert set(env.obs_spec) == {"pos", "camera", "mode"}
    first = env.reset()
    check_step(first, env.obs_spec)
    assert first["pos"].dtype == np.float32 and first["pos"].shape == (2,)
    # An image resized keeps a constant colour constant.
    assert first["camera"].shape == (4, 4, 3)
    assert np.all(first["camera"] == DictObsEnv.COLOUR)
    # Discrete(3, start=1): value 1 is the first one-hot slot.
    np.testing.assert_array_equal(first["mode"], [1, 0, 0])
    steps = [env.step(a) for a in (1, 0, 1, 1)]
    np.testing.assert_allclose(steps[1]["pos"], [1.0, 1.0])
    np.testing.assert_array_equal(steps[1]["mode"], [0, 0, 1])
    assert [float(s["reward"]) for s in steps] == [1, 0, 1, 1]
    assert steps[-1]["is_terminal"] and not steps[-2]["is_last"]


def test_user_env_registered_in_an_imported_module(tmp_path, monkeypatch):
    (tmp_path / "reverie_user_envs.py").write_text(
        textwrap.dedent(
            """
            import gymnasium as gym
            gym.register(
                id="ReverieUserCartPole-v0",
                entry_point="gymnasium.envs.classic_control:CartPoleEnv",
                max_episode_steps=7,
            )
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        steps = run_episode(make_env("gym:reverie_user_envs:ReverieUserCartPole-v0"), lambda t: t % 2)
        assert len(steps) == 8 and not steps[-1]["is_terminal"]
    finally:
        gym.registry.pop("ReverieUserCartPole-v0", None)
        sys.modules.pop("reverie_user_envs", None)


def test_gym_pixels_are_the_resized_render():
    env = make_env("gym:CartPole-v1", obs="pixels", size=(32, 48))
    assert set(env.obs_spec) == {"image"} and env.obs_spec["image"].shape == (32, 48, 3)
    first = env.reset()
    check_step(first, env.obs_spec)
    frame = env.render()
    assert frame.shape == (400, 600, 3) and frame.dtype == np.uint8
    np.testing.assert_array_equal(first["image"], resize_image(frame, (32, 48)))
    assert first["image"].std() > 0  # something is drawn
    for _ in range(8):
        step = env.step(1)
    assert not np.array_equal(step["image"], first["image"])  # the cart moved right


def test_step_before_reset_and_after_the_end_is_refused():
    env = make_env("gym:CartPole-v1", time_limit=1)
    with pytest.raises(EnvError, match="reset"):
        env.step(0)
    env.reset()
    assert env.step(0)["is_last"]
    with pytest.raises(EnvError, match="reset"):
        env.step(0)


def test_bad_actions_are_named():
    env = make_env("gym:CartPole-v1")
    env.reset()
    with pytest.raises(EnvError, match=r"out of range.*\[0, 2\)"):
        env.step(2)
    with pytest.raises(EnvError, match="integer index"):
        env.step(0.5)
    pend = make_env("gym:Pendulum-v1")
    pend.reset()
    with pytest.raises(EnvError, match=r"float32 \[1\]"):
        pend.step(np.zeros(3, np.float32))


# --- dm_control -----------------------------------------------------------------------------


def test_dmc_state_time_limit_end_is_not_terminal():
    env = make_env("dmc:cartpole-swingup", seed=0, action_repeat=8)
    assert env.obs_spec["vector"].shape == (5,)  # position 3 + velocity 2
    assert env.act_spec == ActionSpec(discrete=False, size=1)
    steps = run_episode(env, lambda t: np.array([np.sin(t)], np.float32))
    assert len(steps) == 1 + 1000 // 8
    check_step(steps[-1], env.obs_spec)
    assert steps[-1]["is_last"] and not steps[-1]["is_terminal"]
    rewards = np.array([s["reward"] for s in steps[1:]])
    assert np.all((rewards >= 0) & (rewards <= 8 + 1e-5))  # per-step reward in [0, 1], 8 repeats
    assert np.array_equal(make_env("dmc:cartpole-swingup", seed=0).reset()["vector"], steps[0]["vector"])


def test_dmc_discount_zero_end_is_terminal():
    import dm_env

    env = make_env("dmc:cartpole-swingup")
    first = env.reset()
    observation = env._env.step(np.zeros(1)).observation
    env._env.step = lambda action: dm_env.termination(reward=2.5, observation=observation)
    step = env.step(np.zeros(1, np.float32))
    assert step["is_last"] and step["is_terminal"] and step["reward"] == 2.5
    assert step["vector"].shape == first["vector"].shape


def test_dmc_pixels():
    env = make_env("dmc:cartpole-swingup", obs="pixels", size=(48, 64))
    first = env.reset()
    check_step(first, env.obs_spec)
    assert first["image"].shape == (48, 64, 3) and first["image"].std() > 0
    np.testing.assert_array_equal(env.render(), first["image"])
    moved = first
    for _ in range(10):
        moved = env.step(np.ones(1, np.float32))
    assert not np.array_equal(moved["image"], first["image"])  # the cart moved


# --- Atari ----------------------------------------------------------------------------------


def test_atari_pong_pixels_frameskip_and_minimal_actions():
    env = make_env("atari:Pong", seed=0)
    assert env.act_spec == ActionSpec(discrete=True, size=6)  # Pong's minimal action set
    first = env.reset()
    check_step(first, env.obs_spec)
    assert first["image"].shape == (64, 64, 3)
    np.testing.assert_array_equal(first["image"], resize_image(env.render(), (64, 64)))
    ale = env._env.unwrapped.ale
    start = ale.getEpisodeFrameNumber()
    step = env.step(0)
    check_step(step, env.obs_spec)
    assert ale.getEpisodeFrameNumber() - start == 4  # default frameskip
    env2 = make_env("atari:pong", action_repeat=2, size=(32, 32))
    env2.reset()
    start = env2._env.unwrapped.ale.getEpisodeFrameNumber()
    assert env2.step(1)["image"].shape == (32, 32, 3)
    assert env2._env.unwrapped.ale.getEpisodeFrameNumber() - start == 2


# --- BatchEnv -------------------------------------------------------------------------------


def test_batch_env_resets_an_env_after_its_last_step():
    fns = [
        functools.partial(make_env, "gym:CartPole-v1", seed=seed, time_limit=limit)
        for seed, limit in ((0, 2), (1, 3))
    ]
    batch = BatchEnv(fns)
    assert batch.num_envs == 2 and batch.obs_spec["vector"].shape == (4,)
    first = batch.reset()
    assert first["vector"].shape == (2, 4) and first["is_first"].all()
    flags = []
    for _ in range(4):
        out = batch.step(np.array([0, 1]))
        flags.append((out["is_first"].tolist(), out["is_last"].tolist()))
    assert flags == [
        ([False, False], [False, False]),
        ([False, False], [True, False]),
        ([True, False], [False, True]),  # env 0 restarted; env 1 hits its limit
        ([False, True], [False, False]),
    ]
    # Env 0's second episode starts where a lone env's second reset would.
    lone = make_env("gym:CartPole-v1", seed=0, time_limit=2)
    run_episode(lone, lambda t: 0)
    batch2 = BatchEnv(fns)
    batch2.reset()
    batch2.step(np.array([0, 0]))
    batch2.step(np.array([0, 0]))
    restarted = batch2.step(np.array([1, 1]))  # env 0's action is ignored
    np.testing.assert_array_equal(restarted["vector"][0], lone.reset()["vector"])
    with pytest.raises(EnvError, match=r"int actions \[2\]"):
        batch.step(np.zeros((2, 1), np.float32))
    batch.close()
    batch2.close()


def test_parallel_batch_matches_serial():
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, size=(12, 2, 1)).astype(np.float32)
    outputs = {}
    for parallel in (False, True):
        with make_batch_env("gym:Pendulum-v1", 2, seed=5, parallel=parallel, time_limit=5) as batch:
            assert batch.act_spec == ActionSpec(discrete=False, size=1)
            trace = [batch.reset()] + [batch.step(a) for a in actions]
            outputs[parallel] = trace
    for serial_step, parallel_step in zip(outputs[False], outputs[True]):
        assert serial_step.keys() == parallel_step.keys()
        for key in serial_step:
            np.testing.assert_array_equal(serial_step[key], parallel_step[key])
            assert serial_step[key].dtype == parallel_step[key].dtype
    assert outputs[True][6]["is_first"].all()  # auto-reset after the 5-step limit
    assert not np.array_equal(outputs[True][0]["vector"][0], outputs[True][0]["vector"][1])


def _broken_env():
    raise RuntimeError("boom while building the env")


def test_parallel_worker_errors_come_back_and_close_ends_workers():
    with pytest.raises(EnvError, match="environment 1 failed in its worker process: RuntimeError: boom") as caught:
        BatchEnv([functools.partial(make_env, "gym:CartPole-v1"), _broken_env], parallel=True)
    # the worker's whole traceback comes back with the one-sentence error, for whoever debugs the env
    assert "in _broken_env" in caught.value.worker_traceback
    batch = BatchEnv([lambda i=i: make_env("gym:CartPole-v1", seed=i) for i in range(2)], parallel=True)
    processes = [h._process for h in batch._handles]
    assert all(p.is_alive() for p in processes)
    batch.reset()
    message = r"environment 1 failed in its worker process: EnvError: discrete action 7"
    with pytest.raises(EnvError, match=message):
        batch.step(np.array([0, 7]))
    batch.close()
    assert not any(p.is_alive() for p in processes)
    batch.close()  # idempotent


# --- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, kwargs, pattern",
    [
        ("foo:Bar", {}, r"unknown environment suite 'foo'.*\('gym', 'dmc', 'atari', 'minatar', 'popgym'\)"),
        ("CartPole-v1", {}, r"'gym:CartPole-v1'"),
        ("gym:CartPole-v9", {}, r"no environment 'CartPole-v9'; did you mean 'CartPole-v1'"),
        ("gym:CartPol-v1", {}, r"did you mean 'CartPole-v1'"),
        ("gym:no_such_module_xyz:Foo-v0", {}, r"cannot import module 'no_such_module_xyz'"),
        ("dmc:cartpole-swingupp", {}, r"no task 'cartpole-swingupp'; did you mean 'cartpole-swingup'"),
        ("dmc:walker-wlak", {}, r"did you mean 'walker-walk'"),
        ("atari:Pongg", {}, r"no Atari game 'Pongg'; did you mean 'Pong'"),
        ("atari:Pong", {"obs": "state"}, r"pixel observations only.*obs='pixels'"),
        ("gym:CartPole-v1", {"obs": "rgb"}, r"obs='rgb' is not an observation mode"),
        ("gym:CartPole-v1", {"action_repeat": 0}, r"action_repeat must be a positive integer"),
        ("gym:CartPole-v1", {"size": (64,)}, r"size must be \(height, width\)"),
    ],
)
def test_error_messages(name, kwargs, pattern):
    with pytest.raises(EnvError, match=pattern):
        make_env(name, **kwargs)


@pytest.mark.parametrize(
    "module, suite, extra",
    [("dm_control", "dmc:cartpole-swingup", "dmc"), ("ale_py", "atari:Pong", "atari")],
)
def test_missing_optional_package_says_what_to_install(monkeypatch, module, suite, extra):
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` fail
    with pytest.raises(EnvError, match=rf"pip install 'reverie\[{extra}\]'"):
        make_env(suite)


@pytest.mark.parametrize(
    "observation_space, action_space, pattern",
    [
        (gym.spaces.Box(-1, 1, (2,)), gym.spaces.MultiDiscrete([2, 3]), r"action space MultiDiscrete"),
        (gym.spaces.Tuple([gym.spaces.Discrete(2)]), gym.spaces.Discrete(2), r"observation space .*Tuple"),
        (gym.spaces.Dict({"reward": gym.spaces.Discrete(2)}), gym.spaces.Discrete(2), r"'reward' clashes"),
        (gym.spaces.Box(-1, 1, (2,)), gym.spaces.Box(-np.inf, np.inf, (1,)), r"unbounded"),
    ],
)
def test_unsupported_spaces_are_named(observation_space, action_space, pattern):
    class Custom(gym.Env):
        def __init__(self):
            self.observation_space, self.action_space = observation_space, action_space

    with pytest.raises(EnvError, match=pattern):
        GymEnv(Custom())
