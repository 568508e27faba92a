"""Offline datasets in the Minari format: export a run's replay, import a dataset, train from one.

- :func:`export_run`: a run folder's replay (every rank's shard) -> a Minari dataset. A gymnasium
  run on state vectors without action repeat is stored in its environment's own spaces with the
  environment's spec (so ``minari``'s ``recover_environment`` and reverie's evaluation can remake it);
  any other run is stored in reverie's spaces without a spec.
- :func:`import_dataset`: a Minari dataset (a local dataset id or a folder) -> a folder's ``replay/``
  plus ``dataset.json`` (its source, spaces, size and environment spec).
- :func:`read_dataset`, :func:`attach_dataset`, :func:`dataset_env`: what training on a dataset alone
  needs (the driver's offline mode, :mod:`reverie.training.modes`, trains: ``run.steps`` (``--steps``)
  counts *updates* there, refits for a refitting agent, and so do ``run.eval_every``, ``run.log_every``,
  ``run.checkpoint_every`` and the ``step`` of metrics and checkpoints; it evaluates in the dataset's
  environment when its spec can be made, and says why not otherwise).

The conversions themselves are pure (:mod:`reverie.replay.minari_io`); this module is the shell.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shutil
import sys
import types
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np

from reverie.agents.base import Agent, Refit, ReplayRatio, Staged
from reverie.envs.spaces import Env
from reverie.replay import Replay, chunkfile
from reverie.replay.chunkfile import ChunkMeta
from reverie.replay.minari_io import (
    DatasetError,
    Episode,
    action_to_model,
    action_to_space,
    episode_rows,
    obs_from_space,
    obs_to_space,
    reverie_spaces,
    space_specs,
    split_episodes,
)
from reverie.run_config import RunConfig
from reverie.specs import ActionSpec, ArraySpec
from reverie.training.env_factory import EnvFactory, action_repeat_of, env_factory
from reverie.training.run_dir import RunFolder, RunFolderError, atomic_write_text

if TYPE_CHECKING:
    from minari import MinariDataset

__all__ = ["DatasetError", "OfflineData", "attach_dataset", "check_offline_agent", "dataset_env", "dataset_run",
           "export_run", "import_dataset", "open_dataset", "read_dataset"]

DATASET_FILE = "dataset.json"


def _quiet_minari() -> types.ModuleType:
    """minari warns about optional packages (jax for collection) on import; reverie needs none of them."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            import h5py  # noqa: F401  (minari's storage format here)
            import minari
        except ImportError as e:
            raise DatasetError(f"offline datasets need the minari and h5py packages ({e}); install them with "
                               "pip install 'reverie[offline]'") from None
    return minari


# -- reading a dataset ---------------------------------------------------------------------------------
def open_dataset(ref: str | os.PathLike) -> MinariDataset:
    """The Minari dataset at a folder (its root or its ``data/``) or with a local dataset id."""
    minari = _quiet_minari()
    path = Path(ref)
    candidates = [path / "data", path] if path.is_dir() else []
    for data in candidates:
        if (data / "metadata.json").exists():
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    return minari.MinariDataset(data)
            except Exception as e:  # noqa: BLE001  (minari raises many kinds on a damaged dataset)
                raise DatasetError(f"{path} is not a readable Minari dataset ({type(e).__name__}: {e})") from None
    if path.is_dir():
        raise DatasetError(f"{path} is not a Minari dataset (no metadata.json in it or in its data/ folder)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return minari.load_dataset(str(ref), download=False)
    except FileNotFoundError:
        raise DatasetError(f"no Minari dataset '{ref}': it is neither a folder nor a dataset id under "
                           f"{minari.storage.get_dataset_path()} (see 'minari list local')") from None
    except Exception as e:  # noqa: BLE001  (any failure of minari to read it)
        raise DatasetError(f"Minari dataset '{ref}' cannot be read ({type(e).__name__}: {e})") from None


def _env_spec_json(dataset: MinariDataset) -> str | None:
    spec = getattr(dataset.spec, "env_spec", None)   # a minari metadata field, None when the dataset has no env
    return spec.to_json() if spec is not None else None


def dataset_episodes(dataset: MinariDataset) -> tuple[dict[str, ArraySpec], ActionSpec, list[Episode]]:
    """(obs_spec, act_spec, episodes in reverie's conventions) of a Minari dataset."""
    obs_space, act_space = dataset.observation_space, dataset.action_space
    obs_spec, act_spec = space_specs(obs_space, act_space)
    episodes: list[Episode] = []
    for ep in dataset.iterate_episodes():
        fields = {k: getattr(ep, k, None) for k in ("observations", "actions", "rewards", "terminations",
                                                    "truncations")}
        missing = [k for k, v in fields.items() if v is None]
        if missing:
            raise DatasetError(f"episode {ep.id} of the dataset lacks {missing}")
        n = len(np.asarray(fields["rewards"]))
        for key in ("terminations", "truncations"):
            count = len(np.asarray(fields[key]))
            if count != n:
                raise DatasetError(f"episode {ep.id} of the dataset has {count} {key} but {n} rewards")
        episodes.append(Episode(obs=obs_from_space(obs_space, fields["observations"], n + 1),
                                action=action_to_model(act_space, fields["actions"], n),
                                reward=np.asarray(fields["rewards"], np.float32).reshape(n),
                                terminated=np.asarray(fields["terminations"], bool).reshape(n),
                                truncated=np.asarray(fields["truncations"], bool).reshape(n)))
    if not episodes:
        raise DatasetError("the dataset holds no episodes")
    return obs_spec, act_spec, episodes


def import_dataset(ref: str | os.PathLike, run_dir: str | os.PathLike, chunk_size: int = 256,
                   seed: int = 0) -> dict[str, Any]:
    """Write dataset ``ref`` into ``run_dir/replay`` (one stream, episodes in order) and ``run_dir/dataset.json``.

    ``run_dir`` must have no replay yet. Returns what ``dataset.json`` records.
    """
    dataset = open_dataset(ref)
    obs_spec, act_spec, episodes = dataset_episodes(dataset)
    folder = RunFolder(run_dir)
    if folder.replay.exists() and any(folder.replay.glob("*.npz")):
        raise DatasetError(f"{folder.replay} already holds replay chunks; import into a new --run-dir")
    folder.replay.mkdir(parents=True, exist_ok=True)
    steps = sum(len(e) + 1 for e in episodes)
    replay = Replay(folder.replay, capacity=steps + chunk_size, seq_len=1, chunk_size=chunk_size, seed=seed,
                    owner=True)
    for ep in episodes:
        rows = episode_rows(ep)
        for t in range(len(ep) + 1):
            replay.add({k: v[t:t + 1] for k, v in rows.items()})
    replay.flush()
    record = {
        "source": str(ref), "dataset_id": dataset.spec.dataset_id, "episodes": len(episodes),
        "transitions": int(sum(len(e) for e in episodes)), "replay_steps": steps,
        "obs_spec": {k: [list(v.shape), np.dtype(v.dtype).name] for k, v in obs_spec.items()},
        "act_spec": {"discrete": act_spec.discrete, "size": act_spec.size},
        "env_spec": _env_spec_json(dataset),
    }
    atomic_write_text(folder.path / DATASET_FILE, json.dumps(record, indent=1) + "\n")
    return record


# -- writing a dataset ---------------------------------------------------------------------------------
def replay_streams(replay_dir: Path, warn: Callable[[str], None]) -> list[dict[str, np.ndarray]]:
    """Every stream's rows, chunks joined along their links, from a replay folder and its ``rank-*`` shards."""
    streams: list[dict[str, np.ndarray]] = []
    for directory in [replay_dir, *sorted(p for p in replay_dir.glob("rank-*") if p.is_dir())]:
        chunks: dict[tuple[int, int], tuple[ChunkMeta, dict[str, np.ndarray]]] = {}
        for path in sorted(directory.glob("*.npz")):
            try:
                meta, data = chunkfile.split_chunk(path, chunkfile.read_chunk(path))
            except chunkfile.ChunkUnreadable as e:
                warn(f"skipping unreadable replay chunk {path} ({e})")
                continue
            chunks[(meta.stream, meta.birth)] = (meta, data)
        following = {(m.stream, m.prev_birth): (m.stream, m.birth) for m, _ in chunks.values() if m.prev_birth >= 0}
        heads = [k for k, (m, _) in sorted(chunks.items(), key=lambda kv: kv[0][1])
                 if (m.stream, m.prev_birth) not in chunks]
        for head in heads:
            parts: list[tuple[ChunkMeta, dict[str, np.ndarray]]] = []
            key: tuple[int, int] | None = head
            while key is not None and key in chunks:
                meta, data = chunks[key]
                if parts and meta.offset != parts[-1][0].offset + len(parts[-1][1]["is_first"]):
                    break   # a gap (an evicted or lost chunk) ends the stream here
                parts.append((meta, data))
                key = following.get((meta.stream, meta.birth))
            streams.append({k: np.concatenate([d[k] for _, d in parts]) for k in parts[0][1]})
    return streams


def _native_spaces(run: RunConfig, obs_spec: dict[str, ArraySpec], act_spec: ActionSpec
                   ) -> tuple[gym.Space, gym.Space, gym.envs.registration.EnvSpec] | None:
    """The gymnasium env's own spaces and spec for a run whose replay holds them unchanged, else None."""
    from reverie.envs.gym_env import find_gym_spec

    suite, _, task = run.env.partition(":")
    if suite != "gym" or run.obs != "state" or action_repeat_of(run) != 1:
        return None
    spec = find_gym_spec(task)
    if run.time_limit:
        spec = replace(spec, max_episode_steps=run.time_limit)
    env = gym.make(spec, disable_env_checker=True)
    try:
        spaces = env.observation_space, env.action_space
    finally:
        env.close()
    try:
        if space_specs(*spaces) != (obs_spec, act_spec):
            return None
    except DatasetError:
        return None
    return spaces[0], spaces[1], spec


def export_run(run_dir: str | os.PathLike, name: str, out: str | os.PathLike | None = None,
               warn: Callable[[str], None] = lambda m: print(f"warning: {m}", file=sys.stderr)) -> dict[str, Any]:
    """Write the replay of run folder ``run_dir`` as Minari dataset ``name`` (under ``out``, else minari's root)."""
    from reverie.agents.registry import agent_entry
    from reverie.config import load_config
    from reverie.training.run_dir import drop_retired

    if not re.fullmatch(r"([\w-]+/){0,2}[\w-]+-v\d+", name):
        raise DatasetError(f"dataset name {name!r} is not a Minari id: write [NAMESPACE/]NAME-vN, e.g. "
                           "'reverie/cartpole-v0'")
    folder = RunFolder.existing(run_dir)
    meta = folder.read_meta()
    if meta is None or "agent" not in meta:
        raise RunFolderError(f"{folder.path}/run.json names no agent; it is not a usable reverie run folder")
    agent_name = meta["agent"]
    cfg = load_config(agent_entry(agent_name).config_cls, folder.config, migrate=drop_retired)
    probe = env_factory(cfg.run)(cfg.run.seed)
    try:
        obs_spec, act_spec = dict(probe.obs_spec), probe.act_spec
    finally:
        probe.close()
    episodes = [ep for rows in replay_streams(folder.replay, warn) for ep in split_episodes(rows, list(obs_spec))]
    if not episodes:
        raise DatasetError(f"{folder.replay} holds no complete episode start to export; train the run longer")
    native = _native_spaces(cfg.run, obs_spec, act_spec)
    obs_space, act_space = native[:2] if native else reverie_spaces(obs_spec, act_spec)
    minari = _quiet_minari()
    from minari.data_collector import EpisodeBuffer

    buffers = [EpisodeBuffer(id=i, observations=obs_to_space(obs_space, ep.obs),
                             actions=action_to_space(act_space, ep.action), rewards=ep.reward.astype(np.float64),
                             terminations=ep.terminated, truncations=ep.truncated)
               for i, ep in enumerate(episodes)]
    env_note = (f"environment {cfg.run.env} in its own spaces" if native else
                f"environment {cfg.run.env} ({cfg.run.obs}, action repeat and conversions of reverie) in reverie's "
                "spaces: observations as reverie sees them, actions in [-1, 1] or indices")
    with _datasets_root(out):
        path = Path(minari.storage.get_dataset_path(name))
        if path.exists():
            raise DatasetError(f"a Minari dataset '{name}' already exists at {path}; choose another name or version")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                dataset = minari.create_dataset_from_buffers(
                    name, buffers, env=native[2] if native else None,
                    algorithm_name=f"reverie {agent_name}",
                    observation_space=obs_space, action_space=act_space, data_format="hdf5",
                    description=f"replay of reverie run {folder.path}: {env_note}", jpeg_encoding=False)
        except BaseException as e:
            shutil.rmtree(path, ignore_errors=True)   # the half-written dataset this call began
            if isinstance(e, ValueError):
                raise DatasetError(f"cannot create Minari dataset '{name}': {e}") from None
            raise
    return {"dataset": name, "path": str(path), "episodes": len(buffers),
            "transitions": int(sum(len(e) for e in episodes)), "total_steps": int(dataset.total_steps),
            "env_spec": native is not None}


@contextlib.contextmanager
def _datasets_root(out: str | os.PathLike | None) -> Iterator[None]:
    """Point minari at ``out`` for datasets (its ``MINARI_DATASETS_PATH``) for the duration."""
    if out is None:
        yield
        return
    old = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(Path(out).resolve())
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("MINARI_DATASETS_PATH", None)
        else:
            os.environ["MINARI_DATASETS_PATH"] = old


# -- training from a dataset (the driver's offline mode trains; this prepares the data) -------------------
@dataclass(frozen=True)
class OfflineData:
    """What training on a dataset needs before the run folder is touched."""

    source: str
    """The dataset as the user named it."""
    record: dict[str, Any]
    """``dataset.json``'s fields: source, spaces, environment spec, size."""
    imported: bool
    """Whether ``source`` is a folder written by :func:`import_dataset` (its replay is read in place)."""
    obs_spec: dict[str, ArraySpec]
    act_spec: ActionSpec


def read_dataset(dataset: str | os.PathLike) -> OfflineData:
    """The spaces and record of ``dataset``: a Minari dataset id or folder, or a folder written by
    :func:`import_dataset`."""
    source = Path(dataset)
    record = _read_record(source) if source.is_dir() else None
    imported = record is not None
    if record is None:
        ds = open_dataset(dataset)
        obs_spec, act_spec = space_specs(ds.observation_space, ds.action_space)
        record = {"env_spec": _env_spec_json(ds), "obs_spec": {k: [list(v.shape), np.dtype(v.dtype).name]
                                                                for k, v in obs_spec.items()},
                  "act_spec": {"discrete": act_spec.discrete, "size": act_spec.size}}
    obs_spec, act_spec = _spec_of(record)
    return OfflineData(str(dataset), record, imported, obs_spec, act_spec)


def dataset_run(data: OfflineData, run: RunConfig) -> RunConfig:
    """``run`` naming the dataset's environment (for evaluation and dreams) where the dataset records one: a
    gymnasium spec, or a reverie environment name (``env``, as ``reverie record`` writes, seen through pixels)."""
    if data.record.get("env_spec") is None:
        if data.record.get("env"):
            return replace(run, env=str(data.record["env"]), obs="pixels", action_repeat=1,
                           time_limit=data.record.get("time_limit"))
        return run
    env_id = gym.envs.registration.EnvSpec.from_json(data.record["env_spec"]).id
    return replace(run, env=f"gym:{env_id}", obs="state", action_repeat=1)


def check_offline_agent(agent: Agent, name: str) -> None:
    """Refuse, in one sentence, an agent that cannot learn from a dataset alone."""
    offline_stages = isinstance(agent.schedule, Staged) and agent.schedule.offline   # stages on the replay alone
    if not isinstance(agent.schedule, (ReplayRatio, Refit)) and not offline_stages:
        raise DatasetError(f"agent '{name}' trains in stages that act in its own environment, which offline "
                           "training does not drive; train dreamer, planet, pets or cswm offline")
    if agent.extras_spec:
        raise DatasetError(f"agent '{name}' learns from what it computed while acting "
                           f"({', '.join(agent.extras_spec)}), which a dataset does not hold; train dreamer, planet "
                           "or pets offline")


def attach_dataset(folder: RunFolder, data: OfflineData, run: RunConfig) -> tuple[dict[str, Any], Replay]:
    """The run folder's dataset record (written on first use: a dataset imported into the folder's replay, or
    a reference to an imported folder's replay) and a read-only replay of it. A folder trained on another
    dataset is refused."""
    old = _read_record(folder.path)
    if old is not None and old.get("source") != data.source:
        raise DatasetError(f"{folder.path} was trained on dataset {old.get('source')!r}, not {data.source!r}; "
                           "choose a new --run-dir")
    if old is None:
        if data.imported:
            old = {**data.record, "source": data.source, "replay": str((Path(data.source) / "replay").resolve())}
            atomic_write_text(folder.path / DATASET_FILE, json.dumps(old, indent=1) + "\n")
        else:
            old = import_dataset(data.source, folder.path, run.replay_chunk, run.seed)
    steps = int(old.get("replay_steps") or 0)
    chunk = run.replay_chunk
    replay = Replay(Path(old.get("replay") or folder.replay), capacity=max(run.replay_capacity, steps + 4 * chunk),
                    seq_len=run.seq_len, chunk_size=chunk, seed=run.seed, owner=False)
    return old, replay


def dataset_env(record: dict[str, Any], obs_spec: Mapping[str, ArraySpec], act_spec: ActionSpec, seed: int
                ) -> tuple[EnvFactory | None, str]:
    """(``seed -> Env`` of the dataset's environment, or None; why not): evaluation of an offline run."""
    return _eval_factory(record, obs_spec, act_spec, seed)


def _read_record(folder: Path) -> dict[str, Any] | None:
    path = folder / DATASET_FILE
    return json.loads(path.read_text()) if path.exists() else None


def learned_replay(run_dir: str | os.PathLike) -> Path:
    """The replay folder a run learned from: its dataset's, for a run trained on a dataset folder, else its own."""
    record = _read_record(Path(run_dir)) or {}
    return Path(record.get("replay") or Path(run_dir) / "replay")


def _eval_factory(record: dict[str, Any], obs_spec: Mapping[str, ArraySpec], act_spec: ActionSpec, seed_base: int
                  ) -> tuple[EnvFactory | None, str]:
    """(seed -> Env in the dataset's environment, or None; why not)."""
    from reverie.envs.gym_env import GymEnv

    if record.get("env_spec") is None and record.get("env"):   # a reverie environment (reverie record)
        return _reverie_env_factory(record, obs_spec, act_spec)
    if record.get("env_spec") is None:
        return None, "the dataset records no environment spec"
    try:
        spec = gym.envs.registration.EnvSpec.from_json(record["env_spec"])
        probe = GymEnv(gym.make(spec, disable_env_checker=True), obs="state", seed=seed_base)
    except Exception as e:  # noqa: BLE001  (any failure to remake a foreign env only skips evaluation)
        return None, f"its environment cannot be made here ({type(e).__name__}: {e})"
    same = (dict(probe.obs_spec), probe.act_spec) == (dict(obs_spec), act_spec)
    probe.close()
    if not same:
        return None, "its environment's spaces differ from the dataset's"
    return functools.partial(_make_eval_env, record["env_spec"]), ""


def _reverie_env_factory(record: dict[str, Any], obs_spec: Mapping[str, ArraySpec], act_spec: ActionSpec
                         ) -> tuple[EnvFactory | None, str]:
    make = functools.partial(_make_reverie_env, str(record["env"]), record.get("time_limit"))
    probe = make(0)
    same = (dict(probe.obs_spec), probe.act_spec) == (dict(obs_spec), act_spec)
    probe.close()
    if not same:
        return None, f"its environment {record['env']}'s spaces differ from the dataset's"
    return make, ""


def _make_reverie_env(name: str, time_limit: int | None, seed: int) -> Env:
    from reverie.envs import make_env

    return make_env(name, "pixels", seed=seed, time_limit=time_limit)


def _make_eval_env(spec_json: str, seed: int) -> Env:
    from reverie.envs.gym_env import GymEnv

    spec = gym.envs.registration.EnvSpec.from_json(spec_json)
    return GymEnv(gym.make(spec, disable_env_checker=True), obs="state", seed=seed)


def _spec_of(record: dict[str, Any]) -> tuple[dict[str, ArraySpec], ActionSpec]:
    obs = {k: ArraySpec(tuple(shape), np.dtype(dtype)) for k, (shape, dtype) in record["obs_spec"].items()}
    return obs, ActionSpec(bool(record["act_spec"]["discrete"]), int(record["act_spec"]["size"]))
