"""The replay store: chunked, crash-safe experience with fixed-length sequence sampling.

Data flow: :meth:`Replay.add` receives one step from each of ``N`` streams
(env workers), every value ``[N, *shape]``. Each stream fills its own
in-progress chunk; when a chunk holds ``chunk_size`` steps it is complete,
is written to ``directory`` at once (atomically, see
:mod:`reverie.replay.chunkfile`) and the stream starts a new chunk linked to
it. :meth:`Replay.flush` also writes the in-progress chunks; their files are
replaced (same name) as they grow, so nothing is ever stored twice.

Sampling draws fixed-length sequences ``[B, T, ...]`` that run across
episode boundaries and chunk boundaries but only along one stream; the
stored ``is_first`` flags tell the model where to reset. The first step of a
sampled sequence may lie in the middle of an episode (``is_first`` False).

What is kept when ``len(replay)`` would exceed ``capacity`` steps: whole
*complete* chunks are evicted (in-progress chunks never are) until it fits,
so ``len(replay) <= capacity`` after every :meth:`add`.

- ``eviction="fifo"``: the chunk with the earliest start goes first, and
  its file is deleted.
- ``eviction="reservoir"``: every chunk gets an i.i.d. uniform key when it is
  started and the complete chunk with the largest key goes (file deleted).
  The kept complete chunks are therefore a uniform random subset of all
  complete chunks ever added (exactly so while all chunks have
  ``chunk_size`` steps; chunks cut short by a flush before a restart count
  as one chunk each), plus the in-progress chunks.

Not thread-safe: call it from one thread (the training loop).
"""

from __future__ import annotations

import heapq
import math
import warnings
from pathlib import Path

import numpy as np

from reverie.replay import chunkfile, selectors
from reverie.replay.chunkfile import ChunkMeta, ChunkUnreadable
from reverie.replay.errors import ReplayError, ReplayFormatError

EVICTIONS = ("fifo", "reservoir")
SAMPLINGS = ("uniform", "recency")
Schema = dict[str, tuple[tuple[int, ...], np.dtype]]


class Replay:
    """Experience replay of ``N`` parallel streams, stored in chunks on disk.

    Args:
        directory: folder for chunk files (created if missing); chunk files
            already in it are loaded, so a resumed run gets its replay back.
            ``None`` keeps everything in memory only. Give the replay a
            folder of its own: every ``*.npz`` in it must be a chunk.
        capacity: most steps kept (all streams together).
        seq_len: ``T``, steps per sampled sequence.
        chunk_size: steps per stream per chunk file.
        eviction: ``"fifo"`` or ``"reservoir"`` (see the module docstring).
        sampling: ``"uniform"`` over all valid sequence starts, or
            ``"recency"``: a start in a chunk started ``g`` chunk generations
            ago is drawn with weight ``(1 + g) ** -recency_exponent``.
        seed: seeds sampling and reservoir keys; same seed and same calls give
            the same batches.
        recency_exponent: power-law exponent of ``sampling="recency"``.
        compress: write chunks with zlib (smaller files, slower writes).
    """

    def __init__(
        self,
        directory: str | Path | None,
        capacity: int,
        seq_len: int,
        chunk_size: int = 256,
        eviction: str = "fifo",
        sampling: str = "uniform",
        seed: int = 0,
        recency_exponent: float = 1.0,
        compress: bool = False,
    ) -> None:
        for name, value in (("capacity", capacity), ("seq_len", seq_len), ("chunk_size", chunk_size)):
            if int(value) != value or value < 1:
                raise ReplayError(f"Replay {name} must be a positive integer, got {value!r}")
        if eviction not in EVICTIONS:
            raise ReplayError(f"Replay eviction must be one of {EVICTIONS}, got {eviction!r}")
        if sampling not in SAMPLINGS:
            raise ReplayError(f"Replay sampling must be one of {SAMPLINGS}, got {sampling!r}")
        if not recency_exponent > 0:
            raise ReplayError(f"Replay recency_exponent must be positive, got {recency_exponent!r}")
        self.capacity = int(capacity)
        self.seq_len = int(seq_len)
        self.chunk_size = int(chunk_size)
        self.eviction = eviction
        self.sampling = sampling
        self.recency_exponent = float(recency_exponent)
        self.compress = compress
        self.directory = None if directory is None else Path(directory)
        sample_seed, key_seed = np.random.SeedSequence(seed).spawn(2)
        self._sample_rng = np.random.default_rng(sample_seed)
        self._key_rng = np.random.default_rng(key_seed)

        self._schema: Schema | None = None
        self._data: dict[str, np.ndarray] = {}  # key -> [S, W, *shape]
        self._width = self.chunk_size  # W; larger if loaded chunks are longer
        self._slots = 0  # S
        self._free: list[int] = []  # heap of free slot rows
        self._ids: dict[tuple[int, int], int] = {}  # (birth, stream) -> slot
        self._meta_arrays()
        self._num_streams = 0  # N, fixed by the first add
        self._loaded_streams = 1  # N of the newest loaded chunk, for recency before the first add
        self._current = np.zeros(0, np.int64)  # [N] in-progress slot per stream, -1 between chunks
        self._last_birth = np.zeros(0, np.int64)  # [N] birth of each stream's latest chunk, -1 none
        self._stream_steps = np.zeros(0, np.int64)  # [N] steps each stream has added
        self._clock = 0  # steps added over all streams and sessions; orders and names chunks
        self._size = 0
        self._cache: tuple[np.ndarray, np.ndarray] | None = None  # (counts, cumulative mass)
        self._counters = dict.fromkeys(
            ("steps_added", "episodes_added", "chunks_written", "chunks_evicted", "chunks_loaded", "files_skipped"),
            0,
        )
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._load()

    # ------------------------------------------------------------------ public API

    def add(self, step: dict[str, np.ndarray]) -> None:
        """Append one step of every stream.

        Args:
            step: ``{key: [N, *shape]}`` with ``is_first`` among the keys;
                row ``i`` belongs to stream ``i``, and calls come in time order.

        Side effects: writes each chunk that this step completes to the
        folder and may evict (and delete) old chunks.
        """
        step = {key: np.asarray(value) for key, value in step.items()}
        streams = self._check_step(step)
        if self._num_streams == 0:
            self._start_streams(streams)
        starting = np.flatnonzero(self._current < 0)
        for stream in starting:  # once per chunk_size steps, not per element
            self._current[stream] = self._open_chunk(int(stream))
        slots = self._current.copy()
        fill = self._length[slots]
        for key, value in step.items():
            self._data[key][slots, fill] = value
        is_first = step["is_first"].astype(bool)
        self._length[slots] += 1
        self._first_count[slots] += is_first
        self._stream_steps += 1
        self._size += streams
        self._clock += streams
        self._counters["steps_added"] += streams
        self._counters["episodes_added"] += int(is_first.sum())
        complete = self._length[slots] >= self.chunk_size  # [N]; streams move in lockstep
        done = slots[complete]
        self._in_progress[done] = False
        self._current[complete] = -1
        self._evict()
        for slot in done:
            if self._used[slot]:  # a reservoir may evict a chunk the moment it completes
                self._write(int(slot))
        self._cache = None

    def sample(self, batch_size: int) -> dict[str, np.ndarray]:
        """Draw ``batch_size`` sequences (with replacement).

        Returns:
            ``{key: [B, T, *shape]}`` fresh arrays; along ``T`` the steps are
            consecutive in one stream, possibly across episodes (see
            ``is_first``) and chunks.
        """
        if int(batch_size) != batch_size or batch_size < 1:
            raise ReplayError(f"Replay.sample batch_size must be a positive integer, got {batch_size!r}")
        counts, mass = self._sampling_table()
        if mass.size == 0 or mass[-1] <= 0:
            raise ReplayError(
                f"the replay holds no sequence of seq_len={self.seq_len} steps yet "
                f"({self._size} steps in {int(self._used.sum())} chunks); collect more before sampling"
            )
        if self.sampling == "uniform":
            slot, offset = selectors.draw_uniform(counts, mass, self._sample_rng, int(batch_size))
        else:
            slot, offset = selectors.draw_weighted(counts, mass, self._sample_rng, int(batch_size))
        index = selectors.gather_index(slot, offset, self.seq_len, self._length, self._next, self._width)
        return {key: array.reshape(-1, *array.shape[2:])[index] for key, array in self._data.items()}

    def flush(self) -> None:
        """Write every chunk not yet on disk in full (the in-progress ones); adding may go on after."""
        if self.directory is None:
            return
        for slot in np.flatnonzero(self._used & (self._written < self._length)):
            self._write(int(slot))

    def __len__(self) -> int:
        """Steps stored, all streams together."""
        return self._size

    @property
    def num_sequences(self) -> int:
        """Distinct sequences of ``seq_len`` steps that :meth:`sample` can draw."""
        counts, _ = self._sampling_table()
        return int(counts.sum())

    @property
    def stats(self) -> dict[str, int]:
        """Figures for logging: stored steps, chunks, sequences, episode starts and lifetime counters."""
        return {
            "steps": self._size,
            "chunks": int(self._used.sum()),
            "chunks_in_progress": int((self._used & self._in_progress).sum()),
            "sequences": self.num_sequences,
            "episode_starts": int(self._first_count[self._used].sum()),
            "streams": self._num_streams,
            "clock": self._clock,
            **self._counters,
        }

    def chunks(self):
        """Yield the stored chunks oldest first, each ``{key: [L, *shape]}`` (copies)."""
        used = np.flatnonzero(self._used)
        for slot in used[np.lexsort((self._stream[used], self._birth[used]))]:
            length = self._length[slot]
            yield {key: array[slot, :length].copy() for key, array in self._data.items()}

    def __repr__(self) -> str:
        where = "memory" if self.directory is None else str(self.directory)
        return (
            f"Replay({where}, steps={self._size}/{self.capacity}, seq_len={self.seq_len}, "
            f"chunk_size={self.chunk_size}, eviction={self.eviction!r}, sampling={self.sampling!r})"
        )

    # ------------------------------------------------------------------ slot table

    def _meta_arrays(self) -> None:
        """Per-slot bookkeeping, each ``[S]`` (grown together by :meth:`_grow`)."""
        self._length = np.zeros(0, np.int64)
        self._next = np.zeros(0, np.int64)  # following slot of the same stream, -1 none
        self._prev = np.zeros(0, np.int64)  # preceding slot of the same stream, -1 none
        self._birth = np.zeros(0, np.int64)
        self._stream = np.zeros(0, np.int64)
        self._prev_birth = np.zeros(0, np.int64)
        self._offset = np.zeros(0, np.int64)  # stream steps before this chunk
        self._streams_of = np.zeros(0, np.int64)  # N of the session that made the chunk
        self._key = np.zeros(0, np.float64)
        self._written = np.zeros(0, np.int64)  # steps in its file, -1 no file
        self._first_count = np.zeros(0, np.int64)
        self._used = np.zeros(0, bool)
        self._in_progress = np.zeros(0, bool)

    def _grow(self, slots: int) -> None:
        """Make room for at least ``slots`` rows; new rows are free."""
        old = self._slots
        new = max(slots, 2 * old)
        for key, array in self._data.items():
            # np.empty reserves address space; pages cost memory once written.
            bigger = np.empty((new, self._width, *array.shape[2:]), array.dtype)
            bigger[:old] = array
            self._data[key] = bigger
        fills = {"_next": -1, "_prev": -1, "_prev_birth": -1, "_written": -1}
        for name in ("_length", "_next", "_prev", "_birth", "_stream", "_prev_birth", "_offset",
                     "_streams_of", "_key", "_written", "_first_count", "_used", "_in_progress"):
            array = getattr(self, name)
            extra = np.full(new - old, fills.get(name, 0), array.dtype)
            setattr(self, name, np.concatenate([array, extra]))
        for row in range(old, new):
            heapq.heappush(self._free, row)
        self._slots = new

    def _take_slot(self) -> int:
        if not self._free:
            self._grow(self._slots + 1)
        return heapq.heappop(self._free)

    def _set_schema(self, schema: Schema, width: int) -> None:
        self._schema = schema
        self._width = width
        self._data = {key: np.empty((0, width, *shape), dtype) for key, (shape, dtype) in schema.items()}
        self._grow(math.ceil(self.capacity / self.chunk_size) + 1)

    def _link(self, slot: int) -> None:
        """Join ``slot`` to the stored chunk before it in its stream, if that one is back to back."""
        before = self._ids.get((int(self._prev_birth[slot]), int(self._stream[slot])))
        if before is not None and self._offset[before] + self._length[before] == self._offset[slot]:
            self._next[before] = slot
            self._prev[slot] = before

    # ------------------------------------------------------------------ adding

    def _check_step(self, step: dict[str, np.ndarray]) -> int:
        """Validate one add (fixing the schema on the very first); returns ``N``."""
        bad = [key for key in step if key.startswith("__")]
        if bad or "is_first" not in step:
            raise ReplayError(
                f"a replay step needs an 'is_first' key and no keys starting with '__', got {sorted(step)}"
            )
        scalars = [key for key, value in step.items() if value.ndim < 1]
        if scalars:
            raise ReplayError(f"step values must be [num_streams, ...], but {scalars} are scalars")
        if self._schema is None:
            self._set_schema(chunkfile.schema_of(step, leading=1), self.chunk_size)
        if set(step) != set(self._schema):
            raise ReplayError(
                f"step keys {sorted(step)} differ from the keys this replay stores {sorted(self._schema)}"
                + ("" if self.directory is None else f" (in {self.directory}); use a fresh folder for new data")
            )
        sizes = {key: value.shape[0] for key, value in step.items()}
        streams = next(iter(sizes.values()))
        if len(set(sizes.values())) != 1 or streams < 1:
            raise ReplayError(f"every step value must be [num_streams, ...] with one num_streams, got {sizes}")
        if self._num_streams and streams != self._num_streams:
            raise ReplayError(f"this replay receives {self._num_streams} streams per add, got {streams}")
        for key, value in step.items():
            shape, dtype = self._schema[key]
            if value.shape[1:] != shape or not np.can_cast(value.dtype, dtype, "same_kind"):
                raise ReplayError(
                    f"step key {key!r} is {value.shape[1:]} {value.dtype} per stream but the replay stores "
                    f"{shape} {np.dtype(dtype).name}"
                    + ("" if self.directory is None else f" (in {self.directory}); use a fresh folder for new data")
                )
        return streams

    def _start_streams(self, streams: int) -> None:
        if self.capacity < streams * self.chunk_size:
            raise ReplayError(
                f"Replay capacity={self.capacity} cannot hold one in-progress chunk per stream "
                f"({streams} streams x chunk_size={self.chunk_size}); raise capacity or lower chunk_size"
            )
        self._num_streams = streams
        self._current = np.full(streams, -1, np.int64)
        self._last_birth = np.full(streams, -1, np.int64)
        self._stream_steps = np.zeros(streams, np.int64)

    def _open_chunk(self, stream: int) -> int:
        slot = self._take_slot()
        self._length[slot] = 0
        self._birth[slot] = self._clock
        self._stream[slot] = stream
        self._prev_birth[slot] = self._last_birth[stream]
        self._offset[slot] = self._stream_steps[stream]
        self._streams_of[slot] = self._num_streams
        self._key[slot] = self._key_rng.random()
        self._written[slot] = -1
        self._first_count[slot] = 0
        self._used[slot] = True
        self._in_progress[slot] = True
        self._ids[(self._clock, stream)] = slot
        self._last_birth[stream] = self._clock
        self._link(slot)
        return slot

    # ------------------------------------------------------------------ eviction and files

    def _evict(self) -> None:
        while self._size > self.capacity:
            evictable = self._used & ~self._in_progress
            if not evictable.any():
                return  # only in-progress data left; _start_streams rules this out for new data
            if self.eviction == "fifo":
                victim = selectors.fifo_victim(evictable, self._birth, self._stream)
            else:
                victim = selectors.reservoir_victim(evictable, self._key)
            self._remove(victim)

    def _remove(self, slot: int) -> None:
        if self._written[slot] >= 0 and self.directory is not None:
            path = self.directory / chunkfile.chunk_name(int(self._birth[slot]), int(self._stream[slot]))
            path.unlink(missing_ok=True)
        if self._prev[slot] >= 0:
            self._next[self._prev[slot]] = -1
        if self._next[slot] >= 0:
            self._prev[self._next[slot]] = -1
        del self._ids[(int(self._birth[slot]), int(self._stream[slot]))]
        self._size -= int(self._length[slot])
        self._length[slot] = 0
        self._next[slot] = self._prev[slot] = -1
        self._used[slot] = self._in_progress[slot] = False
        self._first_count[slot] = 0
        self._written[slot] = -1
        heapq.heappush(self._free, slot)
        self._counters["chunks_evicted"] += 1
        self._cache = None

    def _write(self, slot: int) -> None:
        if self.directory is None:
            return
        length = int(self._length[slot])
        meta = ChunkMeta(
            birth=int(self._birth[slot]),
            stream=int(self._stream[slot]),
            prev_birth=int(self._prev_birth[slot]),
            offset=int(self._offset[slot]),
            stop=self._clock,
            streams=int(self._streams_of[slot]),
            key=float(self._key[slot]),
        )
        data = {key: array[slot, :length] for key, array in self._data.items()}
        chunkfile.write_chunk(self.directory, meta, data, self.compress)
        self._written[slot] = length
        self._counters["chunks_written"] += 1

    def _load(self) -> None:
        """Load every chunk file in the folder (skipping unreadable ones), then evict down to capacity."""
        leftovers = sorted(self.directory.glob(f".*{chunkfile.TEMP_SUFFIX}"))
        if leftovers:
            warnings.warn(
                f"{len(leftovers)} temporary file(s) from an interrupted write in {self.directory} "
                f"(e.g. {leftovers[0].name}) are ignored and left in place",
                stacklevel=3,
            )
        records: list[tuple[ChunkMeta, dict[str, np.ndarray]]] = []
        schema_source: tuple[Path, Schema] | None = None
        for path in sorted(self.directory.glob("*.npz")):
            birth = chunkfile.birth_from_name(path.name)
            if birth is not None:  # never reuse a name on disk, even that of a skipped file
                self._clock = max(self._clock, birth + 1)
            try:
                arrays = chunkfile.read_chunk(path)
            except ChunkUnreadable as error:
                warnings.warn(
                    f"skipping unreadable replay chunk {path} ({error}); the file is left in place",
                    stacklevel=3,
                )
                self._counters["files_skipped"] += 1
                continue
            meta, data = chunkfile.split_chunk(path, arrays)
            schema = chunkfile.schema_of(data, leading=1)
            if schema_source is None:
                schema_source = (path, schema)
            elif schema != schema_source[1]:
                raise ReplayFormatError(
                    f"replay chunk files in {self.directory} disagree: {schema_source[0].name} stores "
                    f"{chunkfile.describe_schema(schema_source[1])} but {path.name} stores "
                    f"{chunkfile.describe_schema(schema)}; move the foreign files out of the folder"
                )
            records.append((meta, data))
        if not records:
            return
        records.sort(key=lambda record: (record[0].birth, record[0].stream))
        longest = max(next(iter(data.values())).shape[0] for _, data in records)
        self._set_schema(schema_source[1], max(self.chunk_size, longest))
        for meta, data in records:
            if (meta.birth, meta.stream) in self._ids:
                warnings.warn(
                    f"skipping a second copy of replay chunk {meta.name} in {self.directory}", stacklevel=3
                )
                self._counters["files_skipped"] += 1
                continue
            self._insert_loaded(meta, data)
        self._loaded_streams = max(1, records[-1][0].streams)
        self._evict()
        self._cache = None

    def _insert_loaded(self, meta: ChunkMeta, data: dict[str, np.ndarray]) -> None:
        slot = self._take_slot()
        length = next(iter(data.values())).shape[0]
        for key, value in data.items():
            self._data[key][slot, :length] = value
        self._length[slot] = length
        self._birth[slot] = meta.birth
        self._stream[slot] = meta.stream
        self._prev_birth[slot] = meta.prev_birth
        self._offset[slot] = meta.offset
        self._streams_of[slot] = meta.streams
        self._key[slot] = meta.key
        self._written[slot] = length
        self._first_count[slot] = int(np.count_nonzero(data["is_first"]))
        self._used[slot] = True
        self._in_progress[slot] = False
        self._ids[(meta.birth, meta.stream)] = slot
        self._link(slot)  # records come in birth order, so the predecessor is already placed
        self._size += length
        self._clock = max(self._clock, meta.stop, meta.birth + 1)
        self._counters["chunks_loaded"] += 1

    # ------------------------------------------------------------------ sampling table

    def _sampling_table(self) -> tuple[np.ndarray, np.ndarray]:
        """``(counts [S], cumulative mass [S])``, recomputed only after the store changed."""
        if self._cache is None:
            counts = selectors.sequence_counts(self._length, self._next, self.seq_len)
            if self.sampling == "uniform":
                mass = np.cumsum(counts)
            else:
                generation = self.chunk_size * (self._num_streams or self._loaded_streams)
                weights = selectors.recency_weights(
                    counts, self._birth, self._clock, generation, self.recency_exponent
                )
                mass = np.cumsum(weights)
            self._cache = (counts, mass)
        return self._cache
