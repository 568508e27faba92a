"""Data-parallel training (torch.distributed, gloo) and vectorised collection."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from reverie.agents.registry import resolve_config
from reverie.cli import main
from reverie.training import session

HERE = Path(__file__).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")]), **extra)
    return env


def test_two_gloo_ranks_end_an_update_with_equal_parameters_equal_to_one_process_on_the_global_batch(tmp_path):
    port = _free_port()
    procs = [subprocess.Popen([sys.executable, str(HERE / "ddp_worker.py"), str(r), "2", str(port), str(tmp_path)],
                              env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for r in range(2)]
    for p in procs:
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0, out.decode()[-3000:]
    ranks = [dict(np.load(tmp_path / f"rank{r}.npz", allow_pickle=False)) for r in range(2)]
    assert ranks[0].keys() == ranks[1].keys() and any(k.startswith("ac.") for k in ranks[0])
    assert any(k.startswith("muzero.model.") for k in ranks[0])
    for key in ranks[0]:   # every parameter and buffer of a toy, Dreamer (return-scale EMA included), MuZero
        np.testing.assert_array_equal(ranks[0][key], ranks[1][key], err_msg=key)

    # one process with the global batch of 8 (rank 0's initial weights: seed 0), gradients clipped to 0.05
    sys.path.insert(0, str(HERE))
    try:
        from ddp_worker import Toy, global_batch
    finally:
        sys.path.remove(str(HERE))
    torch.manual_seed(0)
    toy = Toy()
    before = toy.net.weight.detach().clone()
    metrics = toy.update(*global_batch())
    assert metrics["grad_norm"] > 0.05   # clipping was active: it must have seen the averaged gradient
    for name, value in toy.net.state_dict().items():
        np.testing.assert_allclose(ranks[0][f"toy.{name}"], value.numpy(), rtol=1e-6, atol=1e-7, err_msg=name)
    assert not torch.equal(before, toy.net.weight)


def _ranks_of(run_dir: Path) -> dict[int, int]:
    """{rank: pid} of the reverie worker processes training ``run_dir``."""
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
            env = dict(item.split(b"=", 1) for item in (proc / "environ").read_bytes().split(b"\0") if b"=" in item)
        except OSError:
            continue
        if str(run_dir).encode() in cmd and b"RANK" in env and b"torch.distributed.run" not in b" ".join(cmd):
            found[int(env[b"RANK"])] = int(proc.name)
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the ranks through /proc")
def test_nproc_2_writes_from_rank_0_only_and_a_run_with_a_killed_rank_resumes(tmp_path):
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "reverie", "train", "--preset", "tiny", "--nproc", "2", "--steps", "160",
               "--run-dir", str(run_dir), "run.train_ratio=8", "run.checkpoint_every=32", "run.eval_episodes=1",
               "run.threads=1"]
    first = subprocess.Popen(command, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while not list((run_dir / "checkpoints").glob("ckpt-*.json")) and first.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.1)
    ranks = _ranks_of(run_dir)
    assert first.poll() is None and set(ranks) == {0, 1}, "the run ended before a rank could be killed"
    os.kill(ranks[1], signal.SIGKILL)
    first.communicate(timeout=120)
    assert first.returncode != 0
    killed_at = max(int(p.stem.split("-")[1]) for p in (run_dir / "checkpoints").glob("ckpt-*.json"))
    assert killed_at < 160

    second = subprocess.run(command, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300,
                            check=False)
    out = second.stdout.decode()
    assert second.returncode == 0, out[-3000:]
    assert "resuming" in out and out.count("evaluation return") == 1   # rank 1 reports nothing
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["rank_seeds"] == [0, 1000] and summary["env_steps"] == 160
    # each rank collected into its own shard; only rank 0 wrote metrics and TensorBoard (one file per launch)
    assert list((run_dir / "replay").glob("*.npz")) and list((run_dir / "replay" / "rank-1").glob("*.npz"))
    assert len(list((run_dir / "tb").glob("events.out.tfevents.*"))) == 2
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    notes = [r for r in rows if "dist/world_size" in r]
    assert len(notes) == 2 and notes[0]["dist/seed_rank_1"] == 1000
    evals = [r["step"] for r in rows if "eval/return" in r]
    assert evals == sorted(set(evals)) and evals[-1] == 160


def test_agents_that_do_not_take_gradient_steps_refuse_nproc(tmp_path, capsys):
    assert main(["train", "pets", "--preset", "tiny", "--nproc", "2", "--run-dir", str(tmp_path / "p")]) == 2
    assert "cannot be split across processes" in capsys.readouterr().err
    assert not (tmp_path / "p").exists()


def test_vectorised_collection_keeps_the_replay_ratio_exact(tmp_path):
    """updates = (agent steps since prefill, the step that ends it included) * num_envs * train_ratio
    / (batch_size * seq_len), floored: the ratio counts every environment's steps."""
    cfg = resolve_config("dreamer", "tiny", ["run.steps=120", "run.num_envs=3", "run.train_ratio=11",
                                             "run.prefill=8", "run.eval_episodes=1", "run.threads=1"])
    result = session.train("dreamer", cfg, tmp_path / "run", say=lambda m: None)
    c, run = result.counters, cfg.run
    assert c.env_steps == 120 and c.agent_steps == 40
    assert c.updates == int((c.agent_steps - run.prefill + 1) * run.num_envs * run.train_ratio
                            / (run.batch_size * run.seq_len))


def test_a_gymnasium_vector_env_collects_with_the_same_conventions_and_replay_ratio(tmp_path):
    import gymnasium as gym

    from reverie.training.offline import replay_streams

    vec = gym.make_vec("CartPole-v1", num_envs=3, vectorization_mode="sync")
    cfg = resolve_config("dreamer", "tiny", ["run.steps=120", "run.num_envs=3", "run.train_ratio=11",
                                             "run.prefill=8", "run.eval_episodes=1", "run.threads=1"])
    result = session.train("dreamer", cfg, tmp_path / "run", say=lambda m: None, vector_env=vec)
    c, run = result.counters, cfg.run
    assert c.env_steps == 120 and c.agent_steps == 40 and c.episodes >= 3
    assert c.updates == int((c.agent_steps - run.prefill + 1) * run.num_envs * run.train_ratio
                            / (run.batch_size * run.seq_len))
    streams = replay_streams(tmp_path / "run" / "replay", warn=print)
    assert len(streams) == 3
    for rows in streams:   # after every episode's last step comes a reset with reward 0 and the zero action
        after = np.flatnonzero(rows["is_last"][:-1]) + 1
        assert len(after) and rows["is_first"][after].all() and not rows["reward"][after].any()
        assert not rows["action"][after].any() and rows["is_first"][0]
        assert rows["reward"][~rows["is_first"]].min() == 1.0   # CartPole pays 1 on every real step
    with pytest.raises(ValueError, match="holds 2 environments but run.num_envs is 3"):
        session.train("dreamer", cfg, tmp_path / "other", vector_env=gym.make_vec("CartPole-v1", num_envs=2))
