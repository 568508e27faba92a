"""Planning toward a goal in C-SWM's latent space: the goal cost against hand-computed energies, the shapes world's
true rules as batched dynamics (against the environment itself), a planner on them reaching one-move goals, and
``reverie eval --planner cem --goal`` end to end on a tiny run, with bad goals answered in one sentence."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from reverie.cli import main
from reverie.envs.shapes import Shapes, ShapesGoalDynamics, push
from reverie.models.cswm import CSWMModel, CSWMModelConfig
from reverie.models.latent_goal import GoalError, GoalReward, LatentGoalModel, goals_for
from reverie.planning import CEMSettings, ShootingSettings, cem, shooting
from reverie.specs import ActionSpec, ArraySpec
from reverie.training.goal_eval import GoalEnv, parse_goal, walk_goal

SPEC = {"image": ArraySpec((50, 50, 3), np.dtype(np.uint8))}


def small_model() -> CSWMModel:
    torch.manual_seed(0)
    return CSWMModel(SPEC, ActionSpec(True, 20), CSWMModelConfig(hidden=8, channels=2)).eval()


def test_the_goal_cost_is_the_squared_distance_summed_over_slots_and_dimensions():
    model = small_model()
    assert isinstance(model, LatentGoalModel)
    z = torch.tensor([[[0.0, 0.0], [1.0, 2.0], [0.0, 0.0], [0.0, 0.0], [3.0, -1.0]]])
    g = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [0.0, 0.0], [0.0, 0.5], [0.0, 0.0]]])
    # by hand: 1 + 4 + 0 + 0.25 + (9 + 1) = 15.25
    assert model.goal_cost({"objects": z}, {"objects": g}).tolist() == [15.25]
    # the reward a planner maximises is minus that cost, each goal row repeated for its candidates (b * C + c)
    goals = {"objects": torch.stack([g[0], torch.zeros(5, 2)])}                               # B = 2
    states = {"objects": torch.cat([z.expand(3, 5, 2), torch.zeros(3, 5, 2)])}               # C = 3 each
    reward = GoalReward(model, goals).reward(states)
    assert reward.tolist() == [-15.25] * 3 + [0.0] * 3
    with pytest.raises(GoalError, match="5 states cannot be scored against 2 goals"):
        goals_for(goals, 5)


def test_the_goal_state_is_the_encoding_observe_gives():
    model = small_model()
    image = torch.as_tensor(Shapes().reset(seed=3)[0])[None]
    _, state = model.observe({"image": image[:, None]}, torch.zeros(1, 1, 20), torch.ones(1, 1, dtype=torch.bool))
    assert torch.equal(model.goal_state({"image": image})["objects"], state["objects"])


def test_the_batched_push_follows_the_environments_rules():
    env, rng = Shapes(), np.random.default_rng(0)
    positions, actions, expected = [], [], []
    for i in range(300):
        env.reset(seed=i)
        if i % 3 == 0:      # crowd a corner so that walls and neighbours block pushes often
            env.reset(options={"positions": [[0, 0], [0, 1], [1, 0], [1, 1], [4, 4]]})
        action = int(rng.integers(20))
        positions.append(env.positions.copy())
        actions.append(action)
        env.step(action)
        expected.append(env.positions.copy())
    got = push(torch.as_tensor(np.stack(positions)), torch.as_tensor(actions), 5, 5)
    assert np.array_equal(got.numpy(), np.stack(expected))
    assert (got.numpy() != np.stack(positions)).any() and (got.numpy() == np.stack(positions)).all((1, 2)).any()


@pytest.mark.parametrize("planner, settings", [
    (cem, CEMSettings(horizon=2, candidates=64, elites=8, iterations=3, seed=0)),
    (shooting, ShootingSettings(horizon=2, candidates=256, seed=0)),
])
def test_a_planner_on_the_true_dynamics_takes_the_one_push_to_a_goal(planner, settings):
    env, rng = Shapes(), np.random.default_rng(1)
    starts, goals, moves = [], [], []
    while len(starts) < 8:
        env.reset(seed=len(starts) + 100)
        start, action = env.positions.copy(), int(rng.integers(20))
        if env.step(action)[4]["moved"]:
            starts.append(start)
            goals.append(env.positions.copy())
            moves.append(action)
    dynamics = ShapesGoalDynamics(torch.as_tensor(np.stack(goals)))
    result = planner(dynamics, torch.as_tensor(np.stack(starts)), settings)
    reached = dynamics.step(torch.as_tensor(np.stack(starts)), result.action)
    assert torch.equal(reached, torch.as_tensor(np.stack(goals)))
    assert dynamics.reward(reached).tolist() == [0.0] * 8


def test_goal_forms_parse_and_a_walk_ends_away_from_its_start():
    assert parse_goal("walk:5").steps == 5 and parse_goal("g.npy").path == Path("g.npy")
    for bad, sentence in [("walk:0", "T >= 1"), ("goal.png", "a .npy file or walk:T")]:
        with pytest.raises(GoalError, match=sentence):
            parse_goal(bad)
    from reverie.envs import make_env

    env = make_env("gym:reverie/Shapes-v0", seed=4)
    goal = walk_goal(env, 3, np.random.default_rng(0))
    first = make_env("gym:reverie/Shapes-v0", seed=4).reset()
    assert not np.array_equal(goal["image"], first["image"])
    wrapped = GoalEnv(make_env("gym:reverie/Shapes-v0", seed=4), {"image": first["image"]})
    wrapped.reset()
    step = wrapped.step(0)
    assert bool(step["is_last"]) == (float(step["reward"]) == 1.0) == np.array_equal(step["image"], first["image"])


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("goal") / "tiny"
    assert main(["train", "cswm", "--preset", "tiny", "--run-dir", str(run)]) == 0
    return run


def test_eval_plans_toward_a_goal_end_to_end(tiny_run, tmp_path, capsys):
    small = ["--planner-arg", "candidates=32", "--planner-arg", "elites=4", "--planner-arg", "iterations=2"]
    capsys.readouterr()
    assert main(["eval", str(tiny_run), "--planner", "cem", "--goal", "walk:1", "--episodes", "3", *small]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["episodes"] == 3 and out["steps_allowed"] == 2 and 0.0 <= out["reached"] <= 1.0
    assert out["reached_episodes"] == round(3 * out["reached"])
    goal = tmp_path / "goal.npy"
    np.save(goal, Shapes().reset(seed=0)[0])
    assert main(["eval", str(tiny_run), "--planner", "shooting", "--goal", str(goal), "--episodes", "1",
                 "--planner-arg", "candidates=16"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["steps_allowed"] is None


@pytest.mark.parametrize("args, sentence", [
    (["--planner", "cem", "--goal", "BAD_NPY"], "is uint8[10, 10, 3] but this run's observations 'image' are "
                                                "uint8[50, 50, 3]"),
    (["--planner", "cem", "--goal", "walk:x"], "needs a whole number of random actions T >= 1"),
    (["--planner", "mppi", "--goal", "walk:1"], "planner 'mppi' plans continuous actions but this model's are "
                                                "discrete"),
    (["--goal", "walk:1"], "--goal plans toward the goal with a planner"),
])
def test_bad_goals_are_one_sentence(tiny_run, tmp_path, capsys, args, sentence):
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((10, 10, 3), np.uint8))
    capsys.readouterr()
    assert main(["eval", str(tiny_run), "--episodes", "1", *[str(bad) if a == "BAD_NPY" else a for a in args]]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and sentence in err and len(err.splitlines()) == 1
