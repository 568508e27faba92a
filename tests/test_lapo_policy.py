"""LAPO's second half: PPO's advantages and clipped loss by hand and against a slow reference, PPO solving a bandit,
the decoder's logistic regression, a policy cloned onto codes that are a function of the frame pair, the scripted
Breakout player, and `reverie record` -> `reverie train lapo --dataset` -> `reverie lapo-policy` end to end."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from torch import nn

from reverie.agents.latent_action import windows_of
from reverie.behavior.ppo import PPOConfig, Rollout, gae, ppo_loss, ppo_update
from reverie.config import ConfigError
from reverie.envs.breakout_expert import LEFT, NOOP, RIGHT, follow_ball, landing_column
from reverie.models.latent_policy import LatentPolicy, LatentPolicyConfig, fit_linear_decoder
from reverie.training.lapo_policy import LapoPolicyConfig, clone_policy


# -- PPO ---------------------------------------------------------------------------------------------
def col(*values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)[:, None]


def test_gae_by_hand_an_ended_episode_is_not_bootstrapped_and_a_cut_one_is():
    rewards, values = col(0.0, 1.0, 2.0), col(0.5, 1.0, 2.0)
    no, yes = torch.tensor([[False], [False], [False]]), torch.tensor([[False], [False], [True]])
    # ended at row 2: delta_1 = 2 - 1 = 1, delta_0 = 1 + 0.9 * 1 - 0.5 = 1.4, A_0 = 1.4 + 0.9 * 0.8 * 1 = 2.12
    ended = gae(rewards, values, terminal=yes, last=yes, gamma=0.9, lam=0.8)
    assert ended[:, 0].tolist() == pytest.approx([2.12, 1.0])
    # cut by a time limit at row 2: its value bootstraps, delta_1 = 2 + 0.9 * 2 - 1 = 2.8, A_0 = 1.4 + 0.72 * 2.8
    cut = gae(rewards, values, terminal=no, last=yes, gamma=0.9, lam=0.8)
    assert cut[:, 0].tolist() == pytest.approx([3.416, 2.8])


def slow_gae(rewards, values, terminal, last, gamma, lam):
    """The definition: A_t = sum_k (gamma lam)^k delta_{t+k} over the rest of t's episode within the rollout."""
    steps, envs = rewards.shape[0] - 1, rewards.shape[1]
    out = np.zeros((steps, envs))
    for n in range(envs):
        for t in range(steps):
            total, k = 0.0, 0
            while t + k < steps:
                u = t + k
                delta = rewards[u + 1, n] + gamma * (1 - terminal[u + 1, n]) * values[u + 1, n] - values[u, n]
                total += (gamma * lam) ** k * delta
                if last[u + 1, n]:
                    break
                k += 1
            out[t, n] = total
    return out


def test_gae_matches_the_slow_definition_across_episode_ends_and_cuts():
    rng = np.random.default_rng(0)
    rewards, values = rng.normal(size=(41, 3)), rng.normal(size=(41, 3))
    last = rng.random((41, 3)) < 0.15
    terminal = last & (rng.random((41, 3)) < 0.5)      # half the ends are time-limit cuts
    fast = gae(*(torch.as_tensor(a) for a in (rewards, values, terminal, last)), gamma=0.97, lam=0.9)
    valid = ~last[:-1]                                  # rows with is_last are no decisions
    assert np.allclose(fast.numpy()[valid], slow_gae(rewards, values, terminal, last, 0.97, 0.9)[valid])


def test_the_clipped_surrogate_by_hand_and_no_gradient_through_a_clipped_ratio():
    ratio = torch.tensor([1.5, 1.5, 0.5, 0.5])
    adv = torch.tensor([1.0, -1.0, 1.0, -1.0])
    logp = ratio.log().requires_grad_(True)
    old = torch.zeros(4)
    losses = ppo_loss(logp, old, adv, values=torch.tensor([1.0, 2.0, 0.0, 0.0]), returns=torch.zeros(4),
                      entropy=torch.tensor([0.5, 0.5, 1.0, 1.0]), clip=0.2)
    # min(rho A, clip(rho) A): 1.5 -> 1.2 (clipped), -1.5, 0.5, -0.8 (clipped): loss = -(1.2 - 1.5 + 0.5 - 0.8) / 4
    assert float(losses["policy"].detach()) == pytest.approx(0.15)
    assert float(losses["value"]) == pytest.approx(0.5 * (1 + 4) / 4)
    assert float(losses["entropy"]) == pytest.approx(-0.75)
    assert float(losses["clipped"]) == 1.0
    assert float(losses["approx_kl"]) == pytest.approx(np.mean([0.5 - math.log(1.5)] * 2 + [-0.5 - math.log(0.5)] * 2))
    losses["policy"].backward()
    assert logp.grad is not None
    # d/dlogp of -rho A / 4 = -rho A / 4 where unclipped, 0 where the clipped term is the smaller
    assert logp.grad.tolist() == pytest.approx([0.0, 1.5 / 4, -0.5 / 4, 0.0])


class Bandit(nn.Module):
    def __init__(self):
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(3))
        self.value = nn.Parameter(torch.zeros(()))

    def forward(self, obs):
        return self.logits.expand(len(obs), -1), self.value.expand(len(obs))


def test_ppo_learns_the_best_arm_of_a_bandit_and_its_value():
    net, gen = Bandit(), torch.Generator().manual_seed(0)
    cfg = PPOConfig(lr=0.05, entropy_coef=0.0, minibatches=2)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    means = torch.tensor([0.0, 1.0, 0.3])
    for _ in range(30):
        with torch.no_grad():
            probs = torch.softmax(net.logits, -1)
            actions = torch.multinomial(probs, 256, replacement=True, generator=gen)
            rewards = means[actions] + 0.1 * torch.randn(256, generator=gen)
            logp = probs.log()[actions]
            adv = rewards - net.value
        ppo_update(net, opt, Rollout(torch.zeros(256, 1), actions, logp, adv, rewards), cfg, gen)
    assert torch.softmax(net.logits, -1)[1] > 0.95
    assert float(net.value) == pytest.approx(1.0, abs=0.1)


# -- the decoder and cloning ----------------------------------------------------------------------------
def test_the_decoder_is_sklearns_logistic_regression_with_the_standardisation_folded_in():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 4)) * [1.0, 5.0, 0.1, 2.0] + [3.0, -1.0, 0.0, 10.0]
    y = (x[:, 0] > 3).astype(int) + 2 * (x[:, 1] > 0)    # actions 0 .. 3
    weight, bias = fit_linear_decoder(x, y, num_actions=5)
    mean, std = x.mean(0), x.std(0) + 1e-8
    reference = LogisticRegression(max_iter=2000, random_state=0).fit((x - mean) / std, y)
    ours = torch.softmax(torch.as_tensor(x @ weight.T + bias), -1).numpy()
    assert np.allclose(ours[:, :4], reference.predict_proba((x - mean) / std), atol=1e-6)
    assert ours[:, 4].max() < 1e-10          # action 4 never labelled: never chosen
    two = fit_linear_decoder(x, (x[:, 0] > 3).astype(int), num_actions=3)   # two classes: one row from sklearn
    assert np.mean((x @ two[0].T + two[1]).argmax(-1) == (x[:, 0] > 3)) > 0.97
    with pytest.raises(ConfigError, match="all have action 1"):
        fit_linear_decoder(x, np.ones(300, int), num_actions=3)


WIDTH = 10
REPO = Path(__file__).resolve().parents[1]


def chase_chunks(steps: int, seed: int, by_frame: bool) -> list[dict[str, np.ndarray]]:
    """A dot (channel 0) and a goal (channel 1) on a 1 x 10 strip. ``by_frame``: the dot moves one cell towards the
    goal (action 0 left, 1 stay, 2 right), so the action is a function of the frame; else a random move. A goal
    reached moves to a random cell after one step of staying. One episode."""
    rng = np.random.default_rng(seed)
    image = np.zeros((steps, 1, WIDTH, 2), np.uint8)
    action = np.zeros((steps, 3), np.float32)
    pos, goal = 2, 7
    for t in range(steps):
        image[t, 0, pos, 0], image[t, 0, goal, 1] = 255, 255
        a = int(np.sign(goal - pos)) + 1 if by_frame else int(rng.integers(3))
        if pos == goal:                  # seen on the goal: the goal moves (the next frame shows where)
            goal = int(rng.integers(WIDTH))
        a = 1 if not 0 <= pos + a - 1 < WIDTH else a
        pos += a - 1
        if t + 1 < steps:
            action[t + 1, a] = 1.0       # the replay's action at a row is the one that led into it
    is_first = np.arange(steps) == 0
    return [{"image": image, "is_first": is_first, "action": action}]


def frame_pair_codes(data, codebook: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A stand-in IDM: the code is the dot's move between the window's last two frames (left 2, stay 0, right 3:
    codes are not action indices; code 1 unused)."""
    before = data.frames[data.rows[:, -2]][:, 0, :, 0].float().argmax(-1)
    after = data.frames[data.rows[:, -1]][:, 0, :, 0].float().argmax(-1)
    codes = torch.tensor([2, 0, 3])[(after - before).clamp(-1, 1) + 1]
    return codebook[codes], codes


@pytest.mark.parametrize("by_frame", [True, False])
def test_the_cloned_policy_reproduces_codes_that_a_frame_decides_and_cannot_guess_random_ones(by_frame):
    torch.manual_seed(0)
    data = windows_of(chase_chunks(3000, seed=0, by_frame=by_frame), "image", context=1, discrete=True)
    codebook = torch.randn(4, 8)
    targets, codes = frame_pair_codes(data, codebook)
    cfg = LapoPolicyConfig(clone_updates=400, clone_batch=64, clone_lr=3e-3, labelled=0.025)
    policy = LatentPolicy((1, WIDTH, 2), 8, 3, LatentPolicyConfig(channels=8, hidden=32))
    train = 2400
    scores = clone_policy(policy, data, targets, codes, codebook, train, cfg, num_actions=3)
    assert scores["labels"] == 60 and scores["held_out_windows"] == len(data) - train
    assert scores["decoder_accuracy"] == 1.0     # 60 labels: the IDM's codes name the actions exactly
    if by_frame:
        assert scores["code_agreement"] > 0.97 and scores["policy_accuracy"] > 0.97, scores
    else:   # a random move cannot be told from the frame before it: about one in three
        assert scores["code_agreement"] < 0.45 and scores["policy_accuracy"] < 0.45, scores


# -- the scripted player ----------------------------------------------------------------------------
def frame(paddle: int, ball: tuple[int, int], trail: tuple[int, int]) -> np.ndarray:
    image = np.zeros((10, 10, 4), np.uint8)
    image[9, paddle, 0], image[ball[0], ball[1], 1], image[trail[0], trail[1], 2] = 255, 255, 255
    return image


def test_the_scripted_player_moves_to_where_the_ball_lands():
    assert landing_column(3, 5, +1) == 7
    assert landing_column(8, 6, +1) == 8                  # 9, then the wall: back to 8
    falling_right = frame(paddle=4, ball=(5, 3), trail=(4, 2))
    rising = frame(paddle=4, ball=(4, 1), trail=(5, 2))   # rising: follow the ball's column, 1
    bounced = frame(paddle=4, ball=(8, 4), trail=(8, 3))  # off the paddle, rising: under it already
    assert follow_ball(np.stack([falling_right, rising, bounced])).tolist() == [RIGHT, LEFT, NOOP]
    # the noisy player: random only with slack (falling_right: 4 rows to go, 3 columns: slack 1; below, 7 rows to
    # go and 1 column: slack 6), never while the ball rises
    slack = frame(paddle=7, ball=(2, 0), trail=(1, 1))   # falling left, off the wall at once: lands on 6
    rng = np.random.default_rng(0)
    noisy = follow_ball(np.stack([slack, falling_right, rising] * 200), rng, slack=3).reshape(200, 3)
    assert set(noisy[:, 0].tolist()) == {NOOP, LEFT, RIGHT}
    assert set(noisy[:, 1].tolist()) == {RIGHT} and set(noisy[:, 2].tolist()) == {LEFT}


def test_without_sticky_actions_the_scripted_player_never_loses_the_ball():
    pytest.importorskip("minatar")
    from reverie.envs.minatar_env import MinAtarEnv

    for seed in range(3):
        env = MinAtarEnv("breakout", seed=seed, sticky=0.0)
        step, score = env.reset(), 0.0
        for _ in range(500):
            step = env.step(int(follow_ball(step["image"][None])[0]))
            score += step["reward"]
            assert not step["is_last"]
        assert score >= 5


# -- the commands end to end ------------------------------------------------------------------------
def test_record_train_lapo_on_the_videos_then_clone_decode_and_finetune(tmp_path, capsys):
    pytest.importorskip("minatar")
    from reverie.cli import main

    videos, lapo, arms = tmp_path / "videos", tmp_path / "lapo", tmp_path / "arms"
    assert main(["record", "breakout-follow-ball", "--out", str(videos), "--steps", "600", "--envs", "2",
                 "--time-limit", "200"]) == 0
    record = json.loads((videos / "dataset.json").read_text())
    assert record["env"] == "minatar:breakout" and record["replay_steps"] == 600 and record["episodes"] >= 1
    assert record["return_mean"] == pytest.approx(np.mean(record["returns"]))
    assert main(["record", "breakout-follow-ball", "--out", str(videos), "--steps", "10"]) == 2   # not twice
    assert main(["train", "lapo", "--preset", "tiny", "--dataset", str(videos), "--run-dir", str(lapo)]) == 0
    # the recorded folder names its environment, so the offline run evaluates there (before: no evaluation)
    metrics = [json.loads(line) for line in (lapo / "metrics.jsonl").read_text().splitlines()]
    assert any("eval/return" in row for row in metrics)
    capsys.readouterr()
    settings = ["budgets=(0,300)", "clone_updates=20", "eval_episodes=2", "ppo.envs=2", "ppo.steps=40",
                "policy.channels=4", "policy.hidden=16"]
    assert main(["lapo-policy", str(lapo), "--out", str(arms / "lapo-s0"), *settings]) == 0
    assert main(["lapo-policy", str(lapo), "--out", str(arms / "scratch-s0"), "--scratch", *settings]) == 0
    pre, scratch = (json.loads((arms / arm / "result.json").read_text()) for arm in ("lapo-s0", "scratch-s0"))
    assert pre["arm"] == "lapo" and scratch["arm"] == "scratch"
    from safetensors.torch import load_file
    weights = load_file(str(arms / "lapo-s0" / "policy.safetensors"))   # the weights, as safetensors, no pickle
    assert weights and all(v.dtype == torch.float32 for v in weights.values())
    assert pre["pretrain"]["labels"] == round(0.025 * pre["pretrain"]["train_windows"])
    assert 0 <= pre["pretrain"]["decoder_accuracy"] <= 1 and scratch["pretrain"] == {}
    for result in (pre, scratch):
        steps = [e["env_steps"] for e in result["evals"]]
        assert steps[0] == 0 and 300 <= steps[1] < 300 + 2 * 40      # the end of the rollout that reached 300
        assert all(e["return_greedy"] >= 0 and e["return_sampled"] >= 0 for e in result["evals"])
    assert main(["lapo-policy", str(videos), "--out", str(arms / "x")]) == 2   # not a run folder
    # the comparison script reads the arms' results (it trains only what is missing) into flat figures
    spec = importlib.util.spec_from_file_location("lapo_finetune", REPO / "benchmarks" / "lapo_finetune.py")
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.main([str(lapo), "--root", str(arms), "--seeds", "0", "--json", str(tmp_path / "ft.json")]) == 0
    out = json.loads((tmp_path / "ft.json").read_text())
    assert out["lapo/300/return_greedy/seeds"] == [pre["evals"][1]["return_greedy"]]
    assert out["scratch/0/env_steps"] == 0 and out["expert/return_mean"] == record["return_mean"]
    assert out["pretrain/labels"] == pre["pretrain"]["labels"] and out["ahead/greedy"] in (0.0, 1.0)
