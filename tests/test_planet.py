"""PlaNet: its KL, acting by CEM with per-environment warm starts, and the agent end to end."""

import dataclasses
import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from reverie.agents.planet import PlanetConfig, planet_model
from reverie.agents.planner_policy import PlannerPolicy
from reverie.cli import main
from reverie.models import Batch, RSSMWorldModel
from reverie.planning import CEMSettings, WarmStart
from reverie.specs import ActionSpec, ArraySpec
from reverie.training.logger import read_metrics


def test_defaults_are_planets_own():
    cfg = PlanetConfig()
    rssm = cfg.model.rssm
    model = (rssm.latent, rssm.deter, rssm.stoch, cfg.model.units, cfg.model.free_nats)
    assert model == ("gaussian", 200, 30, 200, 3.0)
    p = cfg.planner
    assert (p.horizon, p.candidates, p.elites, p.iterations) == (12, 1000, 100, 10)
    assert cfg.explore_noise == 0.3


def test_kl_terms_have_the_gradient_of_the_plain_kl():
    model_cfg = planet_model()
    small = replace(model_cfg, rssm=replace(model_cfg.rssm, deter=16, hidden=16, stoch=4), units=16, layers=1,
                    free_nats=0.0)   # no clipping, so every step's KL has a gradient
    torch.manual_seed(0)
    wm = RSSMWorldModel({"vector": ArraySpec((3,), np.dtype(np.float32))}, ActionSpec(False, 2), small)
    is_first = torch.zeros(2, 6, dtype=torch.bool)
    is_first[:, 0] = True
    none = torch.zeros(2, 6, dtype=torch.bool)
    batch = Batch.build({"vector": torch.randn(2, 6, 3), "action": torch.rand(2, 6, 2) * 2 - 1,
                         "reward": torch.randn(2, 6), "is_first": is_first, "is_last": none, "is_terminal": none},
                        wm.obs_spec, wm.act_spec)
    params = [p for n, p in wm.named_parameters() if n.startswith("rssm") or n.startswith("encoder")]

    torch.manual_seed(1)
    losses, _, _, _ = wm.loss(batch)
    split = torch.autograd.grad((losses["dyn"] + losses["rep"]).mean(), params)

    torch.manual_seed(1)   # the same posterior samples
    post, _ = wm.observe(batch.obs, batch.action, is_first)
    prior = wm.rssm.prior(post["deter"])
    plain = torch.distributions.kl_divergence(torch.distributions.Normal(post["mean"], post["std"]),
                                              torch.distributions.Normal(prior["mean"], prior["std"])).sum(-1)
    reference = torch.autograd.grad(plain.mean(), params)
    for a, b in zip(split, reference):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


class LineModel:
    """State = the observed position x [N, 1]; x' = x + a; reward -x'^2. Best first action: clip(-x)."""

    obs_spec = {"vector": ArraySpec((1,), np.dtype(np.float32))}
    act_spec = ActionSpec(False, 1)
    capabilities = frozenset({"reward"})
    feat_size = 1

    def initial(self, batch):
        return torch.zeros(batch, 1)

    def observe(self, obs, action, is_first, state=None):
        x = obs["vector"].float()
        return x, x[:, -1]

    def features(self, state):
        return state

    def step(self, state, action):
        return state + action

    def reward(self, state):
        return -(state ** 2).sum(-1)


def line_step(x, is_first):
    n = len(x)
    return {"vector": np.asarray(x, np.float32).reshape(n, 1), "action": np.zeros((n, 1), np.float32),
            "is_first": np.asarray(is_first, bool)}


def test_planner_policy_plans_per_environment_and_explores_with_noise():
    torch.manual_seed(0)
    settings = CEMSettings(horizon=2, candidates=200, elites=20, iterations=5)
    policy = PlannerPolicy(LineModel(), "cem", settings, explore_noise=0.3)
    env_action, model_action, _, _ = policy.act(line_step([0.5, -0.3, 2.0], [True] * 3), policy.init_state(3), False)
    np.testing.assert_allclose(env_action[:, 0], [-0.5, 0.3, -1.0], atol=0.05)
    np.testing.assert_array_equal(env_action, model_action)
    noisy, _, _, _ = policy.act(line_step(np.zeros(2000), [True] * 2000), policy.init_state(2000), True)
    assert abs(float(noisy.mean())) < 0.03 and 0.27 < float(noisy.std()) < 0.33


def test_warm_starts_are_kept_per_environment_and_reset_when_an_episode_starts():
    seen = []
    settings = CEMSettings(horizon=3, candidates=20, elites=4, iterations=2, init_std=0.7)
    policy = PlannerPolicy(LineModel(), "cem", settings)
    real_plan = policy.spec.fn

    def recording_plan(model, state, settings, warm, **kw):
        seen.append(warm)
        result = real_plan(model, state, settings, warm, **kw)
        seen.append(result.warm)
        return result

    policy.spec = dataclasses.replace(policy.spec, fn=recording_plan)
    state = policy.init_state(2)
    _, _, state, _ = policy.act(line_step([0.5, 0.5], [True, True]), state, False)
    _, _, state, _ = policy.act(line_step([0.2, 0.2], [False, False]), state, False)
    _, _, state, _ = policy.act(line_step([0.1, 0.9], [False, True]), state, False)
    first_in, first_out, second_in, second_out, third_in, _ = seen
    assert first_in is None
    torch.testing.assert_close(second_in.mean, first_out.mean)     # carried over unchanged
    torch.testing.assert_close(second_in.std, first_out.std)
    torch.testing.assert_close(third_in.mean[0], second_out.mean[0])   # env 0 continues its plan
    torch.testing.assert_close(third_in.mean[1], torch.zeros(3, 1))     # env 1 starts cold
    torch.testing.assert_close(third_in.std[1], torch.full((3, 1), 0.7))
    assert state.warm.mean.shape == (2, 3, 1)


def test_forgetting_a_discrete_warm_start_makes_it_uniform():
    probs = torch.tensor([[[0.9, 0.1]], [[0.2, 0.8]]])
    out = WarmStart(probs=probs).forget(torch.tensor([True, False]))
    torch.testing.assert_close(out.probs, torch.tensor([[[0.5, 0.5]], [[0.2, 0.8]]]))
    assert WarmStart(probs=probs).forget(torch.tensor([True, True])) is None
    assert WarmStart(probs=probs).forget(torch.tensor([False, False])).probs is probs


@pytest.fixture(scope="module")
def planet_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("planet") / "cp"
    args = ["train", "planet", "--env", "gym:CartPole-v1", "--preset", "tiny", "--run-dir", str(run_dir)]
    assert main([*args, "--steps", "64"]) == 0
    return run_dir, args


def test_train_writes_a_run_and_resumes(planet_run, capsys):
    run_dir, args = planet_run
    files = {p.name for p in run_dir.iterdir()}
    assert {"run.json", "config.yaml", "checkpoints", "replay", "dream.png", "summary.json"} <= files
    before = json.loads((run_dir / "summary.json").read_text())
    assert before["agent"] == "planet" and before["updates"] > 0
    assert main([*args, "--steps", "96"]) == 0
    assert "resuming" in capsys.readouterr().out
    after = json.loads((run_dir / "summary.json").read_text())
    assert after["env_steps"] == 96 and after["updates"] > before["updates"]
    metrics = read_metrics(run_dir / "metrics.jsonl")
    kl = [m for m in metrics if "train/loss/dyn" in m]
    # PlaNet's KL: both halves weigh 1 and are clipped at 3 free nats
    assert kl and all(m["train/loss/dyn"] >= 3.0 - 1e-4 and m["train/loss/rep"] >= 3.0 - 1e-4 for m in kl)
    assert main(["eval", str(run_dir), "--episodes", "1"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["planner"] == "policy" and out["step"] == 96 and out["return_mean"] >= 1


def test_a_run_folder_written_before_the_contract_still_loads_and_resumes(planet_run, tmp_path, capsys):
    import shutil

    import yaml

    run_dir, args = planet_run
    old = tmp_path / "old"
    shutil.copytree(run_dir, old)
    config = yaml.safe_load((old / "config.yaml").read_text())
    config["planner"].update(action_size=None, discrete=False)   # what earlier versions wrote
    (old / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    assert main(["eval", str(old), "--episodes", "1"]) == 0
    steps = json.loads((old / "summary.json").read_text())["env_steps"]
    assert main(["train", "planet", "--env", "gym:CartPole-v1", "--preset", "tiny", "--run-dir", str(old),
                 "--steps", str(steps + 16)]) == 0
    assert "resuming" in capsys.readouterr().out
