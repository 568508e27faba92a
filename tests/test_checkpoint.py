"""Tests for reverie.training.checkpoint: round trips, exact optimiser resume, torn and foreign files."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from reverie.training.checkpoint import (
    CheckpointError,
    join_state,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
    split_state,
)


def _net(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))


def _train_steps(net, opt, n, seed):
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        x = torch.randn(16, 4, generator=g)
        loss = net(x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


def _assert_same(a, b):
    """Exact structural and bitwise equality of nested states (an OrderedDict loads as a dict)."""
    if not (isinstance(a, dict) and isinstance(b, dict)):
        assert type(a) is type(b), (type(a), type(b))
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert torch.equal(a, b)
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            _assert_same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _assert_same(x, y)
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b)
    else:
        assert a == b


def test_split_join_round_trip_of_mixed_state():
    state = {
        "model": {"w": torch.arange(6.0).reshape(2, 3), "b": torch.tensor([True, False])},
        "opt": {"state": {0: {"step": torch.tensor(3.0)}, 1: {}}, "param_groups": [{"betas": (0.9, 0.99), "lr": 1e-3, "foreach": None, "params": [0, 1]}]},
        "counters": {"env_steps": 12, "nan": float("nan"), "inf": float("-inf"), "name": "x"},
        "rng": np.arange(5, dtype=np.uint32),
        "__odd": 1,
    }
    tensors, structure = split_state(state)
    assert set(tensors) == {"model/w", "model/b", "opt/state/0/step", "rng"}
    json.dumps(structure, allow_nan=False)  # strictly JSON-able
    _assert_same(join_state(tensors, structure), state)


def test_save_load_round_trip(tmp_path):
    net = _net()
    state = {"world_model": net.state_dict(), "extra": {"h": torch.randn(3, dtype=torch.float64)}}
    meta = {"agent": "dreamer", "config": {"lr": 1e-3, "hidden": [8, 8]}, "env_steps": 1000}
    path = save_checkpoint(tmp_path / "ckpt", 1000, state, meta)
    assert path.name == "ckpt-000001000.json"
    assert (tmp_path / "ckpt" / "ckpt-000001000.safetensors").is_file()
    loaded, lmeta = load_checkpoint(path, expected_agent="dreamer")
    _assert_same(loaded, state)
    assert lmeta["step"] == 1000 and lmeta["env_steps"] == 1000 and lmeta["agent"] == "dreamer"
    assert lmeta["config"] == meta["config"] and lmeta["format_version"] == 1
    # The folder and the weights file resolve to the same checkpoint.
    _assert_same(load_checkpoint(tmp_path / "ckpt")[0], state)
    _assert_same(load_checkpoint(path.with_suffix(".safetensors"))[0], state)


def test_tied_and_view_tensors_are_saved(tmp_path):
    base = torch.arange(10.0)
    state = {"a": base, "tied": base, "view": base[2:5], "t": base.reshape(2, 5).t()}
    loaded, _ = load_checkpoint(save_checkpoint(tmp_path, 1, state, {}))
    for k in state:
        assert torch.equal(loaded[k], state[k])


def test_adam_resume_is_bit_identical(tmp_path):
    # Reference: train 5 steps, then 3 more without interruption.
    net = _net()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2, betas=(0.8, 0.95))
    _train_steps(net, opt, 5, seed=1)
    save_checkpoint(tmp_path, 5, {"net": net.state_dict(), "opt": opt.state_dict()}, {"agent": "test"})
    _train_steps(net, opt, 3, seed=2)
    reference = {k: v.clone() for k, v in net.state_dict().items()}

    # Resume into fresh objects (different init) from the checkpoint.
    net2 = _net(seed=123)
    opt2 = torch.optim.Adam(net2.parameters(), lr=0.5)
    state, meta = load_checkpoint(latest_checkpoint(tmp_path), expected_agent="test")
    net2.load_state_dict(state["net"])
    opt2.load_state_dict(state["opt"])
    assert opt2.param_groups[0]["betas"] == (0.8, 0.95) and opt2.param_groups[0]["lr"] == 1e-2
    _assert_same(opt2.state_dict(), state["opt"])
    _train_steps(net2, opt2, 3, seed=2)
    for k, v in net2.state_dict().items():
        assert torch.equal(v, reference[k]), k  # bitwise, not approximately


def test_truncated_weights_raise_clear_error(tmp_path):
    path = save_checkpoint(tmp_path, 7, {"w": torch.randn(100, 100)}, {"agent": "a"})
    weights = path.with_suffix(".safetensors")
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    # latest_checkpoint skips it (size differs from the record) ...
    assert latest_checkpoint(tmp_path) is None
    # ... and loading it explicitly says what is wrong and what to do.
    with pytest.raises(CheckpointError, match="corrupt or truncated .*delete it or resume from an earlier one"):
        load_checkpoint(path)


def test_corrupt_bytes_same_size_detected(tmp_path):
    path = save_checkpoint(tmp_path, 7, {"w": torch.zeros(64)}, {})
    weights = path.with_suffix(".safetensors")
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="SHA-256"):
        load_checkpoint(path)
    # A garbage safetensors header is reported the same way when not verifying.
    weights.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{garbage" + bytes(len(data) - 17))
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(path, verify=False)


def test_torn_write_is_ignored_and_cleaned(tmp_path):
    first = save_checkpoint(tmp_path, 10, {"w": torch.ones(3)}, {})
    # Simulate a kill after the weights of step 20 were renamed, before the JSON:
    (tmp_path / "ckpt-000000020.safetensors").write_bytes(first.with_suffix(".safetensors").read_bytes())
    # ... and a kill in the middle of writing a temp file.
    (tmp_path / ".ckpt-000000030.safetensors.tmp-999").write_bytes(b"partial")
    assert latest_checkpoint(tmp_path) == first
    assert list_checkpoints(tmp_path) == [first]
    # The next save removes the leftovers.
    newest = save_checkpoint(tmp_path, 40, {"w": torch.ones(3) * 4}, {})
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [
        "ckpt-000000010.json", "ckpt-000000010.safetensors",
        "ckpt-000000040.json", "ckpt-000000040.safetensors",
    ]
    assert latest_checkpoint(tmp_path) == newest


def test_foreign_files_and_agents(tmp_path):
    (tmp_path / "other.json").write_text(json.dumps({"model": "resnet", "epoch": 3}))
    with pytest.raises(CheckpointError, match="is not a reverie checkpoint .*keys epoch, model"):
        load_checkpoint(tmp_path / "other.json")
    (tmp_path / "model.pt").write_bytes(b"\x80\x04pickle")
    with pytest.raises(CheckpointError, match="never loads pickled"):
        load_checkpoint(tmp_path / "model.pt")
    path = save_checkpoint(tmp_path / "run", 3, {"w": torch.ones(1)}, {"agent": "planet"})
    with pytest.raises(CheckpointError, match="belongs to agent 'planet', but 'dreamer' was expected"):
        load_checkpoint(path, expected_agent="dreamer")
    with pytest.raises(CheckpointError, match="no complete checkpoint"):
        (tmp_path / "empty").mkdir()
        load_checkpoint(tmp_path / "empty")
    record = json.loads(path.read_text())
    record["format_version"] = 99
    path.write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match="newer than this reverie reads"):
        load_checkpoint(path)


def test_keep_prunes_oldest_and_same_step_replaces(tmp_path):
    for step in (1, 2, 3, 4, 5):
        save_checkpoint(tmp_path, step, {"w": torch.full((2,), float(step))}, {}, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["ckpt-000000004.json", "ckpt-000000005.json"]
    assert len(list(tmp_path.glob("*.safetensors"))) == 2
    save_checkpoint(tmp_path, 5, {"w": torch.full((2,), 50.0)}, {}, keep=2)
    state, meta = load_checkpoint(tmp_path)
    assert meta["step"] == 5 and torch.equal(state["w"], torch.full((2,), 50.0))
    save_checkpoint(tmp_path, 6, {"w": torch.zeros(1)}, {}, keep=None)
    assert len(list_checkpoints(tmp_path)) == 3


def test_pinned_checkpoints_survive_pruning(tmp_path):
    for step in (1, 2, 3, 4, 5, 6):
        save_checkpoint(tmp_path, step, {"w": torch.full((2,), float(step))}, {}, keep=2, pin=step in (2, 3))
    assert [p.name for p in list_checkpoints(tmp_path)] == [f"ckpt-00000000{s}.json" for s in (2, 3, 5, 6)]
    assert len(list(tmp_path.glob("*.safetensors"))) == 4
    state, meta = load_checkpoint(tmp_path / "ckpt-000000002.json")
    assert meta["step"] == 2 and torch.equal(state["w"], torch.full((2,), 2.0))


def test_bad_meta_and_state_rejected_before_writing(tmp_path):
    with pytest.raises(CheckpointError, match="not JSON-serialisable"):
        save_checkpoint(tmp_path, 1, {"w": torch.ones(1)}, {"fn": print})
    with pytest.raises(CheckpointError, match="'w/x' has type object"):
        save_checkpoint(tmp_path, 1, {"w": {"x": object()}}, {})
    assert list(tmp_path.iterdir()) == []


class _Crash(BaseException):
    """Stands in for a kill: not an Exception, so no handler in the code swallows it."""


@pytest.mark.parametrize("same_step", [False, True])
@pytest.mark.parametrize("crash_at", range(9))
def test_crash_at_any_file_operation_leaves_a_complete_checkpoint(tmp_path, monkeypatch, crash_at, same_step):
    """Interrupt a save before each os-level file operation: the old or the new checkpoint survives."""
    import os

    save_checkpoint(tmp_path, 2, {"w": torch.ones(50)}, {"agent": "a", "v": 1})
    if same_step:  # a second generation, so the replace also has to alternate back
        save_checkpoint(tmp_path, 2, {"w": torch.ones(50)}, {"agent": "a", "v": 1})
    calls = {"n": 0}

    def counting(fn):
        def wrapped(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] > crash_at:
                raise _Crash()
            return fn(*args, **kwargs)
        return wrapped

    for name in ("replace", "fsync", "unlink"):
        monkeypatch.setattr(os, name, counting(getattr(os, name)))
    try:
        save_checkpoint(tmp_path, 2 if same_step else 3, {"w": torch.ones(50) * 2}, {"agent": "a", "v": 2}, keep=1)
        finished = True
    except _Crash:
        finished = False
    monkeypatch.undo()
    state, meta = load_checkpoint(latest_checkpoint(tmp_path), expected_agent="a")
    assert torch.equal(state["w"], torch.ones(50) * meta["v"])
    assert meta["v"] == 2 or not finished
    if finished:  # nothing but the one kept checkpoint remains
        assert len(list(tmp_path.iterdir())) == 2


def test_kill_9_during_saves_leaves_a_loadable_checkpoint(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    script = (
        "import sys, torch\n"
        "from reverie.training.checkpoint import save_checkpoint\n"
        "step = 0\n"
        "while True:\n"
        "    step += 1\n"
        "    save_checkpoint(sys.argv[1], step, {'w': torch.full((300_000,), float(step))}, {'agent': 'k'}, keep=2)\n"
        "    print(step, flush=True)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "1"  # at least one save finished
        time.sleep(0.3)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    state, meta = load_checkpoint(latest_checkpoint(tmp_path), expected_agent="k")
    assert meta["step"] >= 1
    assert torch.equal(state["w"], torch.full((300_000,), float(meta["step"])))
