"""``reverie eval --planner``: every trained model acts through every planner."""

import json

import numpy as np
import pytest
import torch

from reverie.agents.planner_policy import PlannerPolicy, PriorPolicy, planner_policy
from reverie.agents.registry import agent_entry, resolve_config
from reverie.cli import main
from reverie.specs import ActionSpec, ArraySpec
from reverie.planning import PlanningError
from reverie.training import session

STEPS = 20                         # episode length of the runs below (run.time_limit)
WORST = -16.3 * STEPS              # Pendulum-v1 pays at least -16.3 per step
SMALL = {                          # planner settings that keep a test episode quick
    "cem": ["candidates=32", "elites=4", "iterations=2", "horizon=5", "policy_candidates=4"],
    "mppi": ["candidates=32", "elites=8", "iterations=2", "policy_candidates=4"],
    "shooting": ["candidates=32", "horizon=5", "policy_candidates=4"],
    "gradient": ["restarts=2", "iterations=3", "horizon=5", "policy_candidates=1"],
}


def train(agent, run_dir):
    assert main(["train", agent, f"run.time_limit={STEPS}", "--env", "gym:Pendulum-v1", "--preset", "tiny",
                 "--run-dir", str(run_dir), "--steps", "64"]) == 0
    return run_dir


@pytest.fixture(scope="module")
def dreamer_run(tmp_path_factory):
    return train("dreamer", tmp_path_factory.mktemp("eval") / "dreamer")


@pytest.fixture(scope="module")
def planet_run(tmp_path_factory):
    return train("planet", tmp_path_factory.mktemp("eval") / "planet")


def evaluate(run_dir, planner, capsys, extra=None):
    args = ["eval", str(run_dir), "--episodes", "1", "--planner", planner]
    for setting in SMALL[planner] if extra is None else extra:
        args += ["--planner-arg", setting]
    code = main(args)
    captured = capsys.readouterr()
    return code, captured


@pytest.mark.parametrize("planner", ["cem", "mppi", "shooting", "gradient"])
def test_a_dreamer_model_acts_through_every_planner(dreamer_run, planner, capsys):
    code, captured = evaluate(dreamer_run, planner, capsys)
    assert code == 0, captured.err
    out = json.loads(captured.out.strip().splitlines()[-1])
    assert out["planner"] == planner and out["episodes"] == 1 and out["step"] == 64
    assert WORST <= out["return_mean"] <= 0


def test_a_planet_model_acts_through_mppi(planet_run, capsys):
    code, captured = evaluate(planet_run, "mppi", capsys, ["candidates=32", "elites=8", "iterations=2"])
    assert code == 0, captured.err
    out = json.loads(captured.out.strip().splitlines()[-1])
    assert out["planner"] == "mppi" and WORST <= out["return_mean"] <= 0


def test_dreamer_plans_with_its_critic_actor_discount_and_continuation(dreamer_run):
    agent, _, _, _ = session.load_run(dreamer_run)
    policy = planner_policy(agent, "mppi", ["horizon=4"])
    assert isinstance(policy, PlannerPolicy)
    s = policy.settings
    assert (s.use_value, s.use_cont, s.discount, s.horizon) == (True, True, agent.ac.cfg.gamma, 4)
    assert (s.policy_candidates, s.sample_policy, s.centre_on_policy, s.candidates) == (64, True, True, 128)
    assert policy.model.capabilities == {"reward", "cont", "decoder", "transition", "value", "policy"}
    state = agent.wm.initial(3)
    state = {k: v + torch.randn_like(v) for k, v in state.items()}
    with torch.no_grad():
        torch.testing.assert_close(policy.model.value(state), agent.ac.value(agent.wm.features(state)))
        torch.testing.assert_close(policy.model.policy(state).mode(), agent.ac.policy(agent.wm.features(state)).mode())
    assert planner_policy(agent, "policy") is agent


def test_a_model_without_critic_refuses_a_terminal_value(planet_run, capsys):
    code, captured = evaluate(planet_run, "cem", capsys, ["candidates=32", "elites=4", "use_value=true"])
    assert code == 2 and "needs a model with value" in captured.err and "Traceback" not in captured.err


def test_unknown_planner_is_one_sentence_before_the_run_is_read(tmp_path, capsys):
    code = main(["eval", str(tmp_path / "missing"), "--planner", "cme"])
    err = capsys.readouterr().err
    assert code == 2 and "unknown planner 'cme'" in err and "mppi" in err and "Traceback" not in err


def test_mistyped_or_misplaced_planner_settings_are_refused(dreamer_run, capsys):
    code, captured = evaluate(dreamer_run, "cem", capsys, ["horizn=3"])
    assert code == 2 and "did you mean 'horizon'" in captured.err
    code, captured = evaluate(dreamer_run, "mppi", capsys, ["candidates=many"])
    assert code == 2 and "candidates" in captured.err and "Traceback" not in captured.err
    assert main(["eval", str(dreamer_run), "--planner-arg", "horizon=3"]) == 2
    assert "settings need a planner" in capsys.readouterr().err


def test_continuous_only_planners_refuse_discrete_actions():
    cfg = resolve_config("planet", "tiny", [])
    agent = agent_entry("planet").build({"vector": ArraySpec((4,), np.dtype(np.float32))}, ActionSpec(True, 2), cfg,
                                        "cpu")
    for planner in ("mppi", "gradient"):
        with pytest.raises(PlanningError, match="discrete"):
            planner_policy(agent, planner)
    assert isinstance(planner_policy(agent, "shooting"), PlannerPolicy)


def test_the_prior_of_a_dreamer_model_is_its_actor(dreamer_run, capsys):
    """Dreamer's model exposes its actor as the policy prior, so acting by the prior alone plays the same
    greedy episodes as the agent itself."""
    returns = {}
    for planner in ("policy", "prior"):
        code = main(["eval", str(dreamer_run), "--episodes", "2", "--planner", planner])
        captured = capsys.readouterr()
        assert code == 0, captured.err
        returns[planner] = json.loads(captured.out.strip().splitlines()[-1])["return_mean"]
    assert returns["prior"] == pytest.approx(returns["policy"], abs=1e-6)
    assert main(["eval", str(dreamer_run), "--planner", "prior", "--acting", "compiled"]) == 2
    assert "not a model's policy prior alone" in capsys.readouterr().err


def test_the_prior_of_a_tdmpc2_model_acts_like_its_policy_mode():
    cfg = resolve_config("tdmpc2", "tiny", [])
    obs_spec = {"vector": ArraySpec((3,), np.dtype(np.float32))}
    agent = agent_entry("tdmpc2").build(obs_spec, ActionSpec(False, 1), cfg, "cpu")
    prior = planner_policy(agent, "prior")
    assert isinstance(prior, PriorPolicy) and prior.name == "tdmpc2+prior"
    rng = np.random.default_rng(0)
    step = {"vector": rng.normal(size=(4, 3)).astype(np.float32), "action": np.zeros((4, 1), np.float32),
            "is_first": np.ones(4, bool), "reward": np.zeros(4, np.float32)}
    env_action, model_action, _, _ = prior.act(step, prior.init_state(4), False)
    with torch.no_grad():
        latent = agent.wm.encode({"vector": torch.as_tensor(step["vector"])})
        expected = agent.wm.policy_dist(latent).mode()
    np.testing.assert_allclose(model_action, expected.numpy(), atol=1e-6)
    with pytest.raises(PlanningError, match="no planner settings"):
        planner_policy(agent, "prior", ["horizon=3"])


def test_a_model_without_a_policy_refuses_the_prior(planet_run, capsys):
    code = main(["eval", str(planet_run), "--episodes", "1", "--planner", "prior"])
    err = capsys.readouterr().err
    assert code == 2 and "policy" in err and "Traceback" not in err
