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
- ``eviction="reservoir"``: every chunk gets a uniform key when it is
  started. Complete chunks may use ``capacity - N * chunk_size`` steps (the
  rest is reserved for the ``N`` in-progress chunks); beyond that the
  complete chunk with the largest key goes (file deleted). So the kept
  complete chunks are exactly the ``(capacity - N * chunk_size) //
  chunk_size`` chunks with the smallest keys among all complete chunks ever
  added, a uniform random subset of them, plus the in-progress chunks: the
  same distribution as Vitter's Algorithm R gives (every chunk seen is kept
  with equal chance), in the random-key form, which needs no count of the
  chunks seen. A chunk's key is a function of the seed and the chunk's name
  alone (:func:`reservoir_key`) and is stored in its file, so a resumed run
  keeps and drops exactly the chunks an uninterrupted one would.
  (Chunks cut short by a flush before a restart count as chunks too, which
  makes the subset uniform over chunks rather than exactly over steps.)

Not thread-safe: call it from one thread (the training loop).
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from reverie.io import atomic_write_text
from reverie.replay import chunkfile, selectors
from reverie.replay.chunkfile import ChunkMeta
from reverie.replay.reload import CLOCK_FILE, read_folder
from reverie.replay.errors import ReplayError
from reverie.replay.slots import Schema, SlotTable

EVICTIONS = ("fifo", "reservoir")
SAMPLINGS = ("uniform", "recency")


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
        owner: this process is the folder's only writer (the training loop,
            which holds the run folder's lock): temporary files of a killed
            write are removed on loading instead of being left in place.
        groups: balance every batch over ``groups`` groups of streams (stream
            ``i`` is in group ``i % groups``; a multitask run's tasks): each
            group gets an equal share, uniform over its own sequences (see
            :func:`~reverie.replay.selectors.draw_balanced`). 1: no groups.
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
        owner: bool = False,
        groups: int = 1,
    ) -> None:
        for name, value in (("capacity", capacity), ("seq_len", seq_len), ("chunk_size", chunk_size)):
            _check_positive_int(f"Replay {name}", value)
        if eviction not in EVICTIONS:
            raise ReplayError(f"Replay eviction must be one of {EVICTIONS}, got {eviction!r}")
        if sampling not in SAMPLINGS:
            raise ReplayError(f"Replay sampling must be one of {SAMPLINGS}, got {sampling!r}")
        _check_positive_int("Replay groups", groups)
        if groups > 1 and sampling != "uniform":
            raise ReplayError(f"Replay groups={groups} balances uniform sampling only, not sampling={sampling!r}")
        if not recency_exponent > 0:
            raise ReplayError(f"Replay recency_exponent must be positive, got {recency_exponent!r}")
        self.capacity = int(capacity)
        self.seq_len = int(seq_len)
        self.chunk_size = int(chunk_size)
        self.eviction = eviction
        self.sampling = sampling
        self.recency_exponent = float(recency_exponent)
        self.compress = compress
        self.owner = owner
        self.groups = int(groups)
        self.directory = None if directory is None else Path(directory)
        sample_seed, _ = np.random.SeedSequence(seed).spawn(2)
        self._sample_rng = np.random.default_rng(sample_seed)
        self._seed = int(seed)

        self._table = SlotTable()
        self._num_streams = 0  # N, fixed by the first add
        self._loaded_streams = 1  # N of the newest loaded chunk, for recency before the first add
        self._current = np.zeros(0, np.int64)  # [N] in-progress slot of each stream
        self._last_birth = np.zeros(0, np.int64)  # [N] birth of each stream's latest chunk, -1 none
        self._stream_steps = 0  # steps each stream has added (all equal: streams move in lockstep)
        self._fill = 0  # steps in each stream's in-progress chunk
        self._clock = 0  # steps added over all streams and sessions; orders and names chunks
        self._size = 0
        self._cache: tuple[np.ndarray, np.ndarray] | None = None  # (counts [S], cumulative mass [S])
        lifetime = ("steps_added", "episodes_added", "chunks_written", "chunks_evicted", "chunks_loaded")
        self._counters = dict.fromkeys((*lifetime, "files_skipped"), 0)
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._load(self.directory)

    # ------------------------------------------------------------------ public API

    def add(self, step: dict[str, np.ndarray]) -> None:
        """Append one step of every stream.

        Args:
            step: ``{key: [N, *shape]}`` with ``is_first`` among the keys;
                row ``i`` belongs to stream ``i``, and calls come in time order.

        Side effects: writes each chunk that this step completes to the
        folder and may evict (and delete) old chunks.
        """
        table = self._table
        step = {key: np.asarray(value) for key, value in step.items()}
        streams = self._check_step(step)
        if self._num_streams == 0:
            self._num_streams = streams
            self._current = np.full(streams, -1, np.int64)
            self._last_birth = np.full(streams, -1, np.int64)
        if self._fill == 0:  # streams move in lockstep, so they start chunks together
            for stream in range(streams):
                self._current[stream] = self._open_chunk(stream)
        slots = self._current.copy()  # [N]
        for key, value in step.items():
            table.data[key][slots, self._fill] = value
        self._fill += 1
        table.length[slots] = self._fill
        is_first = step["is_first"]
        starts = int(np.count_nonzero(is_first))
        if starts:
            table.first_count[slots] += is_first.astype(bool)
        self._stream_steps += 1
        self._size += streams
        self._clock += streams
        self._counters["steps_added"] += streams
        self._counters["episodes_added"] += starts
        self._cache = None
        if self._fill < self.chunk_size:
            self._evict()
            return
        table.in_progress[slots] = False
        self._fill = 0
        self._evict()
        for slot in slots:
            if table.used[slot]:  # a reservoir may evict a chunk the moment it completes
                self._write(int(slot))

    def sample(self, batch_size: int) -> dict[str, np.ndarray]:
        """Draw ``batch_size`` sequences (with replacement).

        Returns:
            ``{key: [B, T, *shape]}`` fresh arrays; along ``T`` the steps are
            consecutive in one stream, possibly across episodes (see
            ``is_first``) and chunks.
        """
        _check_positive_int("Replay.sample batch_size", batch_size)
        counts, mass = self._sampling_table()
        if mass.size == 0 or mass[-1] <= 0:
            raise ReplayError(
                f"the replay holds no sequence of seq_len={self.seq_len} steps yet "
                f"({self._size} steps in {int(self._table.used.sum())} chunks); collect more before sampling"
            )
        table = self._table
        if self.groups > 1:
            try:
                slot, offset = selectors.draw_balanced(counts, table.stream % self.groups, self.groups,
                                                       self._sample_rng, int(batch_size))
            except ValueError as err:
                raise ReplayError(f"the replay cannot balance a batch over {self.groups} groups of streams: "
                                  f"{err}; collect more before sampling") from None
        else:
            draw = selectors.draw_uniform if self.sampling == "uniform" else selectors.draw_weighted
            slot, offset = draw(counts, mass, self._sample_rng, int(batch_size))
        index = selectors.gather_index(slot, offset, self.seq_len, table.length, table.next, table.width)
        return {key: array.reshape(-1, *array.shape[2:])[index] for key, array in table.data.items()}

    def flush(self) -> None:
        """Write every chunk not yet on disk in full (the in-progress ones) and the replay's clock; adding may
        go on after."""
        if self.directory is None:
            return
        for slot in np.flatnonzero(self._table.used & (self._table.written < self._table.length)):
            self._write(int(slot))
        # The newest chunks may have been evicted (a reservoir drops new chunks as often as old ones), so the
        # files alone may understate the clock: a restart would name, and key, new chunks differently.
        atomic_write_text(self.directory / CLOCK_FILE, json.dumps({"clock": self._clock}) + "\n")

    def __len__(self) -> int:
        """Steps stored, all streams together."""
        return self._size

    @property
    def clock(self) -> int:
        """Steps added over all streams and sessions (restored from the chunk files when loading)."""
        return self._clock

    def count_from(self, clock: int, key: str) -> int:
        """Stored steps added at replay clock ``clock`` or later whose ``key`` is true, all streams together.

        Step ``i`` of a chunk born at clock ``b`` by a session of ``n`` streams was added at clock
        ``b + i * n``. A resumed run counts the episodes its replay kept after its checkpoint with it.
        """
        table = self._table
        if key not in table.data:
            return 0
        total = 0
        for slot in np.flatnonzero(table.used):
            streams = max(int(table.streams[slot]), 1)
            first = max(0, -(-(int(clock) - int(table.birth[slot])) // streams))   # ceiling division
            length = int(table.length[slot])
            if first < length:
                total += int(np.count_nonzero(table.data[key][slot, first:length]))
        return total

    @property
    def num_sequences(self) -> int:
        """Distinct sequences of ``seq_len`` steps that :meth:`sample` can draw."""
        counts, _ = self._sampling_table()
        return int(counts.sum())

    @property
    def stats(self) -> dict[str, int]:
        """Figures for logging: stored steps, chunks, sequences, episode starts and lifetime counters."""
        table = self._table
        return {
            "steps": self._size,
            "chunks": int(table.used.sum()),
            "chunks_in_progress": int(table.in_progress.sum()),
            "sequences": self.num_sequences,
            "episode_starts": int(table.first_count.sum()),
            "streams": self._num_streams,
            "clock": self._clock,
            **self._counters,
        }

    def chunks(self, overlap: bool = False) -> Iterator[dict[str, np.ndarray]]:
        """Yield the stored chunks oldest first, each ``{key: [L, *shape]}`` (copies).

        With ``overlap``, a chunk that continues a stored chunk of its stream starts with that
        chunk's last step (``[L + 1, ...]``), so every pair of consecutive steps a stream
        recorded, chunk boundaries included, lies inside one yielded array.
        """
        table = self._table
        for slot in table.oldest_first():
            rows = table.rows(slot)
            before = int(table.prev[slot])
            if overlap and before >= 0 and table.length[before] > 0:
                last = table.rows(before)
                yield {key: np.concatenate([last[key][-1:], value]) for key, value in rows.items()}
            else:
                yield {key: value.copy() for key, value in rows.items()}

    def __repr__(self) -> str:
        where = "memory" if self.directory is None else str(self.directory)
        return (
            f"Replay({where}, steps={self._size}/{self.capacity}, seq_len={self.seq_len}, "
            f"chunk_size={self.chunk_size}, eviction={self.eviction!r}, sampling={self.sampling!r})"
        )

    # ------------------------------------------------------------------ adding

    def _check_step(self, step: dict[str, np.ndarray]) -> int:
        """Validate one add; the first one fixes the schema. Returns ``N``."""
        bad = [key for key in step if key.startswith("__")]
        if bad or "is_first" not in step:
            raise ReplayError(
                f"a replay step needs an 'is_first' key and no keys starting with '__', got {sorted(step)}"
            )
        scalars = [key for key, value in step.items() if value.ndim < 1]
        if scalars:
            raise ReplayError(f"step values must be [num_streams, ...], but {scalars} are scalars")
        sizes = {key: value.shape[0] for key, value in step.items()}
        streams = next(iter(sizes.values()))
        if len(set(sizes.values())) != 1 or streams < 1:
            raise ReplayError(f"every step value must be [num_streams, ...] with one num_streams, not {sizes}")
        if self._num_streams and streams != self._num_streams:
            raise ReplayError(f"this replay receives {self._num_streams} streams per add, got {streams}")
        if not self._num_streams and self.capacity < streams * self.chunk_size:
            raise ReplayError(
                f"Replay capacity={self.capacity} cannot hold one in-progress chunk per stream "
                f"({streams} streams x chunk_size={self.chunk_size}); raise capacity or lower chunk_size"
            )
        schema = self._table.schema
        if schema is None:
            self._allocate(chunkfile.schema_of(step, leading=1), self.chunk_size, extra=streams)
            return streams
        where = "" if self.directory is None else f" (in {self.directory}); use a fresh folder for new data"
        if set(step) != set(schema):
            raise ReplayError(
                f"step keys {sorted(step)} differ from the keys this replay stores {sorted(schema)}{where}"
            )
        for key, value in step.items():
            shape, dtype = schema[key]
            if value.shape[1:] != shape or not np.can_cast(value.dtype, dtype, "same_kind"):
                raise ReplayError(
                    f"step key {key!r} is {value.shape[1:]} {value.dtype} per stream but the replay stores "
                    f"{shape} {np.dtype(dtype).name}{where}"
                )
        return streams

    def _allocate(self, schema: Schema, width: int, extra: int) -> None:
        self._table.allocate(schema, width, math.ceil(self.capacity / self.chunk_size) + extra)

    def _open_chunk(self, stream: int) -> int:
        meta = ChunkMeta(
            birth=self._clock,
            stream=stream,
            prev_birth=int(self._last_birth[stream]),
            offset=self._stream_steps,
            stop=self._clock,
            streams=self._num_streams,
            key=reservoir_key(self._seed, self._clock, stream),
        )
        slot = self._table.open(meta, in_progress=True)
        self._table.link(slot)
        self._last_birth[stream] = self._clock
        return slot

    # ------------------------------------------------------------------ eviction and files

    def _evict(self) -> None:
        """Drop complete chunks until the store fits (see the module docstring for the rule)."""
        table = self._table
        if self.eviction == "fifo":
            budget, reserved = self.capacity, 0
        else:
            # The reservoir keeps room for a full chunk per stream, so complete chunks are
            # only ever judged by their keys, never by how full the in-progress ones are.
            budget = self.capacity - self._num_streams * self.chunk_size
            reserved = self._fill * self._num_streams
        while self._size - reserved > budget:
            evictable = table.used & ~table.in_progress
            if not evictable.any():
                return  # only in-progress data left; _check_step rules this out
            if self.eviction == "fifo":
                victim = selectors.fifo_victim(evictable, table.birth, table.stream)
            else:
                victim = selectors.reservoir_victim(evictable, table.key)
            if table.written[victim] >= 0 and self.directory is not None:
                name = chunkfile.chunk_name(int(table.birth[victim]), int(table.stream[victim]))
                (self.directory / name).unlink(missing_ok=True)
            self._size -= int(table.length[victim])
            table.release(victim)
            self._counters["chunks_evicted"] += 1
            self._cache = None

    def _write(self, slot: int) -> None:
        if self.directory is None:
            return
        meta = self._table.meta(slot, stop=self._clock)
        chunkfile.write_chunk(self.directory, meta, self._table.rows(slot), self.compress)
        self._table.written[slot] = self._table.length[slot]
        self._counters["chunks_written"] += 1

    def _load(self, directory: Path) -> None:
        """Load every chunk file in ``directory`` (skipping unreadable ones), then evict down to capacity."""
        clock, records, schema, skipped = read_folder(directory, self.owner)
        self._clock = max(self._clock, clock)
        self._counters["files_skipped"] += skipped
        if schema is None:   # no chunk was read
            return
        # Everything is validated before anything is placed or evicted, so a foreign
        # file stops the load before a single chunk file is deleted.
        longest = max(next(iter(data.values())).shape[0] for _, data in records)
        self._allocate(schema, max(self.chunk_size, longest), extra=len(records))
        self._loaded_streams = max(1, records[-1][0].streams)
        records.reverse()
        while records:  # pop as we copy, so the loaded arrays are freed as the slots fill
            meta, data = records.pop()
            if self._table.holds(meta.birth, meta.stream):
                warnings.warn(
                    f"skipping a second copy of replay chunk {meta.name} in {directory}", stacklevel=3
                )
                self._counters["files_skipped"] += 1
                continue
            self._place_loaded(meta, data)
        self._evict()
        self._cache = None

    def _place_loaded(self, meta: ChunkMeta, data: dict[str, np.ndarray]) -> None:
        table = self._table
        slot = table.open(meta, in_progress=False)
        length = next(iter(data.values())).shape[0]
        for key, value in data.items():
            table.data[key][slot, :length] = value
        table.length[slot] = length
        table.written[slot] = length
        table.first_count[slot] = int(np.count_nonzero(data["is_first"]))
        table.link(slot)  # chunks come in birth order, so a predecessor is already placed
        self._size += length
        self._clock = max(self._clock, meta.stop, meta.birth + 1)
        self._counters["chunks_loaded"] += 1

    # ------------------------------------------------------------------ sampling table

    def _sampling_table(self) -> tuple[np.ndarray, np.ndarray]:
        """``(counts [S], cumulative mass [S])``, recomputed only after the store changed."""
        if self._cache is None:
            table = self._table
            counts = selectors.sequence_counts(table.length, table.next, self.seq_len)
            if self.sampling == "uniform":
                mass = np.cumsum(counts)
            else:
                generation = self.chunk_size * (self._num_streams or self._loaded_streams)
                weights = selectors.recency_weights(
                    counts, table.birth, self._clock, generation, self.recency_exponent
                )
                mass = np.cumsum(weights)
            self._cache = (counts, mass)
        return self._cache


def reservoir_key(seed: int, birth: int, stream: int) -> float:
    """The reservoir key of the chunk ``(birth, stream)``: uniform on [0, 1), independent across chunks, and the
    same in every session of a run with this seed (a resumed run draws what an uninterrupted one would)."""
    return float(np.random.default_rng([int(seed), int(birth), int(stream)]).random())


def _check_positive_int(name: str, value: float) -> None:
    """Accept ints and integral floats >= 1 (configs often say 1e6); refuse the rest clearly."""
    try:
        ok = not isinstance(value, bool) and float(value).is_integer() and value >= 1
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ReplayError(f"{name} must be a positive integer, got {value!r}")
