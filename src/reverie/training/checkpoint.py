"""Safe, atomic checkpoints: tensors in safetensors, everything else in JSON.

One checkpoint is a pair of files in the run's checkpoint folder::

    ckpt-000012345.safetensors   every tensor, flattened to "module/param" keys
                                 (ckpt-000012345-b.safetensors while a save
                                 of the same step replaces it)
    ckpt-000012345.json          the commit marker: format, step, agent, the
                                 user's meta (config, counters), the nesting
                                 structure with every non-tensor leaf, and the
                                 size and SHA-256 of the weights file

The weights are written first (temp file, fsync, rename), the JSON last, so
a checkpoint exists exactly when its JSON does: a process killed at any
moment leaves either the previous complete checkpoint or the new one, and at
worst some stray temp files that the next save removes.

Nothing is ever unpickled: an optimiser ``state_dict()`` (tensors mixed with
ints, floats, tuples and integer keys) is split by :func:`split_state` into
flat tensors plus a JSON structure and rebuilt exactly by :func:`join_state`.

This module saves and loads; :mod:`~reverie.training.checkpoint_files` holds
the folder's file names, the weights file, listing and pruning, and
:mod:`~reverie.training.checkpoint_state` the split of a nested state.
"""

from __future__ import annotations

import datetime
import json
import os
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from reverie.failpoints import failpoint
from reverie.io import atomic_write_bytes
from reverie.training.checkpoint_files import (
    FORMAT_VERSION,
    _FORMAT,
    _NAME,
    _WEIGHTS,
    _prune,
    _read_marker,
    _sha256,
    _step_of,
    _write_weights,
    latest_checkpoint,
    list_checkpoints,
)
from reverie.training.checkpoint_state import CheckpointError, join_state, split_state

__all__ = [
    "CheckpointDamaged",
    "CheckpointError",
    "FORMAT_VERSION",
    "join_state",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "load_latest",
    "save_checkpoint",
    "split_state",
]


class CheckpointDamaged(CheckpointError):
    """A committed checkpoint whose files were damaged after it was written (truncated, bit rot, replaced).

    ``path``: the damaged file; ``why``: what is wrong with it.
    """

    def __init__(self, message: str, path: Path, why: str = "") -> None:
        super().__init__(message)
        self.path, self.why = path, why


# --------------------------------------------------------------------------
# Saving
# --------------------------------------------------------------------------


def save_checkpoint(
    directory: str | os.PathLike,
    step: int,
    tensors: dict[str, Any],
    meta: dict[str, Any],
    keep: int | None = 3,
    pin: bool = False,
) -> Path:
    """Write checkpoint ``step`` into ``directory`` atomically; return the path of its JSON file.

    ``tensors``: a nested state such as ``{"world_model": wm.state_dict(),
    "optimizer": opt.state_dict()}`` (see :func:`split_state`). ``meta``:
    JSON-able facts to keep with it (``agent`` name, ``config`` dict, counters).
    ``keep``: how many newest complete checkpoints to keep (None keeps all);
    ``pin``: never prune this one (checkpoints kept for analysis over training).
    Saving a step that already exists replaces it.
    """
    if keep is not None and keep < 1:
        raise ValueError(f"keep must be at least 1 (or None to keep all), got {keep}")
    step = int(step)
    if step < 0:
        raise ValueError(f"checkpoint step must be >= 0, got {step}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    marker = directory / f"ckpt-{step:09d}.json"
    previous = _read_marker(marker)
    # Saving a pinned step again (the end of a run lands on its last milestone) keeps it pinned.
    pin = bool(pin or (previous is not None and previous.get("pinned")))
    # Replacing an existing step: write the weights under the other of two
    # names, so the old JSON keeps describing intact old weights until the
    # new JSON replaces it in one rename.
    weights = directory / f"ckpt-{step:09d}.safetensors"
    if previous is not None and previous["weights"]["file"] == weights.name:
        weights = directory / f"ckpt-{step:09d}-b.safetensors"

    flat, structure = split_state(tensors)
    record = {
        "format": _FORMAT,
        "format_version": FORMAT_VERSION,
        "reverie_version": _reverie_version(),
        "step": step,
        "agent": meta.get("agent"),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "meta": meta,
        "pinned": bool(pin),
        "structure": structure,
    }
    try:  # fail before touching any file if the meta cannot be written
        json.dumps(record, default=_json_default)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"checkpoint meta is not JSON-serialisable ({e}); pass plain values") from None

    _write_weights(weights, flat)
    failpoint("checkpoint.weights_written")
    record["weights"] = {"file": weights.name, "bytes": weights.stat().st_size, "sha256": _sha256(weights)}
    atomic_write_bytes(marker, json.dumps(record, default=_json_default, indent=1).encode("utf-8"))
    _prune(directory, keep)
    return marker


def _json_default(obj: object) -> object:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (Path, os.PathLike)):
        return os.fspath(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    if isinstance(obj, torch.Tensor) and obj.numel() == 1:
        return obj.item()
    raise TypeError(f"{type(obj).__name__} is not JSON-serialisable")


def _reverie_version() -> str:
    try:
        from importlib.metadata import version

        return version("reverie")
    except Exception:  # running from a source tree without installed metadata
        return "unknown"


# --------------------------------------------------------------------------
# Finding and loading
# --------------------------------------------------------------------------


def load_latest(
    directory: str | os.PathLike,
    expected_agent: str | None = None,
    *,
    device: str | torch.device = "cpu",
    warn: Callable[[str], None] | None = None,
) -> tuple[Any, dict[str, Any], Path] | None:
    """Load the newest intact checkpoint in ``directory``: ``(state, meta, path)``, or None if none was saved.

    Every committed checkpoint (its JSON exists, so its save finished) is verified in full, newest
    first. One whose files were damaged since (truncated, a flipped byte, another model's weights)
    is named with its path and the reason through ``warn(message)``, and the one before it is tried;
    if every committed checkpoint is damaged, :class:`CheckpointDamaged` lists them all. Errors that
    are not damage (another agent's checkpoint, a newer format) are raised at once.
    """
    directory = Path(directory)
    committed = sorted((p for p in directory.iterdir() if _NAME.match(p.name)), key=_step_of, reverse=True) \
        if directory.is_dir() else []
    damaged: list[str] = []
    for path in committed:
        try:
            state, meta = _load_steady(path, expected_agent, device)
        except FileNotFoundError:
            continue   # pruned by the training process while we looked: not damage
        except CheckpointDamaged as error:
            damaged.append(f"{error.path.name}: {error.why}")
            if warn is not None:
                after = "loading the one before it" if path != committed[-1] else "it was the oldest one"
                warn(f"checkpoint {error.path} is damaged ({error.why}); {after}")
            continue
        return state, meta, path
    if damaged:
        raise CheckpointDamaged(f"every checkpoint in {directory} is damaged ({'; '.join(damaged)}); restore them "
                                "from a backup, or move the checkpoints folder away to train from scratch",
                                directory, "; ".join(damaged))
    return None


def _load_steady(path: Path, expected_agent: str | None, device: str | torch.device) -> tuple[Any, dict[str, Any]]:
    """:func:`load_checkpoint` for a reader that may race the writer: a checkpoint replaced (same step
    saved again) or pruned while it was read is read again or reported gone (FileNotFoundError),
    never taken for damage."""
    for _ in range(3):
        before = _stamp(path)
        if before is None:
            raise FileNotFoundError(path)
        try:
            return load_checkpoint(path, expected_agent, device=device)
        except CheckpointError:
            if _stamp(path) == before:
                raise   # nothing changed under us: the files really are what the error says
    return load_checkpoint(path, expected_agent, device=device)


def _stamp(path: Path) -> tuple[int, int, int] | None:
    """Identity of a file's current version (a replacing rename gives it a new inode)."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_ino, stat.st_mtime_ns, stat.st_size


def load_checkpoint(
    path: str | os.PathLike,
    expected_agent: str | None = None,
    *,
    device: str | torch.device = "cpu",
    verify: bool = True,
) -> tuple[Any, dict[str, Any]]:
    """Load a checkpoint; return ``(state nested as saved, meta)``.

    ``path``: the checkpoint's ``.json`` or ``.safetensors`` file, or a folder
    (its newest intact checkpoint, see :func:`load_latest`; damaged ones are
    skipped with a warning). ``meta`` is the saved meta plus ``step``,
    ``format_version``, ``reverie_version`` and ``created``. ``verify`` checks
    the weights' SHA-256. Tensors are placed on ``device``.
    """
    path = Path(path)
    if path.is_dir():
        found = load_latest(path, expected_agent, device=device, warn=lambda m: warnings.warn(m, stacklevel=3))
        if found is None:
            raise CheckpointError(f"no complete checkpoint in {path}; train first or point at a checkpoint file")
        return found[0], found[1]
    if path.suffix == ".safetensors" and (m := _WEIGHTS.match(path.name)):
        path = path.with_name(f"ckpt-{m.group(1)}.json")
    elif path.suffix != ".json":
        raise CheckpointError(
            f"{path} is not a reverie checkpoint (expected a ckpt-*.json or ckpt-*.safetensors file; "
            "reverie never loads pickled .pt/.pth files)"
        )
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist (an interrupted save leaves no JSON); "
                              "resume from an earlier one")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise _corrupt(path, f"unreadable JSON: {e}") from None
    if not isinstance(record, dict) or record.get("format") != _FORMAT:
        what = f"a JSON {type(record).__name__}"
        if isinstance(record, dict):
            what += " with keys " + ", ".join(sorted(map(str, record))[:6])
        raise CheckpointError(
            f"{path} is not a reverie checkpoint ({what}, no 'format': '{_FORMAT}'); "
            "expected a ckpt-*.json written by reverie's save_checkpoint"
        )
    version = record.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format version {version!r}, newer than this reverie reads "
            f"({FORMAT_VERSION}); upgrade reverie"
        )
    agent = record.get("agent")
    if expected_agent is not None and agent != expected_agent:
        raise CheckpointError(
            f"checkpoint {path} belongs to agent {agent!r}, but {expected_agent!r} was expected; "
            "point at a checkpoint of the same agent or use a fresh run folder"
        )
    try:
        info = record["weights"]
        structure = record["structure"]
        if not _WEIGHTS.match(info["file"]):
            raise ValueError(info["file"])
        weights = path.with_name(info["file"])
    except (KeyError, TypeError, ValueError):
        raise _corrupt(path, "JSON lacks a valid weights record") from None
    if not weights.is_file():
        raise _corrupt(path, f"weights file {weights.name} is missing")
    size = weights.stat().st_size
    if size != info.get("bytes"):
        raise _corrupt(weights, f"{size} bytes on disk, {info.get('bytes')} recorded")
    if verify and _sha256(weights) != info.get("sha256"):
        raise _corrupt(weights, "SHA-256 does not match the recorded one")
    try:
        from safetensors.torch import load_file

        flat = load_file(str(weights), device=str(device))
    except Exception as e:  # safetensors raises its own error types for bad headers
        raise _corrupt(weights, f"{type(e).__name__}: {e}") from None
    try:
        state = join_state(flat, structure)
    except (KeyError, CheckpointError, TypeError, ValueError) as e:
        raise _corrupt(path, f"structure does not match the weights: {e}") from None
    meta = dict(record.get("meta") or {})
    meta.update(
        step=record["step"],
        format_version=version,
        reverie_version=record.get("reverie_version"),
        created=record.get("created"),
    )
    return state, meta


def _corrupt(path: Path, why: str) -> CheckpointDamaged:
    return CheckpointDamaged(
        f"checkpoint {path} is damaged: corrupt or truncated ({why}); delete it or resume from an earlier one",
        path, why)
