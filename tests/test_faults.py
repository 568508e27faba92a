"""Runs that survive faults: one writer per folder, damaged files named and skipped, resumed step counts."""

import json
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch

from reverie.cli import main
from reverie.replay import Replay
from reverie.training.checkpoint import CheckpointDamaged, load_latest, save_checkpoint
from reverie.training.lock import LOCK_NAME, RunLock, RunLockedError
from reverie.training.logger import read_metrics

TINY = ["--preset", "tiny"]


def train(run_dir, *extra):
    return main(["train", *TINY, "--run-dir", str(run_dir), *extra])


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished 300-step run with checkpoints at 200 and 300."""
    run_dir = tmp_path_factory.mktemp("faults") / "cp"
    assert train(run_dir, "--steps", "300", "run.eval_every=300", "run.checkpoint_every=100",
                 "run.replay_chunk=64") == 0
    return run_dir


def copy_of(run_dir, tmp_path, name="copy"):
    target = tmp_path / name
    shutil.copytree(run_dir, target)
    return target


HOLD = textwrap.dedent("""
    import sys, time
    from reverie.training.lock import RunLock
    RunLock(sys.argv[1]).acquire()
    print("held", flush=True)
    time.sleep(60)
""")


@pytest.fixture
def holder(tmp_path):
    """Start a process that holds the lock of a folder; yields (start(folder) -> Popen)."""
    procs = []

    def start(folder):
        proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "held"
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


# -- one writer per run folder ------------------------------------------------------------------


def test_a_second_writer_is_refused_naming_the_holder(run, tmp_path, holder, capsys):
    folder = copy_of(run, tmp_path)
    before = (folder / "metrics.jsonl").read_bytes()
    proc = holder(folder)
    assert train(folder, "--steps", "400") == 2
    err = capsys.readouterr().err
    assert f"is being trained by process {proc.pid}" in err and "Traceback" not in err
    assert (folder / "metrics.jsonl").read_bytes() == before          # nothing touched
    # a fresh folder being created by another process is refused the same way
    fresh = tmp_path / "fresh"
    holder(fresh)
    assert train(fresh, "--steps", "50") == 2
    assert {p.name for p in fresh.iterdir()} == {LOCK_NAME}


def test_readers_are_not_blocked_by_a_writer(run, holder, capsys):
    proc = holder(run)
    try:
        assert main(["eval", str(run), "--episodes", "1"]) == 0
        assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["episodes"] == 1
    finally:
        proc.kill()
        proc.wait()


def test_a_stale_lock_is_taken_over(run, tmp_path, capsys):
    folder = copy_of(run, tmp_path)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    (folder / LOCK_NAME).write_text(json.dumps({"pid": pid, "started": "2026-01-01T00:00:00+00:00",
                                                "command": "reverie train"}) + "\n")
    assert train(folder, "--steps", "300", "run.eval_every=300", "run.checkpoint_every=100",
                 "run.replay_chunk=64") == 0
    out = capsys.readouterr().out
    assert f"taking over the lock of process {pid}" in out
    assert (folder / LOCK_NAME).read_text() == ""      # released at the end


def test_one_process_cannot_take_its_own_folder_twice(tmp_path):
    with RunLock(tmp_path):
        with pytest.raises(RunLockedError, match="already being trained by this process"):
            RunLock(tmp_path).acquire()
    with RunLock(tmp_path):   # released: taken again
        pass


def test_the_lock_is_released_by_kill_9(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    with pytest.raises(RunLockedError, match=f"process {proc.pid}"):
        RunLock(tmp_path).acquire()
    proc.kill()
    proc.wait()
    lock = RunLock(tmp_path)
    stale = lock.acquire()
    assert stale["pid"] == proc.pid
    lock.release()


# -- damaged checkpoints ------------------------------------------------------------------------


def weights_of(checkpoints, step):
    """The weights file the checkpoint of ``step`` refers to (a re-saved step uses a second name)."""
    marker = checkpoints / f"ckpt-{step:09d}.json"
    return checkpoints / json.loads(marker.read_text())["weights"]["file"]


def flip_byte(path, where=-1):
    data = bytearray(path.read_bytes())
    data[where] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_flipped_byte_is_named_and_the_previous_checkpoint_loaded(tmp_path):
    for step in (10, 20):
        save_checkpoint(tmp_path, step, {"w": torch.full((8,), float(step))}, {"agent": "a"}, keep=None)
    flip_byte(tmp_path / "ckpt-000000020.safetensors")
    warnings = []
    state, meta, path = load_latest(tmp_path, "a", warn=warnings.append)
    assert meta["step"] == 10 and torch.equal(state["w"], torch.full((8,), 10.0))
    assert len(warnings) == 1 and "ckpt-000000020.safetensors is damaged" in warnings[0]
    assert "SHA-256" in warnings[0] and "loading the one before it" in warnings[0]
    # another model's weights in its place, and a torn JSON: both damage, both named
    save_checkpoint(tmp_path / "other", 20, {"v": torch.zeros(3)}, {"agent": "a"})
    shutil.copy(tmp_path / "other" / "ckpt-000000020.safetensors", tmp_path / "ckpt-000000020.safetensors")
    (tmp_path / "ckpt-000000010.json").write_text('{"format": "reverie-che')
    with pytest.raises(CheckpointDamaged, match="every checkpoint in .* is damaged .*bytes on disk.*unreadable JSON"):
        load_latest(tmp_path, "a")
    assert load_latest(tmp_path / "none", "a") is None


def test_eval_and_resume_fall_back_past_a_damaged_checkpoint(run, tmp_path, capsys):
    folder = copy_of(run, tmp_path)
    weights = weights_of(folder / "checkpoints", 300)
    flip_byte(weights, 1000)
    assert main(["eval", str(folder), "--episodes", "1"]) == 0
    err = capsys.readouterr().err
    assert f"{weights.name} is damaged" in err and "loading the one before it" in err
    assert train(folder, "--steps", "300", "run.eval_every=300", "run.checkpoint_every=100",
                 "run.replay_chunk=64") == 0
    out = capsys.readouterr().out
    assert "is damaged" in out and "from the checkpoint at step 200" in out
    # the replay kept all 300 steps, so the resumed run stands at 300 at once
    assert "resuming" in out and "at step 300" in out
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["env_steps"] == 300


# -- damaged replay chunks ----------------------------------------------------------------------


def test_a_replay_chunk_cut_in_half_is_skipped_and_logged(run, tmp_path, capsys):
    folder = copy_of(run, tmp_path)
    chunk = sorted((folder / "replay").glob("chunk-*.npz"))[1]
    data = chunk.read_bytes()
    chunk.write_bytes(data[: len(data) // 2])
    with pytest.warns(UserWarning, match=f"skipping unreadable replay chunk .*{chunk.name}"):
        assert train(folder, "--steps", "350", "run.eval_every=300", "run.checkpoint_every=100",
                     "run.replay_chunk=64") == 0
    assert "1 damaged replay file(s) skipped" in capsys.readouterr().out
    rows = [m for m in read_metrics(folder / "metrics.jsonl") if "resume/replay_files_skipped" in m]
    assert [m["resume/replay_files_skipped"] for m in rows] == [1]
    assert chunk.exists()   # left in place for the user to inspect


# -- resumed step counts ------------------------------------------------------------------------


def test_a_resume_counts_the_steps_the_replay_kept(run, tmp_path, capsys):
    """A kill after the replay wrote steps beyond the last checkpoint: those steps count."""
    folder = copy_of(run, tmp_path)
    finished = json.loads((folder / "summary.json").read_text())
    for path in (folder / "checkpoints").glob("ckpt-000000300.*"):
        path.unlink()                         # as if killed after step 300's replay, before its checkpoint
    replay = Replay(folder / "replay", capacity=10_000, seq_len=8, chunk_size=64)
    assert replay.clock == 300 and replay.count_from(200, "is_last") > 0
    kept_episodes = replay.count_from(200, "is_last")
    assert train(folder, "--steps", "400", "run.eval_every=300", "run.checkpoint_every=100",
                 "run.replay_chunk=64") == 0
    assert "at step 300 from the checkpoint at step 200" in capsys.readouterr().out
    rows = read_metrics(folder / "metrics.jsonl")
    note = [m for m in rows if "resume/steps_kept_after_checkpoint" in m]
    assert [(m["step"], m["resume/steps_kept_after_checkpoint"]) for m in note] == [(300, 100)]
    # the episodes that ended between 200 and 300 were kept in the log and counted once
    episodes = [m["step"] for m in rows if "train/episode_return" in m]
    assert episodes == sorted(episodes) and len(episodes) == len(set(episodes))
    assert sum(200 < s <= 300 for s in episodes) == kept_episodes
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["env_steps"] == 400
    assert summary["episodes"] == len(episodes) >= finished["episodes"]
    assert Replay(folder / "replay", capacity=10_000, seq_len=8, chunk_size=64).clock == 400


def test_replay_count_from_matches_a_hand_count(tmp_path):
    import numpy as np
    replay = Replay(tmp_path, capacity=1000, seq_len=2, chunk_size=4)
    flags = np.array([0, 0, 1, 0, 1, 1, 0, 0, 0, 1], bool)    # two streams, five adds
    for t in range(5):
        replay.add({"is_first": np.zeros(2, bool), "is_last": flags[2 * t: 2 * t + 2], "x": np.zeros((2, 1))})
    replay.flush()
    again = Replay(tmp_path, capacity=1000, seq_len=2, chunk_size=4)
    assert again.clock == 10
    assert [again.count_from(c, "is_last") for c in (0, 2, 4, 6, 10)] == [4, 4, 3, 1, 0]
    assert again.count_from(0, "missing") == 0


def test_the_owner_of_a_replay_folder_removes_a_killed_writes_temporary_file(tmp_path):
    import numpy as np
    import warnings as w
    replay = Replay(tmp_path, capacity=100, seq_len=2, chunk_size=4)
    for _ in range(5):
        replay.add({"is_first": np.zeros(1, bool), "x": np.zeros((1, 2))})
    replay.flush()
    leftover = tmp_path / ".chunk-000000000004-0000.npz.999.tmp"
    leftover.write_bytes(b"half a chunk")
    with pytest.warns(UserWarning, match="left in place"):
        assert len(Replay(tmp_path, capacity=100, seq_len=2, chunk_size=4)) == 5
    assert leftover.exists()
    with w.catch_warnings():
        w.simplefilter("error")
        assert len(Replay(tmp_path, capacity=100, seq_len=2, chunk_size=4, owner=True)) == 5
    assert not leftover.exists()


def test_a_full_disk_stops_the_run_in_one_sentence_and_keeps_what_was_saved(run, tmp_path, capsys, monkeypatch):
    import errno
    import numpy as np
    from reverie.replay import chunkfile
    folder = copy_of(run, tmp_path)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(chunkfile.np, "savez", full)
    assert train(folder, "--steps", "600", "run.eval_every=300", "run.checkpoint_every=100",
                 "run.replay_chunk=64") == 1
    err = capsys.readouterr().err
    assert "error: the disk is full (No space left on device)" in err and "Traceback" not in err
    assert not list((folder / "replay").glob(".*.tmp"))            # the failed write left no debris
    assert (folder / LOCK_NAME).read_text() == ""                  # the lock was released
    monkeypatch.setattr(chunkfile.np, "savez", np.savez)
    assert main(["eval", str(folder), "--episodes", "1"]) == 0      # what was saved before still loads


def test_a_reader_racing_the_writer_does_not_report_damage(tmp_path, monkeypatch):
    """A checkpoint replaced or pruned while a reader loads it is read again or skipped, never called damaged."""
    import reverie.training.checkpoint as ck
    save_checkpoint(tmp_path, 10, {"w": torch.full((4,), 10.0)}, {"agent": "a"}, keep=None)
    save_checkpoint(tmp_path, 20, {"w": torch.full((4,), 20.0)}, {"agent": "a"}, keep=None)
    real = ck.load_checkpoint
    calls = []

    def racing(path, *args, **kwargs):
        calls.append(path.name)
        if len(calls) == 1:   # the writer saves step 20 again and prunes the old weights mid-read
            save_checkpoint(tmp_path, 20, {"w": torch.full((4,), 21.0)}, {"agent": "a"}, keep=None)
            raise ck._corrupt(path, "weights file ckpt-000000020.safetensors is missing")
        if len(calls) == 2:   # ... then prunes step 20 altogether
            (tmp_path / "ckpt-000000020.json").unlink()
            raise ck._corrupt(path, "weights file is missing")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(ck, "load_checkpoint", racing)
    warnings = []
    state, meta, _ = load_latest(tmp_path, "a", warn=warnings.append)
    assert meta["step"] == 10 and warnings == [] and calls == ["ckpt-000000020.json"] * 2 + ["ckpt-000000010.json"]


def test_a_run_saved_before_a_setting_existed_resumes_at_its_default(tmp_path):
    import yaml

    from reverie import api
    from reverie.training.run_dir import RunFolder, RunFolderError

    cfg = api.make_config("dreamer", "tiny", [])
    folder, resuming = RunFolder.prepare(tmp_path / "r", "dreamer", cfg)
    folder.release()
    assert not resuming
    saved = yaml.safe_load(folder.config.read_text())
    assert saved["model"]["rssm"].pop("r2i") is False     # as an older version wrote it: no such key
    folder.config.write_text(yaml.safe_dump(saved))
    folder, resuming = RunFolder.prepare(tmp_path / "r", "dreamer", cfg)
    folder.release()
    assert resuming
    folder.config.write_text(yaml.safe_dump(saved))
    with pytest.raises(RunFolderError, match=r"model.rssm.r2i: None -> True"):
        RunFolder.prepare(tmp_path / "r", "dreamer", api.make_config("dreamer", "tiny", ["model.rssm.r2i=true"]))
