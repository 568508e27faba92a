"""The files of a checkpoint folder: their names, the weights file, the commit marker, listing and pruning.

``ckpt-<step>.safetensors`` (or ``ckpt-<step>-b.safetensors``) holds the
weights and ``ckpt-<step>.json`` commits them; a checkpoint counts as complete
when its JSON is a reverie commit marker and its weights file has the recorded
size. :func:`list_checkpoints` and :func:`latest_checkpoint` find the complete
ones; pruning keeps the newest (and pinned) ones and removes the debris of
killed saves.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import torch

from reverie.io import atomic_path

__all__ = ["FORMAT_VERSION", "latest_checkpoint", "list_checkpoints"]

#: Bumped when the file layout changes incompatibly; older readers refuse newer files.
FORMAT_VERSION = 1
_FORMAT = "reverie-checkpoint"
_NAME = re.compile(r"^ckpt-(\d+)\.json$")
_WEIGHTS = re.compile(r"^ckpt-(\d+)(?:-b)?\.safetensors$")


def _write_weights(path: Path, flat: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    seen: set[tuple[int, int]] = set()
    ready = {}
    for name, t in flat.items():
        t = t.detach().to("cpu")
        # safetensors refuses tensors that share storage (tied weights, views):
        # give every repeat its own copy.
        ptr = (t.untyped_storage().data_ptr(), t.untyped_storage().nbytes()) if t.numel() else None
        if ptr is not None and ptr in seen or not t.is_contiguous():
            t = t.clone(memory_format=torch.contiguous_format)
        elif ptr is not None:
            seen.add(ptr)
        ready[name] = t
    with atomic_path(path) as tmp:
        save_file(ready, str(tmp), metadata={"format": _FORMAT})


def _prune(directory: Path, keep: int | None) -> None:
    """Drop all but the newest ``keep`` complete checkpoints and the debris of killed saves."""
    complete = _complete(directory)
    for marker, record in complete[:-keep] if keep is not None else []:
        if record.get("pinned"):
            continue
        weights = marker.with_name(record["weights"]["file"])
        marker.unlink(missing_ok=True)  # un-commit first, then drop the weights
        weights.unlink(missing_ok=True)
    live = {record["weights"]["file"] for _, record in _complete(directory)}
    newest = _step_of(complete[-1][0]) if complete else -1
    for path in directory.iterdir():
        name = path.name
        if name.startswith(".ckpt-") and ".tmp-" in name:
            path.unlink(missing_ok=True)  # temp file of a killed save
        elif (m := _WEIGHTS.match(name)) and name not in live and int(m.group(1)) <= newest:
            path.unlink(missing_ok=True)  # weights no JSON refers to: killed save or replaced step


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _step_of(marker: Path) -> int:
    m = _NAME.match(marker.name)
    if m is None:
        raise ValueError(f"{marker.name} is not a checkpoint's commit marker (ckpt-<step>.json)")
    return int(m.group(1))


def _read_marker(marker: Path) -> dict[str, Any] | None:
    """The parsed JSON of a complete checkpoint, or None if it is torn, foreign or lacks weights."""
    try:
        record = json.loads(marker.read_text(encoding="utf-8"))
        if not isinstance(record, dict):
            return None
        if not _WEIGHTS.match(record["weights"]["file"]):
            return None
        weights = marker.with_name(record["weights"]["file"])
        if record.get("format") != _FORMAT or weights.stat().st_size != record["weights"]["bytes"]:
            return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return record


def _complete(directory: Path) -> list[tuple[Path, dict[str, Any]]]:
    """``(JSON path, its record)`` of the complete checkpoints in ``directory``, oldest step first."""
    if not directory.is_dir():
        return []
    found = [(p, _read_marker(p)) for p in directory.iterdir() if _NAME.match(p.name)]
    return sorted(((m, record) for m, record in found if record is not None), key=lambda mr: _step_of(mr[0]))


def list_checkpoints(directory: str | os.PathLike) -> list[Path]:
    """JSON paths of the complete checkpoints in ``directory``, oldest step first."""
    return [marker for marker, _ in _complete(Path(directory))]


def latest_checkpoint(directory: str | os.PathLike) -> Path | None:
    """JSON path of the newest complete checkpoint in ``directory``, or None if there is none.

    Torn saves (weights without JSON, temp files, a weights file whose size
    differs from the recorded one) are ignored.
    """
    complete = list_checkpoints(directory)
    return complete[-1] if complete else None
