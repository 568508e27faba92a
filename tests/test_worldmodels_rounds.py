"""World Models' iterative training procedure (iterations=N): random runs mixed into the controller's actions
at the configured rate, the rounds through the CLI (collect -> V -> encode -> M -> C, then collect with the
controller -> encode -> M -> C), a run killed mid-round resumed to the same end, the first round the single
pass, and bad settings refused in one sentence."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from reverie.agents.worldmodels import STAGES
from reverie.cli import main
from reverie.envs.random_actions import RandomRuns, longest_runs
from reverie.replay import Replay
from reverie.specs import ActionSpec
from reverie.training.checkpoint import load_latest, save_checkpoint

PREFILL, ROUND_STEPS, ENVS = 40, 100, 2
# one replay chunk per stream holds the whole random collection, so the second round's data is in the chunks after
ARGS = ["train", "worldmodels", "--preset", "tiny", "evolve_in=dream", "iterations=2", f"round_steps={ROUND_STEPS}",
        "explore=0.4", "collect_hold=(1,1)", f"run.replay_chunk={PREFILL}"]


# -- random runs in the controller's actions ---------------------------------------------------------------
@pytest.mark.parametrize("rate", [0.0, 0.3, 1.0])
def test_random_runs_replace_each_action_at_the_configured_rate(rate):
    runs = RandomRuns(ActionSpec(False, 2), 4, (1, 1), rate, np.random.default_rng(0))
    agent = np.full((4, 2), 0.25, np.float32)        # a constant controller; random draws never equal it
    out = np.stack([runs(agent) for _ in range(5000)])
    replaced = (out != 0.25).any(-1)
    assert replaced.mean() == pytest.approx(rate, abs=4 * np.sqrt(rate * (1 - rate) / replaced.size) + 1e-12)
    assert np.abs(out).max() <= 1.0


def test_held_random_runs_last_their_hold_and_cover_the_fraction_their_starts_and_holds_give():
    rate, hold = 0.2, 3
    runs = RandomRuns(ActionSpec(False, 1), 3, (hold, hold), rate, np.random.default_rng(1))
    out = np.stack([runs(np.full((3, 1), 0.25, np.float32)) for _ in range(6000)])[..., 0]   # [T, 3 envs]
    for env in range(3):
        lengths = longest_runs(out[:, env])
        starts = np.r_[0, np.cumsum(lengths)[:-1]]
        random = out[starts, env] != 0.25
        assert set(lengths[random][:-1].tolist()) == {hold}      # each random draw held for exactly 3 steps
    # a run of 3 random steps follows each start, then the controller until the next: rate H / (1 - rate + rate H)
    assert (out != 0.25).mean() == pytest.approx(rate * hold / (1 - rate + rate * hold), abs=0.02)
    with pytest.raises(ValueError, match="probability"):
        RandomRuns(ActionSpec(True, 3), 1, (1, 1), 1.5, np.random.default_rng(0))


# -- the rounds through the CLI --------------------------------------------------------------------------------
def labels(out):
    return [line.split("] ", 1)[1].split(":")[0] for line in out.splitlines() if "] round " in line]


def rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def progress(run_dir):
    tensors, _, _ = load_latest(run_dir / "checkpoints")
    return tensors["progress"]


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """An iterations=2 run, not interrupted: (run folder, the stages it printed)."""
    run_dir = tmp_path_factory.mktemp("rounds") / "straight"
    out = subprocess.run([sys.executable, "-m", "reverie", *ARGS, "--run-dir", str(run_dir)], capture_output=True,
                         text=True, env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return run_dir, labels(out.stdout)


def test_two_rounds_run_collect_v_encode_m_c_then_collect_encode_m_c_and_log_each_round(straight):
    run_dir, stages = straight
    dream = "stage 5/5 (controller in the dream environment)"
    first = ["round 1/2, stage 2/5 (vae)"] * 2 + ["round 1/2, stage 3/5 (encode)"] + \
        ["round 1/2, stage 4/5 (mdn)"] * 2 + [f"round 1/2, {dream}"] * 2
    second = ["round 2/2, stage 1/5 (collect)", "round 2/2, stage 3/5 (encode)"] + \
        ["round 2/2, stage 4/5 (mdn)"] * 2 + [f"round 2/2, {dream}"] * 2    # V stays: round_vae_updates=0
    assert stages == first + second
    logged = rows(run_dir)
    summaries = [r for r in logged if "round/index" in r]
    assert [r["round/index"] for r in summaries] == [1.0, 2.0]
    # the data grows by the round's collection: round_steps agent steps of every environment
    assert [r["round/replay_steps"] for r in summaries] == [PREFILL * ENVS, (PREFILL + ROUND_STEPS) * ENVS]
    assert all(np.isfinite(r["round/mdn_loss"]) and np.isfinite(r["round/dream_return"]) for r in summaries)
    evaluated = {r["step"] for r in logged if "eval/return" in r}
    assert {r["step"] for r in summaries} <= evaluated          # the real score of each round's controller
    encoded = [r["encode/frames"] for r in logged if "encode/frames" in r]
    assert encoded == [PREFILL * ENVS, (PREFILL + ROUND_STEPS) * ENVS]    # M learns from all data so far
    assert progress(run_dir)["stage"] == STAGES.index("done") and progress(run_dir)["round"] == 1


def test_the_first_of_two_rounds_is_the_single_pass(straight, tmp_path):
    run_dir, _ = straight
    single = tmp_path / "single"
    assert main([*[a for a in ARGS if not a.startswith("iterations")], "--run-dir", str(single)]) == 0

    def strip(row):
        return {k: v for k, v in row.items() if not k.startswith(("time/", "round/"))}
    one = [strip(r) for r in rows(single)]
    assert one == [strip(r) for r in rows(run_dir)][:len(one)]      # to the first round's real evaluation
    assert len(Replay(single / "replay", capacity=10**6, seq_len=8)) == PREFILL * ENVS     # nothing collected after


def test_a_run_killed_mid_round_resumes_to_the_same_end_and_collects_with_the_controller(straight, tmp_path):
    run_dir = tmp_path / "killed"
    args = [*ARGS, "--run-dir", str(run_dir)]

    def killed_at(point):
        env = dict(os.environ, OMP_NUM_THREADS="1", REVERIE_FAILPOINTS=point)
        out = subprocess.run([sys.executable, "-m", "reverie", *args], capture_output=True, text=True, env=env,
                             timeout=300)
        assert out.returncode == -9, out.stderr[-2000:]
        return labels(out.stdout)

    # the 8th unit of the stages asks for the second round's data: killed there, the controller fixed to action 1
    assert killed_at("loop.stage=8")[-1] == "round 2/2, stage 1/5 (collect)"
    tensors, meta, _ = load_latest(run_dir / "checkpoints")
    assert tensors["progress"]["stage"] == STAGES.index("collect") and tensors["progress"]["round"] == 1
    params = torch.zeros_like(tensors["controller"]["params"])
    params[-2:] = torch.tensor([0.0, 1.0])         # zero weights, a bias for action 1: argmax is always 1
    tensors["controller"]["params"] = params
    save_checkpoint(run_dir / "checkpoints", meta["counters"]["last_checkpoint"], tensors, meta, keep=2)
    # and again mid-collection, after a chunk of each stream was written: the resumed run keeps those steps
    assert killed_at("loop.collect=50") == ["round 2/2, stage 1/5 (collect)"]
    assert main(args) == 0
    kept = [r["resume/steps_kept_after_checkpoint"] for r in rows(run_dir) if "resume/checkpoint_step" in r]
    assert kept == [0, PREFILL * ENVS]       # the second resume kept the round's first chunk of each stream

    assert progress(run_dir)["stage"] == progress(straight[0])["stage"] == STAGES.index("done")
    replay = Replay(run_dir / "replay", capacity=10**6, seq_len=8)
    assert len(replay) == len(Replay(straight[0] / "replay", capacity=10**6, seq_len=8)) \
        == (PREFILL + ROUND_STEPS) * ENVS
    chunks = list(replay.chunks())
    assert all(len(c["is_first"]) == PREFILL for c in chunks[:ENVS])       # the random collection
    taken = np.concatenate([c["action"][~c["is_first"].astype(bool)] for c in chunks[ENVS:]])  # [n, 2] one-hot
    assert len(taken) > 150
    # action 1 but where a random action (half of them 1 too) replaced it: at explore / 2 = 0.2
    other = taken.argmax(-1) != 1
    assert other.mean() == pytest.approx(0.2, abs=4 * np.sqrt(0.2 * 0.8 / len(taken)))


@pytest.mark.parametrize("setting, named", [("iterations=0", "'iterations' must be at least 1"),
                                            ("explore=-0.1", "'explore' must be between 0 and 1"),
                                            ("round_steps=0", "'round_steps' must be at least 1")])
def test_bad_round_settings_are_one_sentence(tmp_path, capsys, setting, named):
    assert main(["train", "worldmodels", "--preset", "tiny", "--run-dir", str(tmp_path / "run"), setting]) == 2
    err = capsys.readouterr().err
    assert named in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()
