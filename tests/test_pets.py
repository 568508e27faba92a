"""PETS: the probabilistic ensemble, trajectory sampling, early stopping, and the agent end to end."""

import json

import numpy as np
import pytest
import torch

from reverie.agents.pets import (Pets, PetsConfig, Transitions, fit_ensemble, split_holdout,
                                 transitions_from_chunks)
from reverie.cli import main
from reverie.config import ConfigError
from reverie.models.ensemble import EnsembleConfig, ProbabilisticEnsemble
from reverie.models.ensemble_model import EnsembleWorldModel
from reverie.planning import plan
from reverie.specs import ActionSpec, ArraySpec
from reverie.training.logger import read_metrics


def known_system(n, rng, low=-1.0, high=1.0, noise=0.01):
    """x' = x + a / 2 + noise, reward -(x')^2: the best action from x is a = clip(-2x, -1, 1)."""
    x = rng.uniform(low, high, (n, 1)).astype(np.float32)
    a = rng.uniform(-1, 1, (n, 1)).astype(np.float32)
    nxt = (x + 0.5 * a + noise * rng.standard_normal((n, 1))).astype(np.float32)
    return Transitions(x, a, nxt, -(nxt[:, 0] ** 2))


FITTED = EnsembleConfig(members=5, units=32, layers=2, lr=3e-3)


@pytest.fixture(scope="module")
def fitted():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = ProbabilisticEnsemble(1, 1, FITTED)
    fit_ensemble(model, model.optimizer(), known_system(400, rng), known_system(100, rng), max_epochs=40,
                 patience=40, batch_size=32, rng=rng)
    return model


def test_rows_go_through_their_own_member_like_a_loop_over_members():
    torch.manual_seed(1)
    model = ProbabilisticEnsemble(3, 2, EnsembleConfig(members=4, units=8, layers=2))
    x = torch.randn(11, 5)
    member = torch.tensor([2, 0, 2, 2, 1, 0, 2, 1, 2, 0, 2])   # unbalanced, member 3 unused
    mean, logvar = model.forward_rows(x, member)
    for i in range(11):   # the slow reference: row i through member member[i] alone
        all_mean, all_logvar = model(x[i].expand(4, 1, 5))
        torch.testing.assert_close(mean[i], all_mean[member[i], 0])
        torch.testing.assert_close(logvar[i], all_logvar[member[i], 0])


def test_fits_a_known_system_and_is_more_uncertain_off_the_data(fitted):
    rng = np.random.default_rng(1)

    def error_and_variance(data):
        mean, var = fitted.predict(torch.as_tensor(data.obs), torch.as_tensor(data.action))   # [E, N, 2]
        target = torch.as_tensor(np.concatenate([data.next_obs - data.obs, data.reward[:, None]], -1))
        total = var.mean(0) + mean.var(0, unbiased=False)   # aleatoric + epistemic, [N, 2]
        return float(((mean.mean(0) - target) ** 2).mean()), float(total[:, 0].mean())

    on_error, on_var = error_and_variance(known_system(200, rng))
    _, off_var = error_and_variance(known_system(200, rng, low=3.0, high=4.0))
    assert on_error < 2e-3
    assert off_var > 10 * on_var


def test_cem_on_particles_finds_the_best_action_of_the_learned_system(fitted):
    torch.manual_seed(2)
    wm = EnsembleWorldModel({"x": ArraySpec((1,), np.dtype(np.float32))}, ActionSpec(False, 1), FITTED, particles=8)
    wm.ensemble.load_state_dict(fitted.state_dict())
    # the world model's filtering puts P particles at the observation (PETS assumes full observability)
    posts, start = wm.observe({"x": torch.tensor([[[0.3]], [[-0.2]]])}, torch.zeros(2, 1, 1), torch.ones(2, 1).bool())
    assert start["obs"].shape == (2, 8, 1) and torch.equal(start["obs"][:, :, 0], torch.tensor([[0.3], [-0.2]]).expand(2, 8))
    result = plan("cem", wm, start, horizon=1, candidates=100, elites=10, iterations=4)
    torch.testing.assert_close(result.action, torch.tensor([[-0.6], [0.4]]), atol=0.1, rtol=0)


def constant_members(members, obs_dim):
    """Member e predicts the change +e in every dimension (and reward e) with negligible variance."""
    model = ProbabilisticEnsemble(obs_dim, 1, EnsembleConfig(members=members, units=4, layers=1, min_logvar=-30))
    with torch.no_grad():
        model.weights[-1].zero_()
        bias = model.biases[-1]
        bias[:, :, : obs_dim + 1] = torch.arange(members, dtype=torch.float32)[:, None, None]
        bias[:, :, obs_dim + 1:] = -30.0
    return model


def test_tsinf_keeps_each_particles_member_and_ts1_redraws_it_every_step():
    torch.manual_seed(3)
    model = constant_members(members=5, obs_dim=2)
    start = model.start_state(torch.zeros(200, 2), particles=12)
    counts = torch.bincount(start["member"][0], minlength=5)
    assert int(counts.max() - counts.min()) <= 1          # particles spread evenly over the members
    action = torch.zeros(200, 1)

    model.propagation = "tsinf"
    state = start
    for _ in range(3):
        state = model.step(state, action)
    assert torch.equal(state["member"], start["member"])
    torch.testing.assert_close(state["obs"], 3.0 * start["member"][..., None].float().expand(200, 12, 2),
                               atol=1e-4, rtol=0)
    torch.testing.assert_close(model.reward(state), start["member"].float().mean(-1))

    model.propagation = "ts1"
    state = model.step(start, action)
    # each particle moved by the member it drew for this step
    torch.testing.assert_close(state["obs"], state["member"][..., None].float().expand(200, 12, 2),
                               atol=1e-4, rtol=0)
    drawn = torch.bincount(state["member"].flatten(), minlength=5).float()
    assert drawn.min() > 0.8 * 480 and drawn.max() < 1.2 * 480    # uniform: 2400 particles / 5 members
    kept = (state["member"] == start["member"]).float().mean()
    assert 0.1 < float(kept) < 0.3                                 # redrawn: the same member 1 time in 5


def test_early_stopping_restores_each_members_best_epoch():
    torch.manual_seed(4)
    rng = np.random.default_rng(4)
    # 16 noisy transitions and wide members: held-out error falls, then rises as they overfit
    train, held = known_system(16, rng, noise=0.3), known_system(200, rng, noise=0.3)
    model = ProbabilisticEnsemble(1, 1, EnsembleConfig(members=5, units=128, layers=3, lr=1e-2, weight_decay=0))
    report = fit_ensemble(model, model.optimizer(), train, held, max_epochs=200, patience=15, batch_size=4,
                          rng=rng)
    epochs = len(report.history)
    assert epochs < 200                                            # it stopped early
    assert (report.best_epoch >= 0).all() and (report.best_epoch <= epochs - 1 - 15).all()
    x, y = held.tensors(torch.device("cpu"))
    now = model.scores(x, y).numpy()
    best = report.history[report.best_epoch, np.arange(5)]
    np.testing.assert_allclose(now, best, rtol=1e-5)               # the kept weights are the best epoch's
    assert (report.history[-1] > best).any()                       # and they are not simply the last epoch's


def test_transitions_pair_consecutive_steps_and_skip_episode_starts():
    chunk = {
        "vector": np.arange(12, dtype=np.float32).reshape(6, 2),
        "action": np.array([[0], [1], [2], [0], [4], [5]], np.float32),
        "reward": np.array([0, 10, 20, 0, 40, 50], np.float32),
        "is_first": np.array([1, 0, 0, 1, 0, 0], bool),
    }
    data = transitions_from_chunks([chunk, {k: v[:1] for k, v in chunk.items()}], ["vector"])
    assert len(data) == 4                                          # 2 -> 3 starts an episode; 1-step chunk has none
    np.testing.assert_array_equal(data.obs[:, 0], [0, 2, 6, 8])
    np.testing.assert_array_equal(data.next_obs[:, 0], [2, 4, 8, 10])
    np.testing.assert_array_equal(data.action[:, 0], [1, 2, 4, 5])   # the action stored with t + 1 led there
    np.testing.assert_array_equal(data.reward, [10, 20, 40, 50])
    train, held = split_holdout(data, 0.1, np.random.default_rng(0))
    assert (len(train), len(held)) == (3, 1)
    assert sorted(np.concatenate([train.obs, held.obs])[:, 0]) == [0, 2, 6, 8]


def test_images_are_refused_in_one_sentence():
    spec = {"image": ArraySpec((8, 8, 3), np.dtype(np.uint8))}
    with pytest.raises(ConfigError, match="--obs state"):
        Pets(spec, ActionSpec(False, 1), PetsConfig())


def test_train_resume_and_eval_through_another_planner(tmp_path, capsys):
    run_dir = tmp_path / "pets"
    args = ["train", "pets", "run.time_limit=40", "--env", "gym:Pendulum-v1", "--preset", "tiny",
            "--run-dir", str(run_dir)]
    assert main([*args, "--steps", "100"]) == 0
    shown = capsys.readouterr().err
    assert "2 model fits" in shown and "upd/s" not in shown      # the progress line counts refits
    assert (run_dir / "dream.png").stat().st_size > 1000
    fits = [m["train/model/fits"] for m in read_metrics(run_dir / "metrics.jsonl") if "train/model/fits" in m]
    assert fits == [1.0, 2.0]                                      # prefill 50, then every 50 agent steps
    assert main([*args, "--steps", "150"]) == 0
    assert "resuming" in capsys.readouterr().out
    metrics = read_metrics(run_dir / "metrics.jsonl")
    assert [m["train/model/fits"] for m in metrics if "train/model/fits" in m] == [1.0, 2.0, 3.0]
    assert json.loads((run_dir / "summary.json").read_text())["env_steps"] == 150
    assert main(["eval", str(run_dir), "--episodes", "1", "--planner", "mppi", "--planner-arg", "candidates=32",
                 "--planner-arg", "elites=8"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["planner"] == "mppi" and out["step"] == 150 and -40 * 16.3 <= out["return_mean"] <= 0
