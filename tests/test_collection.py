"""Collection overlapped with training: the same run, to the bit, as stepping and updating in turn."""

import functools

import numpy as np
import pytest
import torch

from reverie.cli import main
from reverie.envs import EnvError, make_env
from reverie.envs.batch import BatchEnv
from reverie.training.checkpoint import load_latest
from reverie.training.logger import read_metrics


def test_step_async_then_wait_is_step_and_misuse_is_named():
    fns = [functools.partial(make_env, "gym:CartPole-v1", seed=s) for s in (0, 1)]
    with BatchEnv(fns) as a, BatchEnv(fns, parallel=True) as b:
        first_a, first_b = a.reset(), b.reset()
        assert all(np.array_equal(first_a[k], first_b[k]) for k in first_a)
        for t in range(30):
            actions = np.array([t % 2, (t // 2) % 2])
            b.step_async(actions)
            sa, sb = a.step(actions), b.step_wait()
            assert all(np.array_equal(sa[k], sb[k]) for k in sa)
        with pytest.raises(EnvError, match="without a step_async"):
            b.step_wait()
        b.step_async(np.zeros(2, np.int64))
        with pytest.raises(EnvError, match="called twice"):
            b.step_async(np.zeros(2, np.int64))


def test_a_run_with_overlapped_collection_equals_the_serial_run(tmp_path):
    """Environments in subprocesses stepping while the learner updates: same losses, same weights."""
    runs = {}
    for parallel in ("false", "true"):
        run_dir = tmp_path / parallel
        assert main(["train", "--preset", "tiny", "--run-dir", str(run_dir), "--steps", "150",
                     f"run.parallel_envs={parallel}", "run.num_envs=2", "run.eval_episodes=1", "run.threads=1"]) == 0
        state, meta, _ = load_latest(run_dir / "checkpoints")
        losses = [m for m in read_metrics(run_dir / "metrics.jsonl") if any(k.startswith("train/") for k in m)]
        runs[parallel] = (state, meta["counters"], losses)
    (s0, c0, l0), (s1, c1, l1) = runs["false"], runs["true"]
    assert c0["updates"] == c1["updates"] > 0 and c0["episodes"] == c1["episodes"]
    assert [{k: v for k, v in m.items() if "per_second" not in k} for m in l0] == \
        [{k: v for k, v in m.items() if "per_second" not in k} for m in l1]
    for name, tensor in _leaves(s0):
        assert torch.equal(tensor, dict(_leaves(s1))[name]), name


def _leaves(state, prefix=""):
    if isinstance(state, torch.Tensor):
        yield prefix, state
    elif isinstance(state, dict):
        for k, v in state.items():
            yield from _leaves(v, f"{prefix}/{k}")
    elif isinstance(state, (list, tuple)):
        for i, v in enumerate(state):
            yield from _leaves(v, f"{prefix}/{i}")
