"""The in-memory table of chunks: one row ("slot") per chunk, stream links between rows.

Row ``s`` of every data array ``[S, W, *shape]`` holds one chunk of
``length[s] <= W`` steps; the per-slot bookkeeping arrays are all ``[S]``.
Keeping all chunks in one array per key lets sampling gather a whole batch
with one fancy index per key (see :func:`reverie.replay.selectors.gather_index`).
Free rows are reused lowest first, so the layout, and with it sampling, is
deterministic.
"""

from __future__ import annotations

import heapq

import numpy as np

from reverie.replay.chunkfile import ChunkMeta

Schema = dict[str, tuple[tuple[int, ...], np.dtype]]

# Per-slot arrays and the value a free slot holds.
_FIELDS: dict[str, tuple[type, int | float | bool]] = {
    "length": (np.int64, 0),  # steps stored
    "next": (np.int64, -1),  # following slot of the same stream, -1 none
    "prev": (np.int64, -1),  # preceding slot of the same stream, -1 none
    "birth": (np.int64, 0),  # replay clock at the chunk's first step
    "stream": (np.int64, 0),  # stream index in the session that wrote it
    "prev_birth": (np.int64, -1),  # birth of the stream's previous chunk, -1 none
    "offset": (np.int64, 0),  # steps of the stream before this chunk
    "streams": (np.int64, 0),  # number of streams of the session that wrote it
    "key": (np.float64, 0.0),  # reservoir priority
    "written": (np.int64, -1),  # steps in its file, -1 no file
    "first_count": (np.int64, 0),  # is_first flags among its steps
    "used": (bool, False),
    "in_progress": (bool, False),
}


class SlotTable:
    """Chunk rows plus bookkeeping; knows nothing of files, eviction policy or sampling."""

    def __init__(self) -> None:
        self.schema: Schema | None = None
        self.data: dict[str, np.ndarray] = {}  # key -> [S, W, *shape]
        self.width = 0  # W
        self.size = 0  # S
        self._free: list[int] = []  # heap of free rows
        self._ids: dict[tuple[int, int], int] = {}  # (birth, stream) -> slot
        for name, (dtype, _) in _FIELDS.items():
            setattr(self, name, np.zeros(0, dtype))
        # Declared for readers and type checkers; _FIELDS creates them.
        self.length: np.ndarray
        self.next: np.ndarray
        self.prev: np.ndarray
        self.birth: np.ndarray
        self.stream: np.ndarray
        self.prev_birth: np.ndarray
        self.offset: np.ndarray
        self.streams: np.ndarray
        self.key: np.ndarray
        self.written: np.ndarray
        self.first_count: np.ndarray
        self.used: np.ndarray
        self.in_progress: np.ndarray

    def allocate(self, schema: Schema, width: int, slots: int) -> None:
        """Fix the step schema and row width ``W`` and make room for ``slots`` chunks."""
        self.schema = schema
        self.width = width
        self.data = {key: np.empty((0, width, *shape), dtype) for key, (shape, dtype) in schema.items()}
        self._grow(slots)

    def _grow(self, slots: int) -> None:
        old = self.size
        new = max(slots, 2 * old)
        for key, array in self.data.items():
            # np.empty only reserves address space; pages cost memory once written.
            bigger = np.empty((new, self.width, *array.shape[2:]), array.dtype)
            bigger[:old] = array
            self.data[key] = bigger
        for name, (dtype, fill) in _FIELDS.items():
            setattr(self, name, np.concatenate([getattr(self, name), np.full(new - old, fill, dtype)]))
        for row in range(old, new):
            heapq.heappush(self._free, row)
        self.size = new

    def open(self, meta: ChunkMeta, in_progress: bool) -> int:
        """Take a free row for the chunk ``meta`` (empty), link it after its stored predecessor."""
        if not self._free:
            self._grow(self.size + 1)
        slot = heapq.heappop(self._free)
        self.birth[slot] = meta.birth
        self.stream[slot] = meta.stream
        self.prev_birth[slot] = meta.prev_birth
        self.offset[slot] = meta.offset
        self.streams[slot] = meta.streams
        self.key[slot] = meta.key
        self.used[slot] = True
        self.in_progress[slot] = in_progress
        self._ids[(meta.birth, meta.stream)] = slot
        return slot

    def link(self, slot: int) -> None:
        """Join ``slot`` to the stored chunk before it in its stream, if the two are back to back.

        Call once the slot's length is final or, for a growing chunk, right after opening it.
        """
        before = self._ids.get((int(self.prev_birth[slot]), int(self.stream[slot])))
        if before is not None and self.offset[before] + self.length[before] == self.offset[slot]:
            self.next[before] = slot
            self.prev[slot] = before

    def holds(self, birth: int, stream: int) -> bool:
        return (birth, stream) in self._ids

    def release(self, slot: int) -> None:
        """Forget the chunk in ``slot`` and cut its links (its neighbours stay, unlinked)."""
        if self.prev[slot] >= 0:
            self.next[self.prev[slot]] = -1
        if self.next[slot] >= 0:
            self.prev[self.next[slot]] = -1
        del self._ids[(int(self.birth[slot]), int(self.stream[slot]))]
        for name, (_, fill) in _FIELDS.items():
            getattr(self, name)[slot] = fill
        heapq.heappush(self._free, slot)

    def meta(self, slot: int, stop: int) -> ChunkMeta:
        """The chunk's file metadata, with ``stop`` the replay clock now."""
        return ChunkMeta(
            birth=int(self.birth[slot]),
            stream=int(self.stream[slot]),
            prev_birth=int(self.prev_birth[slot]),
            offset=int(self.offset[slot]),
            stop=stop,
            streams=int(self.streams[slot]),
            key=float(self.key[slot]),
        )

    def rows(self, slot: int) -> dict[str, np.ndarray]:
        """Views ``{key: [L, *shape]}`` of the chunk's stored steps."""
        length = self.length[slot]
        return {key: array[slot, :length] for key, array in self.data.items()}

    def oldest_first(self) -> np.ndarray:
        """Used slots ordered by birth, then stream."""
        used = np.flatnonzero(self.used)
        return used[np.lexsort((self.stream[used], self.birth[used]))]
