"""MuZero: its targets worked out by hand, its model against the contract, and the agent end to end."""

import json

import numpy as np
import pytest
import torch

from reverie.agents.muzero_targets import unroll_targets
from reverie.cli import main
from reverie.models import Batch, WorldModel, capabilities_of
from reverie.models.muzero import MuZeroModel, MuZeroModelConfig, scale_gradient
from reverie.replay import Replay
from reverie.specs import ActionSpec, ArraySpec
from reverie.training.logger import read_metrics

GAMMA = 0.5
REWARDS = [0.0, 1.0, 2.0, 3.0, 4.0]
VALUES = [10.0, 20.0, 30.0, 40.0, 50.0]


def sequence(last=(), terminal=(), first=(), acted=(True,) * 5):
    """One sequence of 5 steps with the rewards and stored values above and 2 actions."""
    flags = {name: torch.tensor([[i in where for i in range(5)]])
             for name, where in (("is_last", last), ("is_terminal", terminal), ("is_first", first))}
    actions = torch.nn.functional.one_hot(torch.tensor([[0, 1, 0, 1, 1]]), 2).float()
    batch = Batch(obs={"x": torch.zeros(1, 5, 1)}, action=actions, reward=torch.tensor([REWARDS]), **flags)
    policy = torch.tensor([[[0.25, 0.75] if a else [0.0, 0.0] for a in acted]])
    return unroll_targets(batch, torch.tensor([VALUES]), policy, unroll=2, td_steps=2, discount=GAMMA)


def test_n_step_value_targets_bootstrap_from_the_stored_search_value():
    t = sequence()
    # z_k = r_{k+1} + g r_{k+2} + g^2 v_{k+2}
    torch.testing.assert_close(t.value, torch.tensor([[1 + 0.5 * 2 + 0.25 * 30, 2 + 0.5 * 3 + 0.25 * 40,
                                                       3 + 0.5 * 4 + 0.25 * 50]]))
    torch.testing.assert_close(t.reward, torch.tensor([[0.0, 1.0, 2.0]]))
    assert t.value_mask.tolist() == [[1, 1, 1]] and t.reward_mask.tolist() == [[0, 1, 1]]
    assert t.policy_mask.tolist() == [[1, 1, 1]]
    # action[:, t] led into step t, so the actions taken at steps 0 and 1 are stored at 1 and 2
    torch.testing.assert_close(t.actions, torch.tensor([[[0.0, 1.0], [1.0, 0.0]]]))


def test_a_terminal_step_ends_the_sum_and_starts_an_absorbing_state():
    t = sequence(last=(2,), terminal=(2,), first=(3,))
    # no bootstrap after the terminal step 2; at step 2 itself the value is 0
    torch.testing.assert_close(t.value, torch.tensor([[1 + 0.5 * 2, 2.0, 0.0]]))
    assert t.value_mask.tolist() == [[1, 1, 1]]
    assert t.policy_mask.tolist() == [[1, 1, 0]]        # no action mattered on the last step


def test_a_truncated_episode_bootstraps_from_its_last_step_and_masks_what_follows():
    t = sequence(last=(1,), first=(2,))
    torch.testing.assert_close(t.value[:, :2], torch.tensor([[1 + 0.5 * 20, 20.0]]))
    assert t.value_mask.tolist() == [[1, 1, 0]] and t.reward_mask.tolist() == [[0, 1, 0]]
    assert t.policy_mask.tolist() == [[1, 0, 0]]


def test_a_new_episode_without_a_last_step_ends_the_old_one_as_a_truncation():
    # a run resumed after a kill restarts its environments: step 3 is a first step with no last step before it
    t = sequence(first=(3,))
    torch.testing.assert_close(t.value, torch.tensor([[1 + 0.5 * 2 + 0.25 * 30, 2 + 0.5 * 30, 30.0]]))
    assert t.value_mask.tolist() == [[1, 1, 1]] and t.policy_mask.tolist() == [[1, 1, 0]]


def test_steps_collected_before_the_agent_acted_teach_no_policy():
    t = sequence(acted=(False, True, True, True, True))
    assert t.policy_mask.tolist() == [[0, 1, 1]]


def test_short_sequences_are_refused_with_the_length_they_need():
    batch = Batch(obs={"x": torch.zeros(1, 3, 1)}, action=torch.zeros(1, 3, 2), reward=torch.zeros(1, 3),
                  is_first=torch.zeros(1, 3, dtype=torch.bool), is_last=torch.zeros(1, 3, dtype=torch.bool),
                  is_terminal=torch.zeros(1, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="run.seq_len=5"):
        unroll_targets(batch, torch.zeros(1, 3), torch.zeros(1, 3, 2), unroll=2, td_steps=2, discount=0.9)


def test_scale_gradient_keeps_values_and_scales_gradients():
    x = torch.tensor([1.0, -2.0], requires_grad=True)
    y = scale_gradient(x, 0.25)
    assert torch.equal(y, x.detach())
    y.sum().backward()
    torch.testing.assert_close(x.grad, torch.full((2,), 0.25))


SPECS = ({"vector": ArraySpec((3,), np.dtype(np.float32))}, ActionSpec(True, 2))


def test_the_model_implements_the_contract_without_a_decoder():
    torch.manual_seed(0)
    model = MuZeroModel(*SPECS, MuZeroModelConfig(latent=8, units=16, layers=1, bins=21))
    assert isinstance(model, WorldModel)
    assert capabilities_of(model) == {"reward", "value", "policy", "transition"}
    obs = {"vector": torch.randn(2, 4, 3)}
    states, last = model.observe(obs, torch.zeros(2, 4, 2), torch.zeros(2, 4, dtype=torch.bool))
    assert states["latent"].shape == (2, 4, 8) and model.features(last).shape == (2, 8)
    # each observed state is the representation of its own observation (MuZero does not filter)
    torch.testing.assert_close(last["latent"], model.represent({"vector": obs["vector"][:, -1]}))
    assert float(last["latent"].detach().min()) >= 0 and float(last["latent"].detach().max()) <= 1   # min-max scaled
    nxt = model.step(last, torch.eye(2)[[0, 1]])
    assert model.reward(nxt).shape == (2,) and model.value(nxt).shape == (2,)
    assert model.policy(nxt).logits.shape == (2, 2)


def test_unrolled_training_learns_rewards_and_values_of_a_known_chain():
    """A 2-action chain: action 1 pays 1 and action 0 pays 0; observations are the step index. With both
    actions taken at random the reward and value targets are learnable exactly."""
    torch.manual_seed(0)
    model = MuZeroModel({"x": ArraySpec((1,), np.dtype(np.float32))}, ActionSpec(True, 2),
                        MuZeroModelConfig(latent=16, units=32, layers=1, bins=31, support=3.0))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(1)
    for i in range(300):
        chosen = torch.randint(2, (64, 3), generator=gen)
        actions = torch.nn.functional.one_hot(chosen, 2).float()
        reward = torch.cat([torch.zeros(64, 1), chosen.float()], 1)             # [B, K + 1]
        value = torch.full((64, 4), 0.5)                                         # a uniform policy's value
        ones = torch.ones(64, 4)
        losses, _ = model.unroll_loss({"x": torch.zeros(64, 1)}, actions, value, reward,
                                      torch.full((64, 4, 2), 0.5), ones, ones, ones)
        opt.zero_grad()
        sum(v.mean() for v in losses.values()).backward()
        opt.step()
    with torch.no_grad():
        _, start = model.observe({"x": torch.zeros(2, 1, 1)}, torch.zeros(2, 1, 2), torch.ones(2, 1).bool())
        after = model.step(start, torch.eye(2))
        torch.testing.assert_close(model.reward(after), torch.tensor([0.0, 1.0]), atol=0.1, rtol=0)
        torch.testing.assert_close(model.value(start), torch.tensor([0.5, 0.5]), atol=0.1, rtol=0)


@pytest.fixture(scope="module")
def muzero_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("muzero") / "cp"
    args = ["train", "muzero", "--preset", "tiny", "--run-dir", str(run_dir)]
    assert main([*args, "--steps", "80"]) == 0
    return run_dir, args


def test_train_stores_the_search_beside_each_step_and_resumes(muzero_run, capsys):
    run_dir, args = muzero_run
    files = {p.name for p in run_dir.iterdir()}
    assert {"run.json", "checkpoints", "replay", "summary.json", "learning_curve.png"} <= files
    assert not any(name.startswith("dream") for name in files)      # no decoder: no dream, and no failure
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["agent"] == "muzero" and summary["updates"] > 0 and "dream" not in summary["artifacts"]
    replay = Replay(run_dir / "replay", capacity=10_000, seq_len=6)
    data = {k: np.concatenate([c[k] for c in replay.chunks()]) for k in ("search_policy", "root_value", "is_first")}
    sums = data["search_policy"].sum(-1)
    prefill = np.isclose(sums, 0.0)
    # random prefill steps (4 per environment, at least seq_len 6) carry zeros, every searched step a distribution
    assert 2 * 6 <= prefill.sum() < len(sums) and np.allclose(sums[~prefill], 1.0)
    assert np.isfinite(data["root_value"]).all() and (data["root_value"][~prefill] != 0).any()
    assert main([*args, "--steps", "120"]) == 0
    assert "resuming" in capsys.readouterr().out
    assert json.loads((run_dir / "summary.json").read_text())["env_steps"] == 120
    rows = [m for m in read_metrics(run_dir / "metrics.jsonl") if "train/loss/policy" in m]
    assert rows and all(np.isfinite(m["train/loss/value"]) for m in rows)


def test_eval_plans_with_tree_search_and_with_cem_through_value_and_reward(muzero_run, capsys):
    run_dir, _ = muzero_run
    for planner, extra in (("policy", []), ("mcts", ["--planner-arg", "num_simulations=6"]),
                           ("cem", ["--planner-arg", "candidates=16", "--planner-arg", "elites=4",
                                    "--planner-arg", "iterations=2", "--planner-arg", "policy_candidates=2"])):
        assert main(["eval", str(run_dir), "--episodes", "1", "--planner", planner, *extra]) == 0
        out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert out["planner"] == planner and out["return_mean"] >= 8   # CartPole lasts at least 8 steps


def test_dream_refuses_a_model_without_a_decoder_in_one_sentence(muzero_run, capsys):
    run_dir, _ = muzero_run
    assert main(["dream", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert "needs a model with decoder" in err and "MuZeroModel" in err and "Traceback" not in err


def test_muzero_refuses_continuous_actions_and_short_sequences(tmp_path, capsys):
    assert main(["train", "muzero", "--preset", "tiny", "--env", "gym:Pendulum-v1", "--run-dir",
                 str(tmp_path / "p")]) == 2
    assert "discrete actions" in capsys.readouterr().err
    assert main(["train", "muzero", "--preset", "tiny", "run.seq_len=3", "--run-dir", str(tmp_path / "q")]) == 2
    assert "run.seq_len >= 1 + unroll + td_steps = 6" in capsys.readouterr().err
    assert not (tmp_path / "p").exists() and not (tmp_path / "q").exists()


def test_reanalysis_replaces_the_stored_targets_with_a_fresh_search(muzero_run):
    from reverie.training.session import load_run

    run_dir, _ = muzero_run
    agent, cfg, _, _ = load_run(run_dir)
    replay = Replay(run_dir / "replay", capacity=10_000, seq_len=cfg.run.seq_len, seed=0)
    batch = Batch.build(replay.sample(3), agent.obs_spec, agent.act_spec, extras_spec=agent.extras_spec)
    policy, value = agent.reanalysed(batch, 2)
    assert policy.shape == (2, cfg.run.seq_len, 2) and value.shape == (2, cfg.run.seq_len)
    torch.testing.assert_close(policy.sum(-1), torch.ones(2, cfg.run.seq_len))
    agent.cfg = type(cfg)(**{**vars(cfg), "reanalyse": 1.0})
    metrics = agent.update(batch)
    assert np.isfinite(metrics["loss/value"]) and np.isfinite(metrics["loss/policy"])


def test_small_images_go_through_the_residual_tower():
    torch.manual_seed(0)
    spec = {"image": ArraySpec((16, 16, 3), np.dtype(np.uint8))}
    model = MuZeroModel(spec, ActionSpec(True, 4), MuZeroModelConfig(latent=8, units=16, layers=1, bins=21,
                                                                    channels=4, blocks=1))
    assert model.tower is not None and model.vectors is None
    images = torch.randint(0, 256, (3, 2, 16, 16, 3), dtype=torch.uint8)
    states, _ = model.observe({"image": images}, torch.zeros(3, 2, 4), torch.zeros(3, 2, dtype=torch.bool))
    assert states["latent"].shape == (3, 2, 8)
    ones = torch.ones(3, 2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(2):   # the heads start at zero, so the first step moves only them
        losses, _ = model.unroll_loss({"image": images[:, 0]}, torch.eye(4)[torch.tensor([[0], [1], [2]])],
                                      torch.ones(3, 2), torch.zeros(3, 2), torch.full((3, 2, 4), 0.25), ones, ones,
                                      ones)
        opt.zero_grad()
        sum(v.mean() for v in losses.values()).backward()
        opt.step()
    assert model.tower.net[0].weight.grad.abs().sum() > 0            # the tower learns from the losses


def test_values_bootstrap_from_a_target_network_refreshed_every_few_updates(muzero_run):
    from reverie.training.session import load_run

    run_dir, _ = muzero_run
    agent, cfg, _, _ = load_run(run_dir)
    assert cfg.bootstrap == "model"
    replay = Replay(run_dir / "replay", capacity=10_000, seq_len=cfg.run.seq_len, seed=1)
    batch = Batch.build(replay.sample(4), agent.obs_spec, agent.act_spec, extras_spec=agent.extras_spec)
    agent.cfg = type(cfg)(**{**vars(cfg), "target_every": 3})
    agent.updates = 0
    before = [p.clone() for p in agent.target.parameters()]
    for _ in range(2):
        agent.update(batch)
    assert all(torch.equal(a, b) for a, b in zip(before, agent.target.parameters()))    # frozen in between
    agent.update(batch)
    assert all(torch.equal(a, b) for a, b in zip(agent.wm.parameters(), agent.target.parameters()))
