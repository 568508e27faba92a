"""Offline datasets in the Minari format: conversions, export -> import round trip, training from a dataset."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
import torch

pytest.importorskip("minari")

from reverie.agents.registry import agent_entry, resolve_config
from reverie.cli import main
from reverie.models.batch import Batch
from reverie.replay import Replay
from reverie.replay.minari_io import (
    DatasetError,
    Episode,
    action_to_model,
    action_to_space,
    episode_rows,
    obs_from_space,
    obs_to_space,
    space_specs,
    split_episodes,
)
from reverie.training import session
from reverie.training.offline import (
    export_run,
    import_dataset,
    open_dataset,
    replay_streams,
)
from reverie.training.run_dir import RunFolderError

TINY = ["run.steps=150", "run.train_ratio=16", "run.eval_episodes=1", "run.threads=1", "run.seed=3"]


# -- pure conversions ----------------------------------------------------------------------------------
def test_episode_rows_and_split_episodes_are_inverse_and_follow_the_step_convention():
    ep = Episode(obs={"vector": np.arange(8, dtype=np.float32).reshape(4, 2)},
                 action=np.eye(2, dtype=np.float32)[[1, 0, 1]], reward=np.array([1.0, 2.0, 3.0], np.float32),
                 terminated=np.array([False, False, True]), truncated=np.zeros(3, bool))
    rows = episode_rows(ep)
    assert rows["is_first"].tolist() == [True, False, False, False]
    assert rows["is_last"].tolist() == [False, False, False, True]
    assert rows["is_terminal"].tolist() == [False, False, False, True]
    assert rows["reward"].tolist() == [0.0, 1.0, 2.0, 3.0]
    assert rows["action"][0].tolist() == [0.0, 0.0] and rows["action"][1].tolist() == [0.0, 1.0]
    # a truncated second episode, then a lone reset (no transition: dropped), then a cut-off third
    trunc = Episode(obs={"vector": np.ones((3, 2), np.float32)}, action=np.eye(2, dtype=np.float32)[[0, 0]],
                    reward=np.ones(2, np.float32), terminated=np.zeros(2, bool), truncated=np.array([False, True]))
    lone = {k: v[:1] for k, v in episode_rows(trunc).items()}
    cut = {k: v[:2] for k, v in episode_rows(trunc).items()}
    stream = {k: np.concatenate([rows[k], episode_rows(trunc)[k], lone[k], cut[k]]) for k in rows}
    back = split_episodes(stream, ["vector"])
    assert [len(e) for e in back] == [3, 2, 1]
    np.testing.assert_array_equal(back[0].obs["vector"], ep.obs["vector"])
    np.testing.assert_array_equal(back[0].action, ep.action)
    assert back[1].truncated.tolist() == [False, True] and not back[1].terminated.any()
    assert not back[2].truncated.any() and not back[2].terminated.any()   # the rows ended inside it


def test_space_conversions_round_trip_and_bad_spaces_get_one_sentence():
    box = gym.spaces.Box(np.array([-2.0, 0.0], np.float32), np.array([2.0, 1.0], np.float32))
    acts = np.array([[-2.0, 0.0], [2.0, 1.0], [0.5, 0.25]], np.float32)
    model = action_to_model(box, acts, 3)
    np.testing.assert_allclose(model, [[-1, -1], [1, 1], [0.25, -0.5]], atol=1e-7)
    np.testing.assert_allclose(action_to_space(box, model), acts, atol=1e-6)
    disc = gym.spaces.Discrete(3, start=1)
    np.testing.assert_array_equal(action_to_model(disc, np.array([1, 3]), 2), np.eye(3)[[0, 2]])
    assert action_to_space(disc, np.eye(3, dtype=np.float32)[[0, 2]]).tolist() == [1, 3]
    space = gym.spaces.Dict({"pos": gym.spaces.Box(-1, 1, (2, 2)), "mode": gym.spaces.Discrete(2)})
    obs_spec, act_spec = space_specs(space, disc)
    assert {k: v.shape for k, v in obs_spec.items()} == {"pos": (4,), "mode": (2,)} and act_spec.size == 3
    raw = {"pos": np.random.default_rng(0).uniform(-1, 1, (3, 2, 2)).astype(np.float32), "mode": np.array([0, 1, 1])}
    ours = obs_from_space(space, raw, 3)
    back = obs_to_space(space, ours)
    np.testing.assert_array_equal(back["pos"], raw["pos"])
    np.testing.assert_array_equal(back["mode"], raw["mode"])
    with pytest.raises(DatasetError, match="lack the observation keys \\['mode'\\]"):
        obs_from_space(space, {"pos": raw["pos"]}, 3)
    with pytest.raises(DatasetError, match="action space is MultiDiscrete"):
        space_specs(gym.spaces.Box(-1, 1, (3,)), gym.spaces.MultiDiscrete([2, 2]))
    with pytest.raises(DatasetError, match="hold \\(2,\\) steps where the episode needs 3"):
        obs_from_space(gym.spaces.Box(-1, 1, (3,)), np.zeros((2, 3)), 3)
    with pytest.raises(DatasetError, match="leave their space"):
        action_to_model(gym.spaces.Discrete(2), np.array([0, 2]), 2)
    with pytest.raises(DatasetError, match="action space is MultiDiscrete"):
        action_to_model(gym.spaces.MultiDiscrete([2, 2]), np.zeros((2, 2), np.int64), 2)
    with pytest.raises(DatasetError, match="observation space 'note' is Text.*which reverie does not support"):
        obs_from_space(gym.spaces.Dict({"note": gym.spaces.Text(5)}), {"note": np.array(["a", "b"])}, 2)


def test_exporting_a_run_folder_whose_run_json_names_no_agent_is_one_sentence(tmp_path):
    (tmp_path / "run.json").write_text("{}")
    with pytest.raises(RunFolderError, match="run.json names no agent"):
        export_run(tmp_path, "reverie/cartpole-v0", out=tmp_path / "datasets")


# -- a run exported, imported, trained from ------------------------------------------------------------
@pytest.fixture(scope="module")
def run_and_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("offline")
    cfg = resolve_config("dreamer", "tiny", TINY)
    session.train("dreamer", cfg, root / "run", say=lambda m: None)
    info = export_run(root / "run", "reverie/cartpole-v0", out=root / "datasets")
    return root, cfg, info


def _rows(directory):
    (stream,) = replay_streams(directory, warn=print)
    return stream


def test_a_dataset_exported_from_a_run_and_imported_back_yields_the_same_transitions(run_and_dataset):
    root, cfg, info = run_and_dataset
    assert info["env_spec"] and info["episodes"] >= 3
    dataset = open_dataset(root / "datasets" / "reverie/cartpole-v0")
    assert dataset.spec.env_spec.id == "CartPole-v1" and isinstance(dataset.action_space, gym.spaces.Discrete)
    first = next(iter(dataset.iterate_episodes()))
    assert first.observations.shape[1:] == (4,) and first.actions.dtype.kind == "i"   # the env's own spaces
    record = import_dataset(root / "datasets" / "reverie/cartpole-v0", root / "imported", cfg.run.replay_chunk)
    original, back = _rows(root / "run" / "replay"), _rows(root / "imported" / "replay")
    n = len(back["is_first"])
    assert record["replay_steps"] == n and n in (len(original["is_first"]), len(original["is_first"]) - 1)
    assert set(back) == set(original)
    for key in back:
        assert back[key].dtype == original[key].dtype, key
        np.testing.assert_array_equal(back[key], original[key][:n], err_msg=key)


def test_training_on_the_imported_dataset_gives_the_loss_of_training_on_the_runs_own_replay(run_and_dataset):
    """Same seed, same updates: the imported replay holds the same rows in the same chunks (one stream,
    the run's chunk size), so the sampler draws the same batches and the losses agree exactly."""
    root, cfg, _ = run_and_dataset
    if not (root / "imported").exists():
        import_dataset(root / "datasets" / "reverie/cartpole-v0", root / "imported", cfg.run.replay_chunk)
    if len(_rows(root / "imported" / "replay")["is_first"]) != len(_rows(root / "run" / "replay")["is_first"]):
        pytest.skip("the run ended on a lone reset, which no dataset stores; the chunks then differ")
    losses = []
    for directory in (root / "run" / "replay", root / "imported" / "replay"):
        torch.manual_seed(0)
        probe = session.env_factory(cfg.run)(0)
        agent = agent_entry("dreamer").build(probe.obs_spec, probe.act_spec, cfg, "cpu")
        replay = Replay(directory, capacity=10_000, seq_len=cfg.run.seq_len, chunk_size=cfg.run.replay_chunk, seed=5)
        for _ in range(3):
            batch = Batch.build(replay.sample(cfg.run.batch_size), agent.obs_spec, agent.act_spec, agent.device)
            metrics = agent.update(batch)
        losses.append(metrics)
    for key in ("loss/rec", "loss/reward", "loss/cont", "loss/critic"):
        assert losses[0][key] == pytest.approx(losses[1][key], rel=1e-6), key


def test_cli_export_import_and_train_from_a_dataset_end_to_end(run_and_dataset, tmp_path, capsys):
    root, _, _ = run_and_dataset
    assert main(["export", str(root / "run"), "--minari", "cp-v1", "--out", str(tmp_path / "ds")]) == 0
    exported = json.loads(capsys.readouterr().out)
    assert exported["dataset"] == "cp-v1" and exported["transitions"] > 0
    assert main(["export", str(root / "run"), "--minari", "cp-v1", "--out", str(tmp_path / "ds")]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["export", str(root / "run"), "--minari", "cp", "--out", str(tmp_path / "ds")]) == 2
    assert "is not a Minari id" in capsys.readouterr().err
    assert main(["import", str(tmp_path / "ds" / "cp-v1"), "--run-dir", str(tmp_path / "imp")]) == 0
    assert json.loads(capsys.readouterr().out)["transitions"] == exported["transitions"]
    assert main(["import", str(tmp_path / "ds" / "cp-v1"), "--run-dir", str(tmp_path / "imp")]) == 2
    assert "already holds replay chunks" in capsys.readouterr().err
    args = ["train", "--preset", "tiny", "--steps", "6", "run.eval_every=3", "run.eval_episodes=1", "run.threads=1"]
    assert main([*args, "--dataset", str(tmp_path / "ds" / "cp-v1"), "--run-dir", str(tmp_path / "off")]) == 0
    out = capsys.readouterr().out
    assert "6 updates" in out and "evaluation return" in out
    rows = [json.loads(line) for line in (tmp_path / "off" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "eval/return" in r] == [3, 6]
    assert (tmp_path / "off" / "checkpoints" / "ckpt-000000006.json").exists()
    # the same command again resumes at 6 updates; raising --steps trains on
    args[4] = "8"
    assert main([*args, "--dataset", str(tmp_path / "ds" / "cp-v1"), "--run-dir", str(tmp_path / "off")]) == 0
    assert "resuming" in capsys.readouterr().out
    # a folder written by 'reverie import' is a dataset too (its replay read in place)
    assert main([*args, "--dataset", str(tmp_path / "imp"), "--run-dir", str(tmp_path / "off2")]) == 0
    capsys.readouterr()
    # MuZero learns from its own search's outputs, which no dataset holds
    assert main(["train", "muzero", "--preset", "tiny", "--dataset", str(tmp_path / "imp"),
                 "--run-dir", str(tmp_path / "mz")]) == 2
    assert "search_policy" in capsys.readouterr().err
    assert main(["train", "--dataset", str(tmp_path / "nothing-here"), "--run-dir", str(tmp_path / "x")]) == 2
    assert "no Minari dataset" in capsys.readouterr().err
