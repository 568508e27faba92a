"""The run folder: one directory per run holding everything the run produced.

Layout::

    run.json            agent name and creation time (tells a reverie run folder apart)
    .lock               the training process's lock (see reverie.training.lock)
    config.yaml         the resolved config
    metrics.jsonl       one JSON object per log step, each with "step"
    tb/                 TensorBoard events
    checkpoints/        ckpt-<step>.safetensors + ckpt-<step>.json
    replay/             replay chunks (.npz)
    learning_curve.png, dream.gif / dream.png, summary.json   written at the end
"""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path
from typing import Any

from reverie.config import to_dict
from reverie.io import atomic_write_text
from reverie.run_config import AgentConfig
from reverie.training.lock import LOCK_NAME, RunLock, RunLockedError

#: Config keys that may change between a run and its resumption.
RESUMABLE_CHANGES = ("run.steps", "run.eval_every", "run.eval_episodes", "run.log_every", "run.checkpoint_every",
                     "run.device", "run.threads", "run.parallel_envs",
                     "run.keep_checkpoints")


#: Config keys earlier versions wrote that no longer exist; a saved config's values for them are ignored.
#: ``planner.action_size`` and ``planner.discrete``: planners read both from the model's action spec
#: since the world-model contract.
RETIRED_KEYS = ("planner.action_size", "planner.discrete")


def drop_retired(data: dict, prefix: str = "") -> dict:
    """A saved config dict without the :data:`RETIRED_KEYS` (sections walked by their dotted names)."""
    out = {}
    for key, value in data.items():
        name = prefix + key
        if name not in RETIRED_KEYS:
            out[key] = drop_retired(value, name + ".") if isinstance(value, dict) else value
    return out


class RunFolderError(ValueError):
    """A run folder that cannot be used for this run."""


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


class RunFolder:
    """Paths of a run folder and the checks that keep runs from clobbering each other."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.meta = self.path / "run.json"
        self.config = self.path / "config.yaml"
        self.metrics = self.path / "metrics.jsonl"
        self.checkpoints = self.path / "checkpoints"
        self.replay = self.path / "replay"
        self.lock: RunLock | None = None       # held while this process trains here
        self.stale_lock: dict | None = None    # the record of a dead writer whose lock was taken over

    def read_meta(self) -> dict[str, Any] | None:
        if not self.meta.exists():
            return None
        try:
            return json.loads(self.meta.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise RunFolderError(f"{self.meta} is unreadable ({e}); it is not a usable reverie run folder") from None

    @classmethod
    def existing(cls, path: str | os.PathLike) -> "RunFolder":
        """A folder that must already hold a reverie run (for eval, dream, analyze)."""
        folder = cls(path)
        if not folder.path.is_dir():
            raise RunFolderError(f"run folder {folder.path} does not exist; train first with "
                                 f"'reverie train --run-dir {folder.path}'")
        if folder.read_meta() is None:
            raise RunFolderError(f"{folder.path} is not a reverie run folder (no run.json)")
        return folder

    @classmethod
    def prepare(cls, path: str | os.PathLike, agent: str, cfg: AgentConfig) -> tuple["RunFolder", bool]:
        """Take the folder's writer lock, then create it for a new run or check it matches for a resumption.

        Returns (folder, resuming); ``folder.lock`` is held until :meth:`release` (or the process ends).
        Never overwrites anything of another run; raises :class:`RunLockedError` if another live
        process trains in the folder.
        """
        folder = cls(path)
        if folder.read_meta() is None and folder.path.exists() and any(
                p.name != LOCK_NAME for p in folder.path.iterdir()):
            raise RunFolderError(f"{folder.path} is not empty and is not a reverie run folder; "
                                 "choose a new --run-dir")
        folder.lock = RunLock(folder.path)
        folder.stale_lock = folder.lock.acquire()   # before anything in the folder is touched
        try:
            resuming = folder._prepare_locked(agent, cfg)
        except BaseException:
            folder.release()
            raise
        return folder, resuming

    def release(self) -> None:
        """Give up the writer lock (a no-op if this process does not hold it)."""
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def _prepare_locked(self, agent: str, cfg: AgentConfig) -> bool:
        folder, cls = self, type(self)
        meta = folder.read_meta()   # read again under the lock: another writer may have just created it
        new = to_dict(cfg)
        if meta is None:
            if any(p.name != LOCK_NAME for p in folder.path.iterdir()):
                raise RunFolderError(f"{folder.path} is not empty and is not a reverie run folder; "
                                     "choose a new --run-dir")
            now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
            atomic_write_text(folder.meta, json.dumps({"agent": agent, "created": now}) + "\n")
            cls._write_config(folder, cfg)
            return False
        if meta.get("agent") != agent:
            raise RunFolderError(f"{folder.path} holds a '{meta.get('agent')}' run, not '{agent}'; "
                                 "choose another --run-dir or the same agent")
        if folder.config.exists():
            import yaml
            try:
                old = yaml.safe_load(folder.config.read_text()) or {}
            except yaml.YAMLError as e:
                raise RunFolderError(f"{folder.config} is unreadable ({e})") from None
            a, b = _flatten(drop_retired(old)), _flatten(new)
            # A setting added after the run was made is absent from its saved config; the run was trained as
            # that setting's default, so the default resumes it (a non-default value is a change).
            defaults = _flatten(to_dict(type(cfg)()))
            added = {k for k in set(b) - set(a) if k in defaults and b[k] == defaults[k]}
            changed = sorted(k for k in set(a) | set(b)
                             if a.get(k) != b.get(k) and k not in RESUMABLE_CHANGES and k not in added)
            if changed:
                shown = ", ".join(f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in changed[:5])
                raise RunFolderError(f"{folder.path} was trained with other settings ({shown}); resume with the "
                                     "same settings or choose a new --run-dir")
        cls._write_config(folder, cfg)
        return True

    @staticmethod
    def _write_config(folder: "RunFolder", cfg: AgentConfig) -> None:
        from reverie.config import save_config
        save_config(cfg, folder.config)


__all__ = ["RESUMABLE_CHANGES", "RETIRED_KEYS", "RunFolder", "RunFolderError", "RunLockedError", "drop_retired"]
