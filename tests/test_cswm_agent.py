"""C-SWM through the one driver: the transitions it reads from the replay, a run killed between epochs that
resumes to the very losses of an uninterrupted one, the same epochs on the run's data exported as a dataset,
the ranking evaluation on the trained run, and bad input answered in one sentence."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from reverie.agents.cswm import CSWM, CSWMConfig, transitions_of
from reverie.cli import main

REPO = Path(__file__).resolve().parents[1]
TINY = ["--preset", "tiny", "epochs=3"]


def losses(run_dir: Path) -> list[float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["cswm/loss"] for r in rows if "cswm/loss" in r]


def eval_script():
    spec = importlib.util.spec_from_file_location("cswm_eval", REPO / "benchmarks" / "cswm_eval.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_transitions_pair_each_step_with_the_next_inside_episodes_and_across_chunk_links():
    # two chunks of one stream (the second starts with the first's last step, as chunks(overlap=True) gives
    # them); an episode starts at step 3: the pair (2, 3) is no transition
    steps = np.arange(6)
    is_first = np.array([1, 0, 0, 1, 0, 0], bool)
    action = np.eye(6, dtype=np.float32)[steps]
    chunk = lambda rows: {"image": steps[rows, None] * 10, "is_first": is_first[rows], "action": action[rows]}
    data = transitions_of([chunk([0, 1, 2]), chunk([2, 3, 4, 5])], ["image"])
    frames = data.frames["image"][:, 0]
    pairs = [(int(frames[b]), int(frames[a])) for b, a in zip(data.before, data.after)]
    assert pairs == [(0, 10), (10, 20), (30, 40), (40, 50)]
    # the action of a transition is the one that led into its second step
    assert data.action.argmax(-1).tolist() == [1, 2, 4, 5]


def test_a_run_killed_after_an_epoch_resumes_to_the_losses_of_an_uninterrupted_run(tmp_path):
    whole, killed_dir = tmp_path / "whole", tmp_path / "killed"
    assert main(["train", "cswm", *TINY, "--run-dir", str(whole)]) == 0
    args = ["train", "cswm", *TINY, "--run-dir", str(killed_dir)]
    env = dict(os.environ, OMP_NUM_THREADS="1", REVERIE_FAILPOINTS="loop.stage=2")   # after epoch 2's checkpoint
    killed = subprocess.run([sys.executable, "-m", "reverie", *args], capture_output=True, text=True, env=env,
                            timeout=300)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert losses(killed_dir)[:2] == losses(whole)[:2]
    assert main(args) == 0                                      # the same command resumes at epoch 3
    assert losses(killed_dir) == losses(whole) and len(losses(whole)) == 3
    rows = [json.loads(line) for line in (killed_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["cswm/epoch"] for r in rows if "cswm/epoch" in r] == [1.0, 2.0, 3.0]
    summary = json.loads((whole / "summary.json").read_text())
    assert summary["agent"] == "cswm" and summary["mode"] == "staged" and summary["updates"] == 3
    assert any((whole / "tb").iterdir())                         # TensorBoard events


def test_the_same_epochs_run_offline_on_the_runs_data_exported_as_a_dataset(tmp_path, capsys):
    pytest.importorskip("minari")
    online = tmp_path / "online"
    assert main(["train", "cswm", *TINY, "--run-dir", str(online)]) == 0
    assert main(["export", str(online), "--minari", "shapes-random-v0", "--out", str(tmp_path / "datasets")]) == 0
    offline = tmp_path / "offline"
    dataset = str(tmp_path / "datasets" / "shapes-random-v0")
    assert main(["train", "cswm", *TINY, "--dataset", dataset, "--run-dir", str(offline)]) == 0
    assert losses(offline) == losses(online)
    assert json.loads((offline / "summary.json").read_text())["mode"] == "offline"
    capsys.readouterr()
    assert main(["train", "cswm", *TINY, "--dataset", dataset, "--run-dir", str(offline)]) == 0   # resumes: done
    assert losses(offline) == losses(online)


def test_the_ranking_evaluation_prints_the_table_beside_the_papers_row(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "cswm", *TINY, "--run-dir", str(run)]) == 0
    capsys.readouterr()
    out = tmp_path / "ranking.json"
    assert eval_script().main([str(run), "--episodes", "40", "--chunk", "7", "--json", str(out)]) == 0
    table = capsys.readouterr().out
    assert "1 | " in table and "| 99.9 | 100.0" in table      # the paper's 10-step row beside ours
    result = json.loads(out.read_text())
    assert result["episodes"] == 40 and sorted(result["steps"]) == ["1", "10", "5"]
    for row in result["steps"].values():
        assert 0 <= row["hits_at_1"] <= 1 and 1 / 40 <= row["mrr"] <= 1
        assert row["hits_at_1"] <= row["mrr"]


@pytest.mark.parametrize("args, sentence", [
    (["--env", "gym:CartPole-v1"], "C-SWM finds objects in images, but the observations are ['vector']"),
    (["run.image_size=64"], "image sides must be multiples of 10; got 64 x 64 (set run.image_size)"),
    (["model.slots=3"], "set model.slots to a divisor of 20 or model.action=copy"),
    (["--env", "reverie:Shapes-v0"], "reverie's own environments are gymnasium ids: write 'gym:reverie/Shapes-v0'"),
])
def test_bad_input_is_one_sentence_before_the_run_folder_is_touched(tmp_path, capsys, args, sentence):
    run = tmp_path / "run"
    assert main(["train", "cswm", *TINY, "--run-dir", str(run), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and sentence in err and len(err.splitlines()) == 1
    assert not run.exists()


def test_the_agent_declares_a_staged_schedule_that_a_dataset_can_drive_and_only_a_transition():
    from reverie.models.base import TRANSITION, capabilities_of
    from reverie.specs import ActionSpec, ArraySpec

    agent = CSWM({"image": ArraySpec((50, 50, 3), np.dtype(np.uint8))}, ActionSpec(True, 20), CSWMConfig())
    assert agent.schedule.offline and not agent.data_parallel
    assert agent.model is not None and capabilities_of(agent.model) == {TRANSITION}


def test_offline_training_drives_staged_agents_only_when_their_stages_read_the_replay_alone():
    from types import SimpleNamespace

    from reverie.agents.base import Staged
    from reverie.replay.minari_io import DatasetError
    from reverie.training.offline import check_offline_agent

    check_offline_agent(SimpleNamespace(schedule=Staged(offline=True), extras_spec={}), "cswm")
    with pytest.raises(DatasetError, match="agent 'worldmodels' trains in stages that act in its own environment"):
        check_offline_agent(SimpleNamespace(schedule=Staged(), extras_spec={}), "worldmodels")


@pytest.mark.parametrize("keep, kept", [("best", 2.0), ("last", 3.0)])
def test_a_finished_run_keeps_its_epoch_of_lowest_loss_and_a_resume_remembers_it(keep, kept, tmp_path):
    import torch

    from reverie.agents.base import StageWork
    from reverie.models.cswm import CSWMModelConfig
    from reverie.specs import ActionSpec, ArraySpec
    from reverie.training.checkpoint import load_latest, save_checkpoint

    def agent():
        cfg = CSWMConfig(model=CSWMModelConfig(hidden=8, channels=2), epochs=3, keep=keep)
        built = CSWM({"image": ArraySpec((50, 50, 3), np.dtype(np.uint8))}, ActionSpec(True, 20), cfg)
        chunk = {"image": np.zeros((3, 50, 50, 3), np.uint8), "is_first": np.array([1, 0, 0], bool),
                 "action": np.eye(20, dtype=np.float32)[:3]}
        built._data = transitions_of([chunk], ["image"])
        return built

    def scripted(self, data, rows, generator):
        # epoch e sets every weight to e and reports the loss of a script in which epoch 2 is the lowest
        epoch = self.epoch + 1
        with torch.no_grad():
            for p in self.cswm.parameters():
                p.fill_(float(epoch))
        return {"cswm/loss": {1: 3.0, 2: 1.0, 3: 2.0}[epoch]}

    work = StageWork(replay=None, directory=tmp_path, make_env=None, num_envs=1, parallel=False, seed=0,
                     agent_steps=0)
    first = agent()
    first.update_on = scripted.__get__(first)
    for _ in range(2):
        first.advance(work)
    save_checkpoint(tmp_path / "ckpt", 2, first.tensors(), {"agent": "cswm"})
    resumed = agent()                                     # a fresh process resumes from the checkpoint
    tensors, _, _ = load_latest(tmp_path / "ckpt", expected_agent="cswm", device=torch.device("cpu"))
    resumed.load_tensors(tensors)
    resumed.update_on = scripted.__get__(resumed)
    report = resumed.advance(work)
    assert report.done and report.metrics["cswm/best_epoch"] == 2.0
    assert all(bool((p == kept).all()) for p in resumed.cswm.parameters())
    fresh = agent()                                       # before any epoch: no best weights to save or load
    fresh.load_tensors(fresh.tensors())
    assert fresh.best_epoch == 0 and not fresh.best_weights
