"""Dream fidelity: the pure computation on hand-made scores, and the policies played in a toy environment and
in a dream that is its exact model (correlation 1, regret 0) or a wrong one (the dream's favourite loses)."""

import gymnasium as gym
import numpy as np
import pytest
import torch

from reverie.analysis.fidelity import Episodes, dream_fidelity
from reverie.envs import GymEnv
from reverie.envs.policy_play import fixed_policies, play_dream, play_real
from reverie.models.base import CONT, REWARD
from reverie.specs import ActionSpec, ArraySpec


def ep(*values):
    v = np.asarray(values, float)
    return Episodes(v, v)


def test_fidelity_of_hand_made_scores():
    names = ["a", "b", "c"]
    exact = dream_fidelity(names, [ep(1, 3), ep(5), ep(9)], [ep(2), ep(5), ep(9)])
    assert exact.return_rank_correlation == pytest.approx(1.0) and exact.regret == 0.0
    assert exact.dream_choice == exact.real_choice == "c"
    np.testing.assert_allclose(exact.length_ratio, [1.0, 1.0, 1.0])
    reversed_ = dream_fidelity(names, [ep(9), ep(5), ep(1)], [ep(2), ep(5), ep(9)])
    assert reversed_.return_rank_correlation == pytest.approx(-1.0)
    assert reversed_.regret == 7.0 and reversed_.dream_choice == "a"       # 9 - 2 by trusting the dream
    # one swap among 4: rho = 1 - 6 * (1 + 1) / (4 * 15) = 0.8
    swap = dream_fidelity(list("abcd"), [ep(1), ep(3), ep(2), ep(4)], [ep(1), ep(2), ep(3), ep(4)])
    assert swap.return_rank_correlation == pytest.approx(0.8)
    flat = dream_fidelity(names, [ep(1), ep(1), ep(1)], [ep(2), ep(5), ep(9)])
    assert np.isnan(flat.return_rank_correlation)
    with pytest.raises(ValueError, match="one dream and one real"):
        dream_fidelity(names, [ep(1)], [ep(1)])


# -- a toy: a walk between two cliffs, and a model of it ------------------------------------------------
LEFT, RIGHT, LIMIT = -3, 6, 20      # always left lives 3 steps, always right 6, standing still 20 (the limit)


class Cliffs(gym.Env):
    """x starts at 0 and moves by action - 1; reward 1 a step; the episode ends at either cliff."""

    observation_space = gym.spaces.Box(-100, 100, (1,), np.float32)
    action_space = gym.spaces.Discrete(3)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.x, self.t = 0, 0
        return np.zeros(1, np.float32), {}

    def step(self, action):
        self.x += int(action) - 1
        self.t += 1
        return (np.array([self.x], np.float32), 1.0, not LEFT < self.x < RIGHT, self.t >= LIMIT, {})


class CliffModel(torch.nn.Module):
    """The walk as a reverie world model with reward and cont: exact, or wrong (no left cliff, and a
    bonus of 2 for every step to the left)."""

    capabilities = frozenset({REWARD, CONT})
    obs_spec = {"vector": ArraySpec((1,), np.dtype(np.float32))}
    act_spec = ActionSpec(True, 3)
    feat_size = 1

    def __init__(self, wrong=False):
        super().__init__()
        self.wrong = wrong

    def initial(self, batch):
        return {"x": torch.zeros(batch, 1), "a": torch.zeros(batch, 3)}

    def observe(self, obs, action, is_first, state=None):
        x = obs["vector"].float()
        states = {"x": x, "a": action}
        return states, {"x": x[:, -1], "a": action[:, -1]}

    def step(self, state, action):
        return {"x": state["x"] + (action.argmax(-1, keepdim=True) - 1).float(), "a": action}

    def features(self, state):
        return state["x"]

    def reward(self, state):
        return 1.0 + 2.0 * state["a"][..., 0] * float(self.wrong)

    def cont(self, state):
        x = state["x"][..., 0]
        alive = (x < RIGHT) if self.wrong else (x > LEFT) & (x < RIGHT)
        return alive.float()


@pytest.mark.parametrize("wrong", [False, True])
def test_fixed_policies_in_the_real_walk_and_its_dream(wrong):
    env = GymEnv(Cliffs(), obs="state", seed=0)
    policies = fixed_policies(env.act_spec)
    assert [p.name for p in policies] == ["always 0", "always 1", "always 2", "uniform random", "random held 1-10"]
    real, dream = [], []
    model = CliffModel(wrong)
    for i, policy in enumerate(policies):
        episodes, starts = play_real(env, policy, 300, seed=i, max_steps=LIMIT)
        real.append(episodes)
        dream.append(play_dream(model, starts, policy, 300, seed=100 + i, max_steps=LIMIT))
    np.testing.assert_array_equal([r.length.mean() for r in real[:3]], [3, LIMIT, 6])
    fid = dream_fidelity([p.name for p in policies], dream, real)
    if not wrong:
        np.testing.assert_array_equal(fid.dream_length[:3], fid.real_length[:3])
        # held random walks reach a cliff sooner than uniform ones, in the dream as in reality
        assert fid.real_length[4] < fid.real_length[3] and fid.dream_length[4] < fid.dream_length[3]
        assert fid.return_rank_correlation == pytest.approx(1.0) and fid.length_rank_correlation == pytest.approx(1.0)
        assert fid.regret == 0.0 and fid.dream_choice == "always 1"
    else:
        assert fid.dream_choice == "always 0" and fid.dream_return[0] == 3 * LIMIT   # 20 steps of 1 + 2
        assert fid.regret == LIMIT - 3                                   # it lives 3 steps in reality
        assert fid.return_rank_correlation < 0.5
