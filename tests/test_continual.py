"""Continual learning: physics variants, task sequences, reservoir replay, the weight anchor, change detection."""

import itertools
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from reverie.analysis.change import PageHinkley, one_step_error
from reverie.cli import main
from reverie.envs import EnvError, make_env
from reverie.envs.sequence import parse_sequence
from reverie.envs.variants import cartpole_xml, split_variant
from reverie.nn.anchor import WeightAnchor
from reverie.replay import Replay
from reverie.training.logger import read_metrics

# ---------------------------------------------------------------------- variants


def test_split_variant_reads_literals():
    assert split_variant("Pendulum-v1?g=4.0&max_episode_steps=100&flag=true&name=x") == (
        "Pendulum-v1", {"g": 4.0, "max_episode_steps": 100, "flag": True, "name": "x"})
    assert split_variant("cartpole-swingup") == ("cartpole-swingup", {})
    with pytest.raises(EnvError, match="not key=value"):
        split_variant("Pendulum-v1?g")
    with pytest.raises(EnvError, match="twice"):
        split_variant("Pendulum-v1?g=1&g=2")


def test_gym_variant_reaches_the_environment():
    env = make_env("gym:Pendulum-v1?g=4.0")
    assert env._env.unwrapped.g == 4.0
    assert make_env("gym:Pendulum-v1")._env.unwrapped.g == 10.0


def test_dmc_cartpole_variant_edits_the_compiled_model():
    plain = make_env("dmc:cartpole-swingup")
    stock = plain._env.physics.named.model
    env = make_env("dmc:cartpole-swingup?pole_length=1.5&pole_mass=0.2&cart_mass=2")
    model = env._env.physics.named.model
    # a capsule's size[1] is its half length; its centre of mass sits half way up the pole
    assert stock.geom_size["pole_1"][1] == pytest.approx(0.5)
    assert model.geom_size["pole_1"][1] == pytest.approx(0.75)
    assert model.body_ipos["pole_1"][2] == pytest.approx(0.75)
    assert stock.body_mass["pole_1"] == pytest.approx(0.1) and model.body_mass["pole_1"] == pytest.approx(0.2)
    assert model.body_mass["cart"] == pytest.approx(2.0)
    env.reset()
    assert np.isfinite(env.step(np.array([0.5], np.float32))["vector"]).all()


def test_cartpole_xml_sets_attributes_on_the_named_geoms():
    xml = ('<mujoco><worldbody><body name="cart"><geom name="cart" mass="1"/>'
           '<body name="pole_1"><geom name="pole_1"/></body></body></worldbody></mujoco>')
    out = cartpole_xml(xml, pole_length=2.0)
    assert 'fromto="0 0 0 0 0 2.0"' in out and 'mass="1"' in out


@pytest.mark.parametrize("name, message", [
    ("gym:Pendulum-v1?G=3", "takes no variant key 'G'; the keys it takes are: render_mode, g, max_episode_steps"),
    ("dmc:cartpole-swingup?length=2", "the keys it takes are: pole_length, pole_mass, cart_mass"),
    ("dmc:walker-walk?pole_length=2", "physics variants exist for dmc:cartpole-balance"),
    ("dmc:cartpole-swingup?pole_length=-1", "must be a positive number"),
    ("gym:Pendulum-v1?g=10>gym:Pendulum-v1?g=4", "is a task sequence"),
])
def test_bad_variants_are_one_sentence(name, message):
    with pytest.raises(EnvError, match=message.replace("?", r"\?")):
        make_env(name)


# ---------------------------------------------------------------------- sequences


def test_sequence_schedule():
    seq = parse_sequence("gym:A>gym:B?x=1>gym:C", steps=300, switch_every=None)
    assert seq.tasks == ("gym:A", "gym:B?x=1", "gym:C") and seq.switches == (100, 200)
    assert [seq.index_at(s) for s in (0, 99, 100, 199, 200, 10_000)] == [0, 0, 1, 1, 2, 2]
    assert parse_sequence("gym:A>gym:B", steps=300, switch_every=50).switches == (50,)
    with pytest.raises(EnvError, match="at or past the end"):
        parse_sequence("gym:A>gym:B>gym:C", steps=100, switch_every=50)
    with pytest.raises(EnvError, match="empty task"):
        parse_sequence("gym:A>>gym:B", steps=100)


# ---------------------------------------------------------------------- reservoir


def _kept(replay):
    return frozenset(int(t) for chunk in replay.chunks() for t in chunk["tag"])


def _step(t):
    return {"is_first": np.array([t == 0]), "tag": np.array([t])}


def test_reservoir_keeps_every_subset_with_equal_chance():
    # chunk_size 1, capacity 3: complete chunks may use 3 - 1 = 2 steps, so 2 of the 6 chunks are kept
    counts = dict.fromkeys(itertools.combinations(range(6), 2), 0)
    for seed in range(3000):
        replay = Replay(None, capacity=3, seq_len=1, chunk_size=1, eviction="reservoir", seed=seed)
        for t in range(6):
            replay.add(_step(t))
        counts[tuple(sorted(_kept(replay)))] += 1
    observed = np.array(list(counts.values()))
    # 15 subsets, 200 expected each; a seeded test, so the p-value is fixed (uniform: well above 0.01)
    assert stats.chisquare(observed).pvalue > 0.01, observed
    assert observed.min() > 140


def test_reservoir_resumed_from_its_folder_keeps_what_an_uninterrupted_one_keeps(tmp_path):
    whole = Replay(None, capacity=6, seq_len=1, chunk_size=1, eviction="reservoir", seed=3)
    first = Replay(tmp_path, capacity=6, seq_len=1, chunk_size=1, eviction="reservoir", seed=3)
    for t in range(40):
        whole.add(_step(t))
        if t < 25:
            first.add(_step(t))
    first.flush()    # as every checkpoint does
    second = Replay(tmp_path, capacity=6, seq_len=1, chunk_size=1, eviction="reservoir", seed=3)   # a restart
    assert _kept(second) == _kept(first)
    for t in range(25, 40):
        second.add(_step(t))
    assert _kept(second) == _kept(whole) and len(_kept(whole)) == 5
    assert _kept(whole) != frozenset(range(35, 40))    # not the newest: this seed keeps older chunks too


# ---------------------------------------------------------------------- weight anchor


def _layer():
    torch.manual_seed(0)
    return nn.Linear(2, 1)


@pytest.mark.parametrize("kind", ["l2", "ewc"])
def test_anchor_penalty_is_zero_at_the_anchor_and_its_gradient_is_weight_times_fisher_times_offset(kind):
    layer = _layer()
    anchor = WeightAnchor(dict(layer.named_parameters()), kind, weight=0.2, decay=0.5)
    grads = {"weight": torch.tensor([[1.0, 3.0]]), "bias": torch.tensor([2.0])}
    for name, p in layer.named_parameters():
        p.grad = grads[name].clone()
    anchor.observe_gradients()         # g2 = 0.5 * grad^2: 0.5, 4.5 and 2.0; mean 7 / 3
    anchor.set_anchor()
    assert float(anchor.penalty().detach()) == 0.0
    with torch.no_grad():
        layer.weight += torch.tensor([[1.0, -2.0]])
        layer.bias += 0.5
    fisher = ({"weight": torch.ones(1, 2), "bias": torch.ones(1)} if kind == "l2" else
              {"weight": torch.tensor([[0.5, 4.5]]) * 3 / 7, "bias": torch.tensor([2.0]) * 3 / 7})
    offset = {"weight": torch.tensor([[1.0, -2.0]]), "bias": torch.tensor([0.5])}
    expected = 0.5 * 0.2 * sum(float((fisher[n] * offset[n] ** 2).sum()) for n in offset)
    layer.zero_grad()
    penalty = anchor.penalty()
    penalty.backward()
    assert float(penalty.detach()) == pytest.approx(expected)
    for name, p in layer.named_parameters():
        torch.testing.assert_close(p.grad, 0.2 * fisher[name] * offset[name])
    before = {n: p.detach().clone() for n, p in layer.named_parameters()}
    assert anchor.pull() == pytest.approx(expected)
    for name, p in layer.named_parameters():   # one step of size 1 on the penalty (factors below 1 here)
        torch.testing.assert_close(p.detach(), before[name] - 0.2 * fisher[name] * offset[name])


def test_anchor_never_pushes_past_the_anchor_and_round_trips():
    layer = _layer()
    anchor = WeightAnchor(dict(layer.named_parameters()), "l2", weight=1.0)
    assert anchor.pull() == 0.0                 # no anchor yet: nothing is pulled
    anchor.set_anchor()
    start = {n: p.detach().clone() for n, p in layer.named_parameters()}
    with torch.no_grad():
        layer.weight += 5.0
    anchor.pull()
    torch.testing.assert_close(layer.weight.detach(), start["weight"])   # capped at the anchor itself
    other = WeightAnchor(dict(_layer().named_parameters()), "l2", weight=1.0)
    other.load_state_dict(anchor.state_dict())
    assert other.anchor is not None and torch.equal(other.anchor["weight"], start["weight"])


# ---------------------------------------------------------------------- change detection


def test_page_hinkley_finds_a_shift_and_stays_quiet_without_one():
    rng = np.random.default_rng(0)
    quiet = PageHinkley()
    assert not any(quiet.update(x) for x in rng.normal(1.0, 0.1, 5000))
    for change in (300, 700):
        detector = PageHinkley()
        series = np.concatenate([rng.normal(1.0, 0.1, change), rng.normal(1.3, 0.1, 300)])
        fired = [t for t, x in enumerate(series) if detector.update(x)]
        assert fired and change <= fired[0] <= change + 20, fired
    falling = PageHinkley()     # a model that keeps learning: the error falls, the test stays quiet
    assert not any(falling.update(x) for x in np.linspace(2.0, 0.5, 2000) + rng.normal(0, 0.05, 2000))


class _Shift:
    """A model whose state is the observation and whose step adds the action: the one-step error is
    exactly ``mean((obs_t + action_{t+1} - obs_{t+1})^2)``."""

    def observe(self, obs, action, is_first, state=None):
        return obs["vector"], obs["vector"][:, -1]

    def step(self, state, action):
        return state + action

    def features(self, state):
        return state


def test_one_step_error_by_hand():
    obs = torch.tensor([[[0.0, 0.0], [1.0, 0.0], [1.0, 2.0], [5.0, 5.0]]])    # [1, 4, 2]
    action = torch.tensor([[[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]])
    is_first = torch.tensor([[True, False, False, True]])
    error = one_step_error(_Shift(), {"vector": obs}, action, is_first)   # type: ignore[arg-type]
    assert error.shape == (1, 3)
    assert error[0, 0] == 0.0 and error[0, 1] == pytest.approx(0.5) and torch.isnan(error[0, 2])


# ---------------------------------------------------------------------- a run through a sequence

SEQ = "gym:Pendulum-v1?g=10>gym:Pendulum-v1?g=4>gym:Pendulum-v1?g=16"
TINY = ["--preset", "tiny", "--env", SEQ, "--steps", "120", "--switch-every", "40", "run.time_limit=20",
        "run.eval_episodes=1", "run.replay_eviction=reservoir", "run.replay_capacity=200",
        "run.continual.regularizer=ewc", "run.continual.detect_change=true", "run.continual.detect_every=4"]


def _events(run_dir, key):
    return [(m["step"], m[key]) for m in read_metrics(run_dir / "metrics.jsonl") if key in m]


def test_a_sequence_switches_at_its_steps_and_writes_the_score_matrix(tmp_path):
    run_dir = tmp_path / "seq"
    assert main(["train", "--run-dir", str(run_dir), *TINY]) == 0
    # the switch happens on the first agent step at or past the switch step; the row is logged after it
    assert _events(run_dir, "event/task_switch") == [(41, 1), (81, 2)]
    scores = json.loads((run_dir / "continual.json").read_text())
    assert scores["tasks"] == SEQ.split(">") and scores["switch_steps"] == [40, 80]
    assert scores["R_after_task"] == [0, 1, 2] and scores["R_steps"] == [40, 80, 120]
    r = np.array(scores["R"])
    assert r.shape == (3, 3) and np.isfinite(r).all() and len(scores["initial"]) == 3
    assert any("train/change/error" in m for m in read_metrics(run_dir / "metrics.jsonl"))
    assert any("train/reg/penalty" in m for m in read_metrics(run_dir / "metrics.jsonl"))


def test_a_run_killed_mid_sequence_resumes_on_its_task(tmp_path, capfd):
    run_dir = tmp_path / "killed"
    cmd = [sys.executable, "-m", "reverie", "train", "--run-dir", str(run_dir), *TINY, "run.checkpoint_every=30"]
    env = dict(os.environ, OMP_NUM_THREADS="1", REVERIE_FAILPOINTS="loop.collect=70")
    killed = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode != 0 and "switching to task 1" in killed.stdout
    assert main(["train", "--run-dir", str(run_dir), *TINY, "run.checkpoint_every=30"]) == 0
    out = capfd.readouterr().out
    assert "resuming" in out and "switching to task 1" not in out and "switching to task 2" in out
    assert _events(run_dir, "event/task_switch") == [(41, 1), (81, 2)]
    scores = json.loads((run_dir / "continual.json").read_text())
    assert scores["R_after_task"] == [0, 1, 2]
