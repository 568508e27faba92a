"""Recording a fixed policy's play as a dataset folder: ``reverie record``.

The folder is what ``reverie import`` writes (``replay/`` in reverie's replay format and ``dataset.json``), so
``reverie train AGENT --dataset FOLDER`` trains on it in place, e.g. the ``lapo`` agent on videos of competent
play (it reads the frames; the recorded actions stay in the replay for the evaluation and for the few labels
of LAPO's decoder). ``dataset.json`` adds to import's fields the environment, the policy and the return of
every finished episode.

The policies are scripted players of the frame (:data:`POLICIES`): no learned agent is needed to record.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable

import numpy as np

from reverie.config import ConfigError
from reverie.envs import BatchEnv, make_env
from reverie.envs.breakout_expert import follow_ball
from reverie.replay import Replay
from reverie.training.collect import Collector
from reverie.training.offline import DATASET_FILE
from reverie.training.run_dir import atomic_write_text

__all__ = ["POLICIES", "ScriptedPolicy", "record_dataset"]


@dataclass(frozen=True)
class ScriptedPolicy:
    """A policy of the observation alone: ``act(obs [B, ...], rng) -> actions [B]`` for environment ``env``."""

    env: str
    key: str
    act: Callable[[np.ndarray, np.random.Generator], np.ndarray]


#: The scripted policies ``reverie record`` plays, by name: the Breakout player
#: (:mod:`reverie.envs.breakout_expert`), deterministic or with random actions where it has 3 steps of slack.
POLICIES = {"breakout-follow-ball": ScriptedPolicy("minatar:breakout", "image", lambda image, rng: follow_ball(image)),
            "breakout-follow-ball-noisy": ScriptedPolicy("minatar:breakout", "image",
                                                         lambda image, rng: follow_ball(image, rng, slack=3))}


def record_dataset(policy: str, out: str | os.PathLike, steps: int, seed: int = 0, envs: int = 8,
                   time_limit: int | None = 1000, chunk: int = 1000) -> dict[str, Any]:
    """Play scripted policy ``policy`` (a name of :data:`POLICIES`) in ``envs`` environments (seeds ``seed``,
    ``seed + 1``, ...; episodes cut at ``time_limit`` agent steps) until ``steps`` steps are stored in
    ``out/replay``; write ``out/dataset.json``. ``out`` must hold no replay yet. Returns the record."""
    if policy not in POLICIES:
        raise ConfigError(f"no scripted policy {policy!r}; choose one of {', '.join(sorted(POLICIES))}")
    if steps < envs:
        raise ConfigError(f"record at least one step per environment: --steps {steps} < --envs {envs}")
    scripted = POLICIES[policy]
    folder = Path(out)
    replay_dir = folder / "replay"
    if replay_dir.exists() and any(replay_dir.glob("*.npz")):
        raise ConfigError(f"{replay_dir} already holds replay chunks; record into a new folder")
    replay_dir.mkdir(parents=True, exist_ok=True)
    batch = BatchEnv([partial(make_env, scripted.env, "pixels", seed + i, time_limit=time_limit)
                      for i in range(envs)])
    replay = Replay(replay_dir, capacity=steps + envs * chunk, seq_len=1, chunk_size=chunk, seed=seed, owner=True)
    collector = Collector(batch, replay)
    rng = np.random.default_rng([seed, 5])
    returns: list[float] = []
    lengths: list[int] = []
    transitions = 0
    try:
        for t in range(steps // envs):
            step = collector.current(t * envs)
            transitions += int(np.sum(~np.asarray(step["is_first"], bool)))
            for ret, length, _ in collector.record(step, {}):
                returns.append(ret)
                lengths.append(length)
            collector.send(scripted.act(step[scripted.key], rng))
            collector.receive()
        replay.flush()
    finally:
        collector.close()
    obs_spec, act_spec = batch.obs_spec, batch.act_spec
    record = {
        "source": str(folder), "dataset_id": None, "env": scripted.env, "policy": policy, "seed": seed,
        "time_limit": time_limit, "episodes": len(returns), "transitions": transitions,
        "replay_steps": int(steps // envs * envs),
        "obs_spec": {k: [list(v.shape), np.dtype(v.dtype).name] for k, v in obs_spec.items()},
        "act_spec": {"discrete": act_spec.discrete, "size": act_spec.size}, "env_spec": None,
        "return_mean": float(np.mean(returns)) if returns else None,
        "return_std": float(np.std(returns)) if returns else None,
        "length_mean": float(np.mean(lengths)) if lengths else None,
        "returns": returns,
    }
    atomic_write_text(folder / DATASET_FILE, json.dumps(record, indent=1) + "\n")
    return record
