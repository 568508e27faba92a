"""World Models: the MDN-RNN's likelihood and temperature, the VAE's KL, CMA-ES through the controller, the dream
as a gymnasium environment (World Models' and Dreamer's models), and the staged run end to end with a resume."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

from reverie.agents.dreamer import Dreamer
from reverie.agents.registry import resolve_config
from reverie.agents.worldmodels import Controller, Evolution
from reverie.agents.worldmodels_rollouts import real_returns
from reverie.envs import make_env
from reverie.envs.dream_env import DreamEnv, DreamVectorEnv
from reverie.models.base import capabilities_of
from reverie.models.mdn_rnn import MDNRNN, MDNRNNConfig, MixtureParams, WorldModelsModel, mdn_log_prob, mdn_sample
from reverie.models.vae import ConvVAE, VAEConfig, gaussian_kl
from reverie.specs import ActionSpec, ArraySpec

IMAGE = {"image": ArraySpec((16, 16, 3), np.dtype(np.uint8))}


def tiny_wm(act=ActionSpec(False, 2), seed=0):
    torch.manual_seed(seed)
    return WorldModelsModel(IMAGE, act, VAEConfig(z_size=4, depth=4), MDNRNNConfig(hidden=8, mixtures=3))


def starts(k=5, seed=0):
    return {"image": np.random.default_rng(seed).integers(0, 256, (k, 16, 16, 3), dtype=np.uint8)}


# -- the MDN-RNN ---------------------------------------------------------------------------------
def test_mdn_log_prob_is_the_hand_computed_mixture_likelihood():
    logits = torch.tensor([[[0.0, math.log(3.0)], [1.0, -1.0]]])      # [1, D=2, K=2]
    mean = torch.tensor([[[0.0, 1.0], [-2.0, 2.0]]])
    log_std = torch.log(torch.tensor([[[1.0, 0.5], [2.0, 1.0]]]))
    z = torch.tensor([[0.3, 1.5]])

    def normal(x, mu, s):
        return math.exp(-0.5 * ((x - mu) / s) ** 2) / (s * math.sqrt(2 * math.pi))

    w1 = [math.exp(1) / (math.exp(1) + math.exp(-1)), math.exp(-1) / (math.exp(1) + math.exp(-1))]
    dim0 = 0.25 * normal(0.3, 0.0, 1.0) + 0.75 * normal(0.3, 1.0, 0.5)
    dim1 = w1[0] * normal(1.5, -2.0, 2.0) + w1[1] * normal(1.5, 2.0, 1.0)
    got = mdn_log_prob(MixtureParams(logits, mean, log_std), z)
    assert got.shape == (1,)
    assert float(got) == pytest.approx(math.log(dim0) + math.log(dim1), rel=1e-6)


def test_mdn_rnn_loss_is_the_per_dimension_nll_of_its_own_mixtures():
    torch.manual_seed(0)
    rnn = MDNRNN(3, 2, MDNRNNConfig(hidden=8, mixtures=4, reward_scale=0.0, done_scale=0.0))
    z, a = torch.randn(2, 5, 3), torch.randn(2, 5, 2)
    first = torch.zeros(2, 5, dtype=torch.bool)
    first[:, 0] = True
    loss, _, _ = rnn.loss(z, a, first, torch.zeros(2, 5), torch.zeros(2, 5, dtype=torch.bool), torch.ones(2, 5))
    hs, _ = rnn.filter(z, a, first, torch.zeros(2, 8), torch.zeros(2, 8))
    # by hand: step t reads [z_{t-1}, a_t], so h_1 comes from [z_0, a_1]
    h, c = rnn.cell(torch.cat([z[:, 0], a[:, 1]], -1), rnn.cell(torch.cat([torch.zeros(2, 3), torch.zeros(2, 2)], -1)))
    torch.testing.assert_close(hs[:, 1], h)
    expected = -mdn_log_prob(rnn.mixture(hs), z).mean() / 3
    torch.testing.assert_close(loss, expected)


def test_sampling_at_tau_to_zero_gives_the_mean_of_the_most_likely_component_and_tau_scales_the_spread():
    torch.manual_seed(0)
    mix = MixtureParams(torch.randn(50, 6, 5), torch.randn(50, 6, 5), torch.randn(50, 6, 5) * 0.3)
    best = mix.mean.gather(-1, mix.logits.argmax(-1, keepdim=True)).squeeze(-1)
    torch.testing.assert_close(mdn_sample(mix, 0.0), best)
    torch.testing.assert_close(mdn_sample(mix, 1e-6), best, atol=1e-2, rtol=0)
    one = MixtureParams(torch.zeros(1, 1, 1), torch.full((1, 1, 1), 2.0), torch.log(torch.full((1, 1, 1), 0.5)))
    wide = MixtureParams(one.logits.expand(20000, 1, 1), one.mean.expand(20000, 1, 1), one.log_std.expand(20000, 1, 1))
    x = mdn_sample(wide, 2.0, torch.Generator().manual_seed(1))
    assert float(x.mean()) == pytest.approx(2.0, abs=0.02)
    assert float(x.var()) == pytest.approx(2.0 * 0.25, rel=0.05)          # sigma^2 * tau
    # logits / tau: at tau = 0.5 component weights (1/3, 2/3) become (1/5, 4/5)
    two = MixtureParams(torch.log(torch.tensor([1.0, 2.0])).expand(20000, 1, 2),
                        torch.tensor([0.0, 10.0]).expand(20000, 1, 2), torch.full((20000, 1, 2), -9.0))
    frac = float((mdn_sample(two, 0.5, torch.Generator().manual_seed(2)) > 5).float().mean())
    assert frac == pytest.approx(0.8, abs=0.015)


# -- the VAE -------------------------------------------------------------------------------------
def test_vae_kl_is_the_closed_form_and_the_loss_floors_it():
    torch.manual_seed(0)
    mean, logvar = torch.randn(7, 5), torch.randn(7, 5)
    ref = torch.distributions.kl_divergence(torch.distributions.Normal(mean, (0.5 * logvar).exp()),
                                            torch.distributions.Normal(0.0, 1.0)).sum(-1)
    torch.testing.assert_close(gaussian_kl(mean, logvar), ref)
    assert torch.allclose(gaussian_kl(torch.zeros(3, 4), torch.zeros(3, 4)), torch.zeros(3))
    vae = ConvVAE((16, 16, 3), VAEConfig(z_size=4, depth=4, kl_tolerance=100.0))
    image = torch.randint(0, 256, (3, 16, 16, 3), dtype=torch.uint8)
    loss, m = vae.loss(image, torch.Generator().manual_seed(0))
    assert float(loss) == pytest.approx(m["vae/rec"] + 400.0, rel=1e-5)     # KL below 100 * 4 counts as 400
    assert vae.decode(torch.zeros(2, 4)).shape == (2, 16, 16, 3)


# -- CMA-ES through the controller -----------------------------------------------------------------
def test_cma_es_through_the_controller_solves_a_quadratic_and_restores_from_its_history():
    ctrl = Controller(3, ActionSpec(False, 2))
    rng = np.random.default_rng(0)
    x = torch.as_tensor(rng.standard_normal((64, 3)), dtype=torch.float32)
    target = torch.as_tensor(rng.uniform(-0.4, 0.4, ctrl.size), dtype=torch.float32)
    # pre-activations are linear in the parameters, so this fitness is a negative definite quadratic
    want = torch.atanh(ctrl.act(target[None].expand(64, -1), x))

    def fitness(params):                                   # the whole population as one controller batch
        P = len(params)
        got = ctrl.act(params.repeat_interleave(64, 0), x.repeat(P, 1)).clamp(-0.999999, 0.999999)
        return -(torch.atanh(got).reshape(P, 64, 2) - want).pow(2).mean((1, 2)).numpy()

    evo = Evolution(ctrl.size, 12, 0.5, seed=3)
    for _ in range(80):
        cands = torch.as_tensor(evo.ask(), dtype=torch.float32)
        evo.tell(fitness(cands))
    np.testing.assert_allclose(evo.mean, target.numpy(), atol=1e-3)
    again = Evolution(ctrl.size, 12, 0.5, seed=3)
    again.restore(evo.fitness)
    np.testing.assert_array_equal(again.ask(), evo.ask())
    assert again.sigma == evo.sigma


# -- the dream as a gymnasium environment --------------------------------------------------------------
def tiny_dreamer_model(act):
    cfg = resolve_config("dreamer", "tiny", ["run.image_size=16"])
    return Dreamer(IMAGE, act, cfg, "cpu").model


@pytest.mark.parametrize("family", ["worldmodels", "dreamer"])
@pytest.mark.parametrize("act", [ActionSpec(False, 2), ActionSpec(True, 3)], ids=["continuous", "discrete"])
def test_the_dream_env_passes_gymnasiums_checker_and_is_deterministic_under_a_seed(family, act):
    model = tiny_wm(act) if family == "worldmodels" else tiny_dreamer_model(act)
    assert {"reward", "cont", "decoder"} <= capabilities_of(model)
    for observation in ("image", "features"):
        env = DreamEnv(model, starts(), observation=observation, max_steps=7, render_mode="rgb_array")
        check_env(env)
        env.reset(seed=0)
        assert env.render().shape == (16, 16, 3)

    def episode(seed):
        env = DreamEnv(model, starts(), max_steps=6)
        obs, _ = env.reset(seed=seed)
        out = [obs]
        env.action_space.seed(0)
        for _ in range(6):
            obs, r, term, trunc, _ = env.step(env.action_space.sample())
            out += [obs, np.array([r, term, trunc])]
            if term or trunc:
                break
        return out

    a, b, c = episode(5), episode(5), episode(6)
    assert all(np.array_equal(x, y) for x, y in zip(a, b)) and len(a) == len(b)
    assert not (len(a) == len(c) and all(np.array_equal(x, y) for x, y in zip(a, c)))


def test_the_vector_dream_steps_a_batch_deterministically_and_restarts_ended_rows():
    model = tiny_wm()
    with torch.no_grad():
        model.rnn.done_head.bias.fill_(-30.0)         # episodes never end by themselves: only truncation
    runs = []
    for _ in range(2):
        env = DreamVectorEnv(model, starts(), num_envs=4, observation="features", max_steps=3)
        obs, _ = env.reset(seed=11)
        rows = [obs]
        for t in range(5):
            obs, r, term, trunc, _ = env.step(np.full((4, 2), 0.5, np.float32))
            rows += [obs, r, term, trunc]
            if t == 2:
                assert trunc.all() and not term.any()   # every row is cut at max_steps
            if t == 3:
                assert (r == 0).all() and not (term | trunc).any()   # ... and starts over on the next step
        runs.append(rows)
    assert all(np.array_equal(x, y) for x, y in zip(*runs))
    assert runs[0][0].shape == (4, model.feat_size)


def test_real_returns_score_every_candidate_episode():
    model = tiny_wm(ActionSpec(True, 2))
    ctrl = Controller(model.feat_size, ActionSpec(True, 2))
    params = torch.randn(3, ctrl.size)
    fns = [lambda s=s: make_env("gym:CartPole-v1", obs="pixels", seed=s, size=(16, 16), time_limit=4)
           for s in range(2)]
    returns, steps = real_returns(model, ctrl, lambda f: f, params, 2, fns, parallel=False)
    np.testing.assert_array_equal(returns, np.full((3, 2), 4.0))   # CartPole cannot fall within 4 steps
    assert steps >= 6 * 4


# -- end to end ------------------------------------------------------------------------------------
def test_train_worldmodels_runs_every_stage_and_a_run_killed_after_stage_2_resumes_at_stage_3(tmp_path, capsys):
    from reverie.cli import main

    run_dir = tmp_path / "run"
    args = ["train", "worldmodels", "--preset", "tiny", "--run-dir", str(run_dir), "evolve_in=dream"]
    env = dict(os.environ, OMP_NUM_THREADS="1", REVERIE_FAILPOINTS="loop.stage=2")   # VAE's 2nd (last) unit
    killed = subprocess.run([sys.executable, "-m", "reverie", *args], capture_output=True, text=True, env=env,
                            timeout=300)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert "stage 2/5 (vae)" in killed.stdout and "stage 3/5" not in killed.stdout
    assert main(args) == 0                                  # the same command resumes it
    out = capsys.readouterr().out
    stages = [line.split("] ")[1].split(":")[0] for line in out.splitlines() if "] stage " in line]
    assert stages[0] == "stage 3/5 (encode)" and "stage 2/5 (vae)" not in stages
    assert stages.count("stage 4/5 (mdn)") == 2
    assert stages.count("stage 5/5 (controller in the dream environment)") == 2
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert sum("vae/loss" in r for r in rows) == 2                  # no VAE unit ran twice
    assert [r["cma/generation"] for r in rows if "cma/best" in r] == [1.0, 2.0]
    assert any("eval/return" in r for r in rows)
    assert (run_dir / "stages" / "encoded.safetensors").exists()
    assert json.loads((run_dir / "summary.json").read_text())["eval/return"] is not None


@pytest.mark.parametrize("act", [ActionSpec(False, 2), ActionSpec(True, 3)], ids=["continuous", "discrete"])
def test_reverie_planners_plan_on_the_world_models_model(act):
    from reverie.planning import PLANNERS, plan, planner_spec

    model = tiny_wm(act)
    obs = {"image": torch.as_tensor(starts(2)["image"])[:, None]}
    with torch.no_grad():
        _, state = model.observe(obs, torch.zeros(2, 1, act.size), torch.ones(2, 1, dtype=torch.bool))
    ran = 0
    for name in PLANNERS:
        if name == "mcts" or not planner_spec(name).supports(act):   # mcts needs value and policy heads
            continue
        settings = {"horizon": 3, "candidates": 8} if name == "shooting" else (
            {"horizon": 3, "restarts": 2, "iterations": 2} if name == "gradient" else
            {"horizon": 3, "candidates": 8, "elites": 2, "iterations": 2})
        result = plan(name, model, state, seed=0, use_cont=True, **settings)
        assert result.action.shape == (2, act.size) and torch.isfinite(result.action).all()
        ran += 1
    assert ran >= 2


def test_the_world_models_model_implements_the_core_and_every_capability_it_declares():
    from reverie.models.base import CAPABILITIES, WorldModel

    model = tiny_wm()
    assert isinstance(model, WorldModel) and model.feat_size == 4 + 8
    image = torch.as_tensor(starts(6)["image"]).reshape(2, 3, 16, 16, 3)
    first = torch.tensor([[True, False, False], [True, False, True]])
    with torch.no_grad():
        action = torch.randn(2, 3, 2)
        states, last = model.observe({"image": image}, action, first)
        _, head = model.observe({"image": image[:, :1]}, action[:, :1], first[:, :1])
        _, tail = model.observe({"image": image[:, 1:]}, action[:, 1:], first[:, 1:], head)   # carried state
        for k in ("z", "h", "c"):
            torch.testing.assert_close(tail[k], last[k])
        assert model.features(states).shape == (2, 3, 12)
        torch.testing.assert_close(states["h"][1, 2], model.rnn.cell(torch.zeros(1, 6))[0][0])   # reset at is_first
        nxt = model.step(last, torch.zeros(2, 2))
        for cap in capabilities_of(model):
            if cap == "transition":
                z, f = model.transition(nxt, torch.zeros(1, 2))
                assert f(z).shape == z.shape == (2, 16) and f(z[:1]).shape == (1, 16)
                continue
            out = getattr(model, CAPABILITIES[cap])(nxt)
            assert (out["image"].shape == (2, 16, 16, 3)) if cap == "decoder" else (out.shape == (2,))


@pytest.mark.parametrize("inputs, size", [("zh", 2 * (4 + 8) + 2), ("z", 2 * 4 + 2)])
def test_the_agent_acts_with_its_controller_on_z_h_or_z_alone(inputs, size):
    from reverie.agents.worldmodels import WorldModels

    cfg = resolve_config("worldmodels", "tiny", [f"controller_input={inputs}"])
    agent = WorldModels(IMAGE, ActionSpec(False, 2), cfg)
    assert agent.controller.size == size                  # the paper's 867 = 3 * (32 + 256) + 3 on CarRacing
    agent.params = torch.randn(size)
    step = {"image": starts(3)["image"], "action": np.zeros((3, 2), np.float32), "is_first": np.ones(3, bool)}
    out = agent.act(step, agent.init_state(3), explore=False)
    with torch.no_grad():
        _, state = agent.wm.observe({"image": torch.as_tensor(step["image"])[:, None]}, torch.zeros(3, 1, 2),
                                    torch.ones(3, 1, dtype=torch.bool))
        x = agent.wm.features(state)[:, :(size - 2) // 2]        # [z, h] or its first 4 entries, z
        W, b = agent.params[:-2].reshape(2, -1), agent.params[-2:]
        want = torch.tanh(x @ W.T + b)
    np.testing.assert_allclose(out.env_action, want.numpy(), rtol=1e-5, atol=1e-6)
