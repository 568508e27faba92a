"""Reading a replay folder back: the chunk files a run wrote, checked before any is placed.

:func:`read_folder` is the reading half of a reload (:class:`reverie.replay.store.Replay` places and
evicts what it returns): it removes the temporary files of interrupted writes when the caller is the
folder's only writer (warns and leaves them otherwise), reads the replay's clock, and reads every chunk
file, skipping unreadable ones with a warning and refusing in one sentence a folder whose files store
different keys, shapes or dtypes. Nothing is placed or deleted before every file has been checked, so a
foreign file stops the reload before a single chunk file is lost.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np

from reverie.replay import chunkfile
from reverie.replay.chunkfile import ChunkMeta, ChunkUnreadable
from reverie.replay.errors import ReplayFormatError
from reverie.replay.slots import Schema

__all__ = ["CLOCK_FILE", "read_folder"]

#: Where :meth:`Replay.flush` records the replay's clock, beside the chunk files.
CLOCK_FILE = "clock.json"


def read_folder(directory: Path, owner: bool
                ) -> tuple[int, list[tuple[ChunkMeta, dict[str, np.ndarray]]], Schema | None, int]:
    """``(clock, [(meta, data)] in birth order, the shared schema or None if no chunk was read, files
    skipped)`` of the replay folder ``directory``; ``owner``: the caller is its only writer."""
    leftovers = sorted(directory.glob(f".*{chunkfile.TEMP_SUFFIX}"))
    if leftovers and owner:   # the only writer: nobody else can be half-way through a write
        for path in leftovers:
            path.unlink(missing_ok=True)
    elif leftovers:
        warnings.warn(
            f"{len(leftovers)} temporary file(s) from an interrupted write in {directory} "
            f"(e.g. {leftovers[0].name}) are ignored and left in place",
            stacklevel=4,
        )
    clock = 0
    try:
        clock = int(json.loads((directory / CLOCK_FILE).read_text())["clock"])
    except (OSError, ValueError, KeyError, TypeError):
        pass   # none yet (or damaged): the chunk files' own clocks below
    records: list[tuple[ChunkMeta, dict[str, np.ndarray]]] = []
    schema_source: tuple[Path, Schema] | None = None
    skipped = 0
    for path in sorted(directory.glob("*.npz")):
        birth = chunkfile.birth_from_name(path.name)
        if birth is not None:  # never reuse a name on disk, even that of a skipped file
            clock = max(clock, birth + 1)
        try:
            arrays = chunkfile.read_chunk(path)
        except ChunkUnreadable as error:
            warnings.warn(f"skipping unreadable replay chunk {path} ({error}); the file is left in place",
                          stacklevel=4)
            skipped += 1
            continue
        meta, data = chunkfile.split_chunk(path, arrays)
        schema = chunkfile.schema_of(data, leading=1)
        if schema_source is None:
            schema_source = (path, schema)
        elif schema != schema_source[1]:
            raise ReplayFormatError(
                f"replay chunk files in {directory} disagree: {schema_source[0].name} stores "
                f"{chunkfile.describe_schema(schema_source[1])} but {path.name} stores "
                f"{chunkfile.describe_schema(schema)}; move the foreign files out of the folder"
            )
        records.append((meta, data))
    records.sort(key=lambda record: (record[0].birth, record[0].stream))
    return clock, records, None if schema_source is None else schema_source[1], skipped
