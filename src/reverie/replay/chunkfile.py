"""One replay chunk on disk: its name, its metadata and its crash-safe writing.

A chunk is ``L`` consecutive steps of one stream (one environment worker),
stored as an uncompressed (or compressed) ``.npz`` with one array
``[L, *shape]`` per step key plus two metadata arrays (few members keep
loading fast): ``__key__``, the chunk's reservoir priority (float64, uniform
in [0, 1)), and ``__meta__``, int64 ``[7]`` holding :data:`META_FIELDS`:

- ``format``: file format version (:data:`FORMAT_VERSION`);
- ``birth``: the replay clock (steps added over all streams and sessions)
  when the chunk's first step was added; with ``stream`` it names the chunk
  uniquely, so re-writing a growing chunk replaces its file;
- ``stream``: index of the stream within the session that wrote it;
- ``prev_birth``: ``birth`` of the previous chunk of the same stream (-1 if
  this chunk starts the stream); sequences may run across that link;
- ``offset``: steps of this stream stored before this chunk, so a link is
  only followed when the two chunks really are back to back in time;
- ``stop``: the replay clock when the file was written;
- ``streams``: how many streams the writing session had.

Files are written to a hidden temporary name in the same folder, fsynced,
then moved over the final name with :func:`os.replace`, and the folder is
fsynced, so a reader sees either the old complete file or the new one.
"""

from __future__ import annotations

import os
import re
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from reverie.failpoints import failpoint
from reverie.io import fsync_directory
from reverie.replay.errors import ReplayFormatError

FORMAT_VERSION = 1
META_FIELDS = ("format", "birth", "stream", "prev_birth", "offset", "stop", "streams")
META_KEYS = ("__meta__", "__key__")
_NAME = re.compile(r"^chunk-(\d+)-(\d+)\.npz$")
TEMP_SUFFIX = ".tmp"


class ChunkUnreadable(Exception):
    """The file cannot be parsed at all (truncated, half-written, bit rot)."""


@dataclass(frozen=True)
class ChunkMeta:
    """Identity and bookkeeping of one chunk (see the module docstring)."""

    birth: int
    stream: int
    prev_birth: int
    offset: int
    stop: int
    streams: int
    key: float

    @property
    def name(self) -> str:
        return chunk_name(self.birth, self.stream)


def chunk_name(birth: int, stream: int) -> str:
    """File name of the chunk born at clock ``birth`` in stream ``stream``; sorts by birth."""
    return f"chunk-{birth:012d}-{stream:04d}.npz"


def birth_from_name(name: str) -> int | None:
    """The birth encoded in a chunk file name, or None if the name is not ours."""
    match = _NAME.match(name)
    return int(match.group(1)) if match else None


def write_chunk(
    directory: Path, meta: ChunkMeta, data: dict[str, np.ndarray], compress: bool = False
) -> Path:
    """Atomically write ``data`` (each ``[L, *shape]``) and ``meta`` as ``directory/meta.name``."""
    final = directory / meta.name
    temp = directory / f".{meta.name}.{os.getpid()}{TEMP_SUFFIX}"
    arrays = dict(data)
    arrays["__meta__"] = np.array(
        [FORMAT_VERSION, meta.birth, meta.stream, meta.prev_birth, meta.offset, meta.stop, meta.streams],
        np.int64,
    )
    arrays["__key__"] = np.float64(meta.key)
    save = np.savez_compressed if compress else np.savez
    try:
        with open(temp, "wb") as handle:
            save(handle, allow_pickle=False, **arrays)   # chunks are read without unpickling
            handle.flush()
            os.fsync(handle.fileno())
        failpoint("replay.chunk_written")
        os.replace(temp, final)
    except BaseException:
        # Only our own temporary file is removed; the previous version of the
        # chunk (if any) is still intact under its final name.
        temp.unlink(missing_ok=True)
        raise
    fsync_directory(directory)
    return final


def read_chunk(path: Path) -> dict[str, np.ndarray]:
    """Every array in the ``.npz`` at ``path``, read fully (so CRC errors surface here).

    Raises :class:`ChunkUnreadable` if the file cannot be parsed at all.
    """
    try:
        # Opening the file ourselves closes it on every path, errors included.
        with open(path, "rb") as handle:
            loaded = np.load(handle, allow_pickle=False)
            if not isinstance(loaded, np.lib.npyio.NpzFile):
                # A bare .npy under an .npz name: readable, but not a chunk.
                raise ReplayFormatError(
                    f"{path} is a single .npy array, not a reverie replay chunk; "
                    "move it out of the replay folder"
                )
            with loaded as npz:
                return {name: npz[name] for name in npz.files}
    except ReplayFormatError:
        raise
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError, KeyError) as error:
        raise ChunkUnreadable(f"{type(error).__name__}: {error}") from error


def split_chunk(path: Path, arrays: dict[str, np.ndarray]) -> tuple[ChunkMeta, dict[str, np.ndarray]]:
    """Separate metadata from step data and check the file really is one of our chunks.

    Returns ``(meta, data)`` with each data array ``[L, *shape]``, ``L >= 1``.
    Raises :class:`ReplayFormatError` naming ``path`` if it is not.
    """
    missing = [key for key in META_KEYS if key not in arrays]
    if missing or arrays["__meta__"].shape != (len(META_FIELDS),) or arrays["__key__"].shape != ():
        raise ReplayFormatError(
            f"{path} is not a reverie replay chunk (it lacks {', '.join(missing) or 'valid metadata'}); "
            "move foreign files out of the replay folder or give the replay its own folder"
        )
    fields = dict(zip(META_FIELDS, (int(value) for value in arrays["__meta__"])))
    if fields["format"] != FORMAT_VERSION:
        raise ReplayFormatError(
            f"{path} has replay chunk format {fields['format']}, this reverie reads format "
            f"{FORMAT_VERSION}; open it with the reverie version that wrote it"
        )
    data = {key: value for key, value in arrays.items() if not key.startswith("__")}
    lengths = {key: (value.shape[0] if value.ndim else None) for key, value in data.items()}
    if "is_first" not in data or len(set(lengths.values())) != 1 or None in lengths.values():
        raise ReplayFormatError(
            f"{path} is not a usable replay chunk: it needs 'is_first' and arrays of one common "
            f"length, but holds lengths {lengths}; move it out of the replay folder"
        )
    if data["is_first"].shape[0] < 1:
        raise ReplayFormatError(f"{path} is an empty replay chunk; move it out of the replay folder")
    del fields["format"]
    meta = ChunkMeta(**fields, key=float(arrays["__key__"]))
    return meta, data


def describe_schema(schema: dict[str, tuple[tuple[int, ...], np.dtype]]) -> str:
    """``{key: (shape, dtype)}`` as a short readable string for error messages."""
    parts = (f"{key}: {shape} {np.dtype(dtype).name}" for key, (shape, dtype) in sorted(schema.items()))
    return "{" + ", ".join(parts) + "}"


def schema_of(data: dict[str, np.ndarray], leading: int) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Per-step ``(shape, dtype)`` of each array after dropping ``leading`` batch/time dims."""
    return {key: (tuple(value.shape[leading:]), value.dtype) for key, value in data.items()}
