"""TD-MPC2: its pieces against oracles (two-hot, SimNorm, squashed Gaussian, Riccati), its update's invariants,
and the agent end to end through the CLI."""

import json

import numpy as np
import pytest
import torch

from reverie.agents.tdmpc2 import TDMPC2, RunningScale, TDMPC2Config
from reverie.cli import main
from reverie.models import Batch, WorldModel, capabilities_of
from reverie.models.tdmpc2 import QEnsemble, TDMPC2Model, TDMPC2ModelConfig
from reverie.nn import SimNorm, TanhNormal, TwoHotDist, simnorm, symlog, symlog_bins, twohot
from reverie.planning import plan
from reverie.run_config import RunConfig
from reverie.specs import ActionSpec, ArraySpec

OBS = {"x": ArraySpec((3,), np.dtype(np.float32))}
ACT = ActionSpec(False, 2)
SMALL = TDMPC2ModelConfig(latent=16, enc_units=16, units=16, num_q=3, bins=41)


def exact_logits(values: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """Logits whose two-hot distribution is exactly the two-hot encoding of ``symlog(values)``."""
    return torch.log(twohot(symlog(values), bins).clamp_min(1e-30))


def test_two_hot_round_trip_and_expected_value_under_tdmpc2_symlog_bins():
    bins = symlog_bins(101, -10.0, 10.0)
    values = torch.tensor([-5000.0, -3.7, -0.01, 0.0, 0.2, 1.0, 42.0, 900.0])
    dist = TwoHotDist(exact_logits(values, bins), bins)
    torch.testing.assert_close(dist.mean(), values, rtol=1e-4, atol=1e-5)
    # the expected value is symexp of the probability-weighted bins: a hand example between two bins
    probs = torch.zeros(101)
    probs[50], probs[51] = 0.75, 0.25                     # bins 0.0 and 0.2 in symlog space
    torch.testing.assert_close(TwoHotDist(probs.log(), bins).mean(), torch.expm1(torch.tensor(0.05)))
    # the cross-entropy is smallest at the target's own two-hot distribution
    target = torch.tensor([1.0])
    best = TwoHotDist(exact_logits(target, bins), bins).loss(target)
    worse = TwoHotDist(exact_logits(torch.tensor([1.5]), bins), bins).loss(target)
    assert float(best) < float(worse)


def test_simnorm_sums_to_one_per_group_and_matches_softmax():
    x = torch.randn(5, 4, 32) * 10
    y = SimNorm(8)(x)
    torch.testing.assert_close(y.reshape(5, 4, 4, 8).sum(-1), torch.ones(5, 4, 4))
    torch.testing.assert_close(y, torch.softmax(x.reshape(5, 4, 4, 8), -1).reshape(5, 4, 32))
    assert (y >= 0).all()
    with pytest.raises(ValueError, match="divisible by the group size 8"):
        simnorm(torch.zeros(2, 12))


def test_tanh_normal_log_prob_matches_torch_and_its_own_samples():
    torch.manual_seed(0)
    mean, log_std = torch.randn(6, 2), torch.randn(6, 2) * 0.3
    dist = TanhNormal(mean, log_std)
    action, log_prob = dist.sample_with_log_prob()
    reference = torch.distributions.TransformedDistribution(
        torch.distributions.Normal(mean, log_std.exp()), [torch.distributions.TanhTransform()])
    torch.testing.assert_close(dist.log_prob(action), reference.log_prob(action).sum(-1), rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(log_prob, dist.log_prob(action), rtol=1e-3, atol=1e-3)
    assert (action.abs() < 1).all() and torch.equal(dist.mode(), torch.tanh(mean))


def test_q_ensemble_subset_equals_the_full_ensemble_indexed():
    torch.manual_seed(0)
    q = QEnsemble(4, 5, 8, 3).eval()
    torch.nn.init.normal_(q.weights[2])                  # the output layer starts at zero; make it say something
    x = torch.randn(2, 7, 5)
    pick = torch.tensor([3, 1])
    full = q(x)
    assert full.shape == (4, 2, 7, 3)
    torch.testing.assert_close(q(x, pick), full[pick])
    # each member is its own MLP: member 1 alone equals a hand-written pass with its weights
    h = x @ q.weights[0][1] + q.biases[0][1]
    for i in (0, 1):
        if i:
            h = h @ q.weights[1][1] + q.biases[1][1]
        h = torch.nn.functional.layer_norm(h, (8,)) * q.norm_weights[i][1] + q.norm_biases[i][1]
        h = torch.nn.functional.silu(h)
    torch.testing.assert_close(full[1], h @ q.weights[2][1] + q.biases[2][1])


def test_the_model_implements_the_contract_without_a_decoder():
    torch.manual_seed(0)
    model = TDMPC2Model(OBS, ACT, SMALL).eval()
    assert isinstance(model, WorldModel)
    assert capabilities_of(model) == {"reward", "value", "policy", "transition"}
    obs = {"x": torch.randn(2, 4, 3)}
    states, last = model.observe(obs, torch.zeros(2, 4, 2), torch.zeros(2, 4, dtype=torch.bool))
    assert states["latent"].shape == (2, 4, 16) and model.features(last).shape == (2, 16)
    torch.testing.assert_close(last["latent"], model.encode({"x": obs["x"][:, -1]}))
    torch.testing.assert_close(last["latent"].reshape(2, 2, 8).sum(-1), torch.ones(2, 2))   # SimNorm'd
    action = torch.tensor([[0.5, -0.5], [0.1, 0.9]])
    nxt = model.step(last, action)
    assert model.reward(nxt).shape == (2,) and model.value(nxt).shape == (2,)
    z, f = model.transition(last, action)
    torch.testing.assert_close(f(z), nxt["latent"])
    assert model.policy(nxt).sample().shape == (2, 2)


def test_discrete_actions_are_refused_in_one_sentence():
    with pytest.raises(ValueError, match="continuous actions"):
        TDMPC2Model(OBS, ActionSpec(True, 3), SMALL)


def test_mppi_on_frozen_linear_dynamics_reaches_the_riccati_optimum():
    """Dynamics z' = A z + B a, reward -(z'Qz + r a^2), terminal value -z'Pz: the best first action of the
    3-step problem is -K_0 z from the backward Riccati recursion."""
    torch.manual_seed(0)
    d = 8
    model = TDMPC2Model(OBS, ActionSpec(False, 1), TDMPC2ModelConfig(latent=d, enc_units=8, units=8, num_q=2)).eval()
    a_mat = torch.eye(d) * 0.9 + torch.diag(torch.full((d - 1,), 0.2), 1)
    b_mat = torch.linspace(0.2, 1.0, d)[:, None]
    q_mat, r, p_final = torch.eye(d) * 0.1, 0.5, torch.eye(d) * 0.3
    model.next = lambda z, a, task=None: z @ a_mat.T + a @ b_mat.T
    model.reward_logits = lambda z, a, task=None: exact_logits(-((z @ q_mat) * z).sum(-1) - r * (a ** 2).sum(-1),
                                                               model.bins)
    model.q_logits = lambda z, a, heads=None, members=None, task=None: exact_logits(
        -((z @ p_final) * z).sum(-1), model.bins).expand(2, *z.shape[:-1], -1)
    p, gains = p_final, []
    for _ in range(3):
        k = torch.linalg.solve(r + b_mat.T @ p @ b_mat, b_mat.T @ p @ a_mat)
        p = q_mat + a_mat.T @ p @ a_mat - a_mat.T @ p @ b_mat @ k
        gains.append(k)
    z0 = torch.randn(4, d) * 0.3
    optimum = -(z0 @ gains[-1].T)
    assert optimum.abs().max() < 0.9                            # inside the action bounds
    result = plan("mppi", model, {"latent": z0, "reward": torch.zeros(4)}, horizon=3, use_value=True,
                  candidates=512, elites=64, iterations=8, temperature=0.002, seed=0)
    torch.testing.assert_close(result.action, optimum, atol=0.03, rtol=0)


def small_agent(**overrides) -> TDMPC2:
    run = RunConfig(env="gym:Pendulum-v1", batch_size=4, seq_len=4)
    return TDMPC2(OBS, ACT, TDMPC2Config(model=SMALL, run=run, **overrides))


def random_batch(b=4, t=4, first=()):
    g = torch.Generator().manual_seed(3)
    is_first = torch.zeros(b, t, dtype=torch.bool)
    for row, step in first:
        is_first[row, step] = True
    return Batch(obs={"x": torch.randn(b, t, 3, generator=g)}, action=torch.rand(b, t, 2, generator=g) * 2 - 1,
                 reward=torch.randn(b, t, generator=g), is_first=is_first, is_last=torch.zeros(b, t, dtype=torch.bool),
                 is_terminal=torch.zeros(b, t, dtype=torch.bool))


def test_the_target_q_moves_by_exactly_tau_per_update():
    torch.manual_seed(0)
    agent = small_agent(tau=0.25)
    batch = random_batch()
    agent.update(batch)                                      # leave the zero-initialised start
    before = [p.clone() for p in agent.target_q.parameters()]
    agent.update(batch)
    online = list(agent.wm.qs.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, agent.target_q.parameters()))
    for old, new, src in zip(before, agent.target_q.parameters(), online):
        torch.testing.assert_close(new, old + 0.25 * (src.detach() - old), rtol=0, atol=1e-6)


def test_consistency_loss_is_zero_for_a_model_that_predicts_its_target_exactly():
    torch.manual_seed(0)
    agent = small_agent()
    batch = random_batch()
    encoded = agent.wm.encode(batch.obs).detach()             # [B, T, D]: what each step's target is
    calls = []

    def exact_next(z, action, task=None):
        calls.append(None)
        return encoded[:, len(calls)] + 0.0 * z, None         # keeps the graph, predicts the target
    agent.wm.next_routed = exact_next
    metrics = agent.update(batch)
    assert metrics["loss/consistency"] == 0.0 and len(calls) == 3
    assert np.isfinite(metrics["loss/reward"]) and np.isfinite(metrics["loss/value"])
    del agent.wm.next_routed                                  # a wrong prediction costs something
    assert small_agent().update(batch)["loss/consistency"] > 0


def test_transitions_across_an_episode_boundary_are_masked():
    torch.manual_seed(0)
    agent = small_agent()
    # every row starts a new episode at step 1: no transition inside the sampled sequences is valid
    metrics = agent.update(random_batch(first=[(i, 1) for i in range(4)]))
    assert metrics["loss/consistency"] == metrics["loss/reward"] == metrics["loss/value"] == 0.0


def test_running_scale_tracks_the_percentile_range():
    scale = RunningScale(0.01)
    scale.update(torch.arange(101.0))                         # 5th and 95th percentiles: 5 and 95
    torch.testing.assert_close(scale.value, torch.tensor(1.0 + 0.01 * (90.0 - 1.0)))
    scale.update(torch.zeros(50))                             # a range below 1 counts as 1
    torch.testing.assert_close(scale.value, torch.tensor(1.89 + 0.01 * (1.0 - 1.89)))
    torch.testing.assert_close(scale(torch.tensor([2.0])), torch.tensor([2.0]) / scale.value)


@pytest.fixture(scope="module")
def tdmpc2_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("tdmpc2") / "pendulum"
    args = ["train", "tdmpc2", "--preset", "tiny", "--env", "gym:Pendulum-v1", "--run-dir", str(run_dir)]
    assert main([*args, "--steps", "120"]) == 0
    return run_dir, args


def test_train_resumes_and_logs_every_loss(tdmpc2_run, capsys):
    run_dir, args = tdmpc2_run
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["agent"] == "tdmpc2" and summary["updates"] > 0
    assert not any(p.name.startswith("dream") for p in run_dir.iterdir())       # no decoder, no dream
    assert (run_dir / "tb").is_dir()
    assert main([*args, "--steps", "160"]) == 0
    assert "resuming" in capsys.readouterr().out
    assert json.loads((run_dir / "summary.json").read_text())["env_steps"] == 160
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rows = [m for m in rows if "train/loss/consistency" in m]
    assert rows and all(np.isfinite(m[f"train/loss/{k}"]) for m in rows for k in ("reward", "value", "policy"))


@pytest.mark.parametrize("planner", ["policy", "mppi", "cem"])
def test_eval_plans_on_the_model(tdmpc2_run, capsys, planner):
    run_dir, _ = tdmpc2_run
    extra = [] if planner == "policy" else [
        "--planner-arg", "candidates=16", "--planner-arg", "elites=4", "--planner-arg", "iterations=2",
        "--planner-arg", "policy_candidates=4"]
    assert main(["eval", str(run_dir), "--episodes", "1", "--planner", planner, *extra]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["planner"] == planner and -2000 < out["return_mean"] <= 0         # Pendulum's reward range


def test_policy_acting_and_bad_settings_from_the_cli(tmp_path, capsys):
    assert main(["train", "tdmpc2", "--preset", "tiny", "acting=policy", "--steps", "70",
                 "--run-dir", str(tmp_path / "fast")]) == 0
    assert main(["train", "tdmpc2", "--preset", "tiny", "--env", "gym:CartPole-v1",
                 "--run-dir", str(tmp_path / "d")]) == 2
    assert "continuous actions" in capsys.readouterr().err
    assert main(["train", "tdmpc2", "--preset", "tiny", "run.seq_len=3", "--run-dir", str(tmp_path / "s")]) == 2
    assert "run.seq_len >= 4" in capsys.readouterr().err


def test_pixels_go_through_the_conv_encoder_and_learn():
    torch.manual_seed(0)
    spec = {"image": ArraySpec((16, 16, 3), np.dtype(np.uint8))}
    run = RunConfig(env="dmc:cartpole-swingup", obs="pixels", batch_size=2, seq_len=4)
    agent = TDMPC2(spec, ACT, TDMPC2Config(model=TDMPC2ModelConfig(latent=16, enc_units=16, units=16, num_q=2,
                                                                     bins=21, cnn_depth=4), run=run))
    assert agent.wm.embed.cnn is not None and agent.wm.embed.mlp is None
    batch = random_batch(b=2)
    batch = Batch(obs={"image": torch.randint(0, 256, (2, 4, 16, 16, 3), dtype=torch.uint8)}, action=batch.action[:2],
                  reward=batch.reward[:2], is_first=batch.is_first[:2], is_last=batch.is_last[:2],
                  is_terminal=batch.is_terminal[:2])
    first = agent.wm.embed.cnn.net[0].weight.detach().clone()
    metrics = agent.update(batch)
    assert metrics["loss/consistency"] > 0 and not torch.equal(first, agent.wm.embed.cnn.net[0].weight)
