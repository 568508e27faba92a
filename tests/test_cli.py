"""Every command run end to end on a tiny budget, and every user mistake answered in one sentence."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from reverie.cli import main
from reverie.training.logger import read_metrics

TINY = ["--preset", "tiny"]


def train(run_dir, *extra):
    return main(["train", *TINY, "--run-dir", str(run_dir), *extra])


@pytest.fixture(scope="module")
def cartpole_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "cp"
    assert train(run_dir, "--steps", "200", "run.eval_every=100", "run.checkpoint_every=100") == 0
    return run_dir


def test_keep_checkpoints_keeps_evenly_spaced_ones_beside_the_newest(tmp_path):
    from reverie.training.checkpoint import list_checkpoints

    run_dir = tmp_path / "kept"
    assert train(run_dir, "--steps", "120", "run.keep_checkpoints=3", "run.checkpoint_every=30") == 0
    steps = [int(p.stem.split("-")[1]) for p in list_checkpoints(run_dir / "checkpoints")]
    # saved at 30, 40 (pinned), 70, 80 (pinned), 110, 120 (pinned): the pinned ones and the newest two stay
    assert steps == [40, 80, 110, 120]


def test_train_writes_a_complete_run_folder(cartpole_run, capsys):
    files = {p.name for p in cartpole_run.iterdir()}
    assert {"run.json", "config.yaml", "metrics.jsonl", "tb", "checkpoints", "replay", "learning_curve.png",
            "dream.png", "summary.json"} <= files
    metrics = read_metrics(cartpole_run / "metrics.jsonl")
    assert all("step" in m for m in metrics)
    evals = [m for m in metrics if "eval/return" in m]
    assert [m["step"] for m in evals] == [100, 200]
    assert all("eval/return_std" in m for m in evals)
    assert any("train/loss/rec" in m for m in metrics)
    summary = json.loads((cartpole_run / "summary.json").read_text())
    assert summary["env_steps"] == 200 and summary["updates"] > 0


def test_resume_continues_from_the_checkpoint(cartpole_run):
    before = json.loads((cartpole_run / "summary.json").read_text())
    assert train(cartpole_run, "--steps", "300", "run.eval_every=100", "run.checkpoint_every=100") == 0
    after = json.loads((cartpole_run / "summary.json").read_text())
    assert after["env_steps"] == 300 and after["updates"] > before["updates"]
    steps = [m["step"] for m in read_metrics(cartpole_run / "metrics.jsonl") if "eval/return" in m]
    assert steps == [100, 200, 300]


def test_eval_prints_one_json_line(cartpole_run, capsys):
    assert main(["eval", str(cartpole_run), "--episodes", "3"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["episodes"] == 3 and {"return_mean", "return_std"} <= set(out)
    assert out["return_mean"] >= 1


def test_dream_writes_the_requested_file(cartpole_run, tmp_path, capsys):
    out = tmp_path / "d.png"
    assert main(["dream", str(cartpole_run), "--out", str(out), "--context", "3", "--horizon", "10"]) == 0
    assert out.stat().st_size > 1000
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["open_loop_mse"]["vector"] >= 0


def test_config_lists_resolved_settings(capsys):
    assert main(["config", "--preset", "tiny", "run.seed=7"]) == 0
    out = capsys.readouterr().out
    assert "seed: 7" in out and "deter: 32" in out


@pytest.mark.parametrize("args, message", [
    (["--env", "gym:CartPol-v1"], "CartPole-v1"),
    (["--env", "nosuch:Task"], "unknown environment suite"),
    (["run.batch_szie=3"], "run.batch_size"),
    (["model.rssm.latent=gaussan"], "categorical"),
    (["--preset", "huge"], "unknown preset"),
])
def test_bad_input_is_one_clear_sentence(tmp_path, capsys, args, message):
    run_dir = tmp_path / "never"
    code = main(["train", "--preset", "tiny", "--run-dir", str(run_dir), *args])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
    assert not run_dir.exists()


def test_folder_of_another_agent_or_settings_is_refused(cartpole_run, tmp_path, capsys):
    other = tmp_path / "other"
    other.mkdir()
    (other / "run.json").write_text(json.dumps({"agent": "muzero"}))
    assert train(other, "--steps", "50") == 2
    assert "holds a 'muzero' run" in capsys.readouterr().err
    listing = sorted(p.name for p in cartpole_run.rglob("*"))
    assert train(cartpole_run, "--steps", "400", "model.rssm.deter=48") == 2
    assert "other settings" in capsys.readouterr().err
    assert sorted(p.name for p in cartpole_run.rglob("*")) == listing
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "notes.txt").write_text("mine")
    assert train(junk, "--steps", "50") == 2
    assert (junk / "notes.txt").read_text() == "mine"


def test_truncated_checkpoint_is_reported(cartpole_run, tmp_path, capsys):
    import shutil
    copy = tmp_path / "copy"
    shutil.copytree(cartpole_run, copy)
    for weights in (copy / "checkpoints").glob("*.safetensors"):
        data = weights.read_bytes()
        weights.write_bytes(data[: len(data) // 2])
    code = main(["eval", str(copy), "--episodes", "1"])
    err = capsys.readouterr().err
    assert code == 2 and "error:" in err and "Traceback" not in err


def test_eval_of_missing_folder(tmp_path, capsys):
    assert main(["eval", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_kill_9_then_rerun_resumes_and_finishes(tmp_path):
    run_dir = tmp_path / "killed"
    cmd = [sys.executable, "-m", "reverie", "train", *TINY, "--run-dir", str(run_dir), "--steps", "3000",
           "run.checkpoint_every=100", "run.train_ratio=16"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not list((run_dir / "checkpoints").glob("ckpt-*.json"))[1:]:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert list((run_dir / "checkpoints").glob("ckpt-*.json")), "no checkpoint was written before the kill"
    done = subprocess.run(cmd[:-2] + ["--steps", "600", "run.checkpoint_every=100", "run.train_ratio=16"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "resuming" in done.stdout + done.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["env_steps"] >= 600


def test_pixels_end_to_end_writes_a_dream_video(tmp_path, capsys):
    run_dir = tmp_path / "pix"
    code = main(["train", *TINY, "--env", "dmc:cartpole-swingup", "--obs", "pixels", "--steps", "120",
                 "--run-dir", str(run_dir), "run.time_limit=30", "run.prefill=20"])
    assert code == 0, capsys.readouterr().err
    gif = run_dir / "dream.gif"
    import imageio.v3 as iio
    frames = iio.imread(gif, index=None)
    assert frames.shape[0] >= 10 and frames.shape[-1] in (3, 4)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["env_steps"] >= 120 and "image" in summary["dream/open_loop_mse"]


def test_several_environments_in_subprocesses(tmp_path, capsys):
    run_dir = tmp_path / "par"
    code = train(run_dir, "--steps", "160", "run.num_envs=2", "run.parallel_envs=true")
    assert code == 0, capsys.readouterr().err
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["env_steps"] == 160 and summary["updates"] > 0
    # Both streams were stored: the replay holds every collected step.
    from reverie.replay import Replay
    replay = Replay(run_dir / "replay", capacity=10_000, seq_len=8, chunk_size=32)
    assert len(replay) == 160


def test_sigterm_saves_a_checkpoint_and_exits(tmp_path):
    run_dir = tmp_path / "term"
    cmd = [sys.executable, "-m", "reverie", "train", *TINY, "--run-dir", str(run_dir), "--steps", "100000"]
    proc = subprocess.Popen(cmd, env=dict(os.environ, OMP_NUM_THREADS="1"), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((run_dir / "replay").glob("*.npz"))) < 2:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    assert "re-run the same command to resume" in out
    assert list((run_dir / "checkpoints").glob("ckpt-*.json"))


def test_overrides_may_follow_flags_after_an_agent(capsys):
    assert main(["config", "dreamer", "--preset", "tiny", "run.seed=5", "model.units=16"]) == 0
    out = capsys.readouterr().out
    assert "seed: 5" in out and "units: 16" in out
    with pytest.raises(SystemExit):
        main(["config", "dreamer", "--preset", "tiny", "--bogus"])


def test_nan_from_the_environment_is_a_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    code = train(tmp_path / "nan", "--env", "gym:nan_env:NanAfterFive-v0", "--steps", "100")
    err = capsys.readouterr().err
    assert code == 2 and "returned NaN in 'vector' at environment step 5" in err and "Traceback" not in err


def test_dream_refuses_an_extension_that_does_not_fit(cartpole_run, tmp_path, capsys):
    assert main(["dream", str(cartpole_run), "--out", str(tmp_path / "d.gif")]) == 2
    assert "vector observations" in capsys.readouterr().err
    assert not (tmp_path / "d.gif").exists()


def test_a_dreamer_model_is_searched_by_mcts_through_its_actor_critic(cartpole_run, capsys):
    # the actor's logits are the tree's prior and the critic its leaf value (discrete actions)
    assert main(["eval", str(cartpole_run), "--episodes", "1", "--planner", "mcts",
                 "--planner-arg", "num_simulations=8"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["planner"] == "mcts" and out["return_mean"] >= 8     # CartPole lasts at least 8 steps


def test_a_goal_for_a_model_without_a_latent_goal_cost_is_one_sentence(cartpole_run, capsys):
    capsys.readouterr()
    assert main(["eval", str(cartpole_run), "--episodes", "1", "--planner", "cem", "--goal", "walk:2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("error: agent 'dreamer' has a world model with no latent goal cost, so it cannot plan toward a "
                   "goal; --goal needs a model that has one (cswm)")


def test_an_agent_with_an_unknown_schedule_is_refused(tmp_path, monkeypatch):
    from reverie.agents.registry import resolve_config
    from reverie.training import session

    original = session.build_agent

    def build(name, cfg, make):
        agent = original(name, cfg, make)
        agent.schedule = object()      # neither ReplayRatio nor Refit
        return agent

    monkeypatch.setattr(session, "build_agent", build)
    cfg = resolve_config("dreamer", "tiny", ["run.steps=40", "run.prefill=8", "run.seq_len=8"])
    with pytest.raises(TypeError, match="unknown schedule"):
        session.train("dreamer", cfg, tmp_path / "run", say=lambda _: None)
