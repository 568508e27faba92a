"""Behaviour of reverie.replay: storage round trips, sequence sampling, eviction, crash safety.

Every step carries ``tag = [stream_id, t]`` so a sampled sequence can be
checked against the truth: one stream, consecutive times, ``is_first``
exactly where the synthetic episodes start.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reverie.replay import Replay, ReplayError, ReplayFormatError
from reverie.replay.store import reservoir_key


def episode_start(stream, t):
    """Synthetic episodes: stream s starts one at t=0 and wherever (7t + 3s) % 13 == 0."""
    return (np.asarray(t) == 0) | ((7 * np.asarray(t) + 3 * np.asarray(stream)) % 13 == 0)


def make_step(streams: int, t: int, first_stream: int = 0) -> dict[str, np.ndarray]:
    """Step ``t`` of streams ``first_stream .. first_stream + streams - 1``."""
    ids = np.arange(first_stream, first_stream + streams)
    tag = np.stack([ids, np.full(streams, t)], axis=1).astype(np.int64)  # [N, 2]
    first = episode_start(ids, t)
    return {
        "tag": tag,
        "vector": (1000.0 * ids[:, None] + t + np.arange(3)).astype(np.float32),  # [N, 3]
        "reward": (0.5 * t + ids).astype(np.float32),
        "is_first": first,
        "is_last": episode_start(ids, t + 1),
        "is_terminal": np.zeros(streams, bool),
        "action": np.full((streams, 2), t % 5, np.float32),
    }


def fill(replay: Replay, streams: int, steps: int, start: int = 0, first_stream: int = 0) -> None:
    for t in range(start, start + steps):
        replay.add(make_step(streams, t, first_stream))


def check_batch(batch: dict[str, np.ndarray], batch_size: int, seq_len: int) -> None:
    """Every sequence is one stream, consecutive in time, with true is_first and matching data."""
    tag = batch["tag"]
    assert tag.shape == (batch_size, seq_len, 2)
    assert batch["vector"].shape == (batch_size, seq_len, 3)
    assert batch["reward"].shape == (batch_size, seq_len)
    stream, time = tag[..., 0], tag[..., 1]
    assert (stream == stream[:, :1]).all(), "a sequence mixes streams"
    assert (np.diff(time, axis=1) == 1).all(), "a sequence is not consecutive in time"
    np.testing.assert_array_equal(batch["is_first"], episode_start(stream, time))
    np.testing.assert_array_equal(batch["vector"][..., 0], 1000.0 * stream + time)
    np.testing.assert_array_equal(batch["reward"], (0.5 * time + stream).astype(np.float32))


def stored_tags(replay: Replay) -> set[tuple[int, int]]:
    tags = [tuple(row) for chunk in replay.chunks() for row in chunk["tag"].tolist()]
    assert len(tags) == len(set(tags)), "a step is stored twice"
    return set(tags)


def reference_starts(replay: Replay, seq_len: int) -> set[tuple[int, int]]:
    """Slow oracle: (stream, t) starts whose whole sequence is stored."""
    tags = stored_tags(replay)
    return {(s, t) for s, t in tags if all((s, t + k) in tags for k in range(seq_len))}


def chunk_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.glob("*.npz"))


def assert_same_chunks(a: Replay, b: Replay) -> None:
    chunks_a, chunks_b = list(a.chunks()), list(b.chunks())
    assert len(chunks_a) == len(chunks_b)
    for x, y in zip(chunks_a, chunks_b):
        assert x.keys() == y.keys()
        for key in x:
            np.testing.assert_array_equal(x[key], y[key])
            assert x[key].dtype == y[key].dtype


# ---------------------------------------------------------------------- round trips


def test_round_trip_flush_and_reload(tmp_path):
    replay = Replay(tmp_path, capacity=1000, seq_len=6, chunk_size=8)
    fill(replay, streams=2, steps=30)  # 3 full chunks + 6 steps in progress per stream
    assert len(replay) == 60
    assert len(chunk_files(tmp_path)) == 6  # full chunks are written as soon as they fill
    replay.flush()
    assert len(chunk_files(tmp_path)) == 8
    again = Replay(tmp_path, capacity=1000, seq_len=6, chunk_size=8)
    assert len(again) == 60
    assert again.num_sequences == replay.num_sequences == 2 * (30 - 6 + 1)
    assert_same_chunks(replay, again)
    assert again.stats["episode_starts"] == replay.stats["episode_starts"]
    assert again.stats["clock"] == replay.stats["clock"] == 60  # recency ages carry over
    # Reloading twice gives the same layout, so the same seed gives the same batches.
    third = Replay(tmp_path, capacity=1000, seq_len=6, chunk_size=8)
    batch_again, batch_third = again.sample(16), third.sample(16)
    for key, value in batch_again.items():
        np.testing.assert_array_equal(value, batch_third[key])


def test_flush_then_continue_leaves_no_duplicates(tmp_path):
    replay = Replay(tmp_path, capacity=1000, seq_len=3, chunk_size=8)
    fill(replay, streams=2, steps=5)
    replay.flush()
    fill(replay, streams=2, steps=2, start=5)
    replay.flush()
    assert len(chunk_files(tmp_path)) == 2  # the growing chunk replaced its own file
    peek = Replay(tmp_path, capacity=1000, seq_len=3, chunk_size=8)
    assert stored_tags(peek) == {(s, t) for s in range(2) for t in range(7)}
    fill(replay, streams=2, steps=7, start=7)  # completes the chunk, starts the next
    replay.flush()
    assert len(chunk_files(tmp_path)) == 4
    again = Replay(tmp_path, capacity=1000, seq_len=3, chunk_size=8)
    assert stored_tags(again) == {(s, t) for s in range(2) for t in range(14)}
    assert_same_chunks(replay, again)
    # Sequences run across the flushed-then-completed chunk boundary after reload.
    assert again.num_sequences == 2 * (14 - 3 + 1)


def test_resume_appends_new_streams_without_gluing(tmp_path):
    first = Replay(tmp_path, capacity=1000, seq_len=4, chunk_size=5)
    fill(first, streams=2, steps=12)
    first.flush()
    resumed = Replay(tmp_path, capacity=1000, seq_len=4, chunk_size=5)
    fill(resumed, streams=2, steps=12, first_stream=10)  # a new session's workers
    resumed.flush()
    final = Replay(tmp_path, capacity=1000, seq_len=4, chunk_size=5)
    assert len(final) == 48
    assert final.num_sequences == len(reference_starts(final, 4)) == 4 * (12 - 4 + 1)
    check_batch(final.sample(200), 200, 4)


def test_memory_only_replay_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    replay = Replay(None, capacity=100, seq_len=4, chunk_size=4)
    fill(replay, streams=1, steps=20)
    replay.flush()
    assert list(tmp_path.iterdir()) == []
    check_batch(replay.sample(8), 8, 4)


def test_overlapping_chunks_hold_every_consecutive_pair_once(tmp_path):
    replay = Replay(tmp_path, capacity=40, seq_len=4, chunk_size=5)
    fill(replay, streams=2, steps=33)  # the oldest chunks are evicted, so some chunks start unlinked
    pairs = []
    for chunk in replay.chunks(overlap=True):
        tags = chunk["tag"]
        assert (tags[:, 0] == tags[0, 0]).all() and (np.diff(tags[:, 1]) == 1).all()
        pairs += [(int(s), int(t)) for s, t in tags[1:]]
    stored = stored_tags(replay)
    expected = {(s, t) for s, t in stored if (s, t - 1) in stored}
    assert len(pairs) - len(set(pairs)) == 0 and set(pairs) >= expected
    assert set(pairs) <= stored and len(pairs) == len(expected)


# ---------------------------------------------------------------------- sampling


def test_sequences_stay_in_one_stream_and_cross_episodes_and_chunks(tmp_path):
    replay = Replay(tmp_path, capacity=10_000, seq_len=12, chunk_size=5, seed=3)
    fill(replay, streams=3, steps=60)
    batch = replay.sample(500)
    check_batch(batch, 500, 12)
    time = batch["tag"][..., 1]
    assert batch["is_first"][:, 1:].any(), "no sequence crosses an episode start"
    assert (time[:, 0] % 5 > 0).any() and (time[:, 0] // 5 != time[:, -1] // 5).all()  # span chunks
    assert set(np.unique(batch["tag"][:, 0, 0])) == {0, 1, 2}


@pytest.mark.parametrize("eviction", ["fifo", "reservoir"])
def test_uniform_sampling_matches_slow_reference(eviction):
    replay = Replay(None, capacity=120, seq_len=7, chunk_size=4, eviction=eviction, seed=1)
    fill(replay, streams=3, steps=100)
    valid = reference_starts(replay, 7)
    assert replay.num_sequences == len(valid) > 0
    batch = replay.sample(40 * len(valid))
    check_batch(batch, 40 * len(valid), 7)
    starts = [tuple(row) for row in batch["tag"][:, 0].tolist()]
    assert set(starts) == valid  # every valid start is reachable, nothing else is
    hits = np.array([starts.count(start) for start in sorted(valid)])
    assert hits.min() > 10 and hits.max() < 80  # about 40 each, uniform


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    streams=st.integers(1, 3),
    chunk_size=st.integers(1, 6),
    seq_len=st.integers(1, 15),
    steps=st.integers(1, 40),
    extra=st.integers(0, 40),
    eviction=st.sampled_from(["fifo", "reservoir"]),
    sampling=st.sampled_from(["uniform", "recency"]),
)
def test_sampling_invariants_hold_for_any_layout(streams, chunk_size, seq_len, steps, extra, eviction, sampling):
    capacity = streams * chunk_size + extra
    replay = Replay(None, capacity, seq_len, chunk_size, eviction=eviction, sampling=sampling)
    fill(replay, streams, steps)
    assert len(replay) <= capacity
    assert len(replay) == len(stored_tags(replay))
    valid = reference_starts(replay, seq_len)
    assert replay.num_sequences == len(valid)
    if valid:
        batch = replay.sample(32)
        check_batch(batch, 32, seq_len)
        assert {tuple(row) for row in batch["tag"][:, 0].tolist()} <= valid
    else:
        with pytest.raises(ReplayError, match="no sequence"):
            replay.sample(1)


def test_recency_sampling_follows_its_power_law():
    replay = Replay(None, capacity=1000, seq_len=5, chunk_size=10, sampling="recency", seed=0)
    fill(replay, streams=1, steps=200)
    starts = replay.sample(40_000)["tag"][:, 0, 1]
    # Chunk j (born at clock 10 j) is 20 - j generations old at clock 200; all chunks hold
    # 10 valid starts except the last, whose last 4 steps cannot start a 5-step sequence.
    j = np.arange(20)
    counts = np.where(j < 19, 10, 6)
    expected = counts / (1.0 + (20 - j))
    expected /= expected.sum()
    observed = np.bincount(starts // 10, minlength=20) / len(starts)
    assert np.abs(observed - expected).max() < 0.01
    uniform = Replay(None, capacity=1000, seq_len=5, chunk_size=10, sampling="uniform", seed=0)
    fill(uniform, streams=1, steps=200)
    uniform_starts = uniform.sample(40_000)["tag"][:, 0, 1]
    assert starts.mean() > uniform_starts.mean() + 30
    assert (starts >= 100).mean() > 0.7 > 0.55 > (uniform_starts >= 100).mean()


def test_same_seed_same_batches_other_seed_other_batches():
    def run(seed):
        replay = Replay(None, capacity=60, seq_len=5, chunk_size=4, eviction="reservoir", seed=seed)
        fill(replay, streams=2, steps=80)
        return replay.sample(32)["tag"]

    np.testing.assert_array_equal(run(7), run(7))
    assert not np.array_equal(run(7), run(8))


# ---------------------------------------------------------------------- eviction


def test_fifo_evicts_oldest_chunks_and_deletes_their_files(tmp_path):
    replay = Replay(tmp_path, capacity=24, seq_len=3, chunk_size=4, eviction="fifo")
    sizes = []
    for t in range(40):
        replay.add(make_step(2, t))
        sizes.append(len(replay))
    assert max(sizes) == 24 and min(sizes[12:]) >= 24 - 4
    # 40 steps per stream = 10 chunks each; 24 steps = the newest 3 chunks of each stream.
    assert stored_tags(replay) == {(s, t) for s in range(2) for t in range(28, 40)}
    assert chunk_files(tmp_path) == [f"chunk-{birth:012d}-{s:04d}.npz" for birth in (56, 64, 72) for s in (0, 1)]
    assert replay.stats["chunks_evicted"] == 14
    check_batch(replay.sample(64), 64, 3)
    again = Replay(tmp_path, capacity=24, seq_len=3, chunk_size=4)
    assert_same_chunks(replay, again)


def test_loading_more_than_capacity_keeps_the_newest(tmp_path):
    big = Replay(tmp_path, capacity=1000, seq_len=3, chunk_size=4)
    fill(big, streams=1, steps=40)
    small = Replay(tmp_path, capacity=12, seq_len=3, chunk_size=4)
    assert stored_tags(small) == {(0, t) for t in range(28, 40)}
    assert len(chunk_files(tmp_path)) == 3


def test_reservoir_keeps_capacity_and_a_uniform_sample_over_time():
    kept_times = []
    steps = [make_step(1, t) for t in range(801)]  # 200 complete chunks plus one step of the next
    for seed in range(40):
        replay = Replay(None, capacity=40, seq_len=2, chunk_size=4, eviction="reservoir", seed=seed)
        for step in steps:
            replay.add(step)
            assert len(replay) <= 40
        times = sorted(t for _, t in stored_tags(replay))
        assert len(times) == 37  # 9 complete chunks + the 1-step chunk in progress
        kept_times += [t for t in times if t < 800]
    kept_chunk = np.array(kept_times[::4]) // 4  # [360] index of each kept complete chunk, 0..199
    quarters = np.bincount(kept_chunk // 50, minlength=4)
    # A uniform sample puts 90 per quarter (sd ~8); FIFO would put all 360 in the last one.
    assert quarters.min() > 60 and quarters.max() < 120, quarters
    assert abs(kept_chunk.mean() - 99.5) < 12


def test_reservoir_keeps_exactly_the_smallest_keys(tmp_path):
    replay = Replay(tmp_path, capacity=40, seq_len=2, chunk_size=4, eviction="reservoir", seed=5)
    fill(replay, streams=1, steps=400)  # 100 complete chunks, none in progress
    # A chunk's key is a function of the seed and the chunk's (birth, stream).
    keys = np.array([reservoir_key(5, 4 * j, 0) for j in range(100)])
    kept = sorted({t // 4 for _, t in stored_tags(replay)})
    # Complete chunks may use 40 - 1 * 4 = 36 steps: the 9 smallest keys of all 100.
    assert kept == sorted(np.argsort(keys)[:9].tolist())
    assert chunk_files(tmp_path) == [f"chunk-{4 * j:012d}-0000.npz" for j in kept]


# ---------------------------------------------------------------------- damaged and foreign files


def test_truncated_chunk_is_skipped_with_a_warning_and_left_in_place(tmp_path):
    replay = Replay(tmp_path, capacity=1000, seq_len=3, chunk_size=4)
    fill(replay, streams=1, steps=16)
    middle, last = tmp_path / "chunk-000000000004-0000.npz", tmp_path / "chunk-000000000012-0000.npz"
    size = middle.stat().st_size
    for victim in (middle, last):
        victim.write_bytes(victim.read_bytes()[: size // 2])
    with pytest.warns(UserWarning, match="unreadable replay chunk") as caught:
        again = Replay(tmp_path, capacity=1000, seq_len=3, chunk_size=4)
    assert sum("unreadable" in str(w.message) for w in caught) == 2
    assert middle.stat().st_size == last.stat().st_size == size // 2
    assert stored_tags(again) == {(0, t) for t in range(12) if not 4 <= t < 8}
    # The gap breaks the chain: no sequence may bridge t=3 -> t=8.
    assert again.num_sequences == len(reference_starts(again, 3)) == 2 + 2
    check_batch(again.sample(100), 100, 3)
    assert again.stats["files_skipped"] == 2
    # New chunks never take a skipped file's name (the last one's birth would be next).
    fill(again, streams=1, steps=8, first_stream=5)
    again.flush()
    assert last.stat().st_size == size // 2
    assert len(chunk_files(tmp_path)) == 6


def test_stale_partial_chunk_is_not_glued_to_its_successor(tmp_path):
    replay = Replay(tmp_path, capacity=1000, seq_len=3, chunk_size=8)
    fill(replay, streams=1, steps=5)
    replay.flush()
    first = tmp_path / "chunk-000000000000-0000.npz"
    stale = first.read_bytes()  # 5 of its 8 steps, as a backup restore might bring back
    fill(replay, streams=1, steps=11, start=5)  # completes it and the next chunk
    first.write_bytes(stale)
    again = Replay(tmp_path, capacity=1000, seq_len=3, chunk_size=8)
    assert stored_tags(again) == {(0, t) for t in range(16) if not 5 <= t < 8}
    assert again.num_sequences == len(reference_starts(again, 3)) == 3 + 6
    check_batch(again.sample(100), 100, 3)


def test_bit_flip_and_leftover_temp_file_are_reported(tmp_path):
    replay = Replay(tmp_path, capacity=1000, seq_len=3, chunk_size=64)
    fill(replay, streams=1, steps=128)
    victim = tmp_path / "chunk-000000000064-0000.npz"
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    (tmp_path / ".chunk-000000000128-0000.npz.123.tmp").write_bytes(b"PK\x03\x04half")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = Replay(tmp_path, capacity=1000, seq_len=3, chunk_size=64)
    messages = " ".join(str(w.message) for w in caught)
    assert "temporary file" in messages and "chunk-000000000064-0000" in messages
    assert len(again) == 64


def test_foreign_npz_gives_one_clear_error(tmp_path):
    replay = Replay(tmp_path, capacity=1000, seq_len=3, chunk_size=4)
    fill(replay, streams=1, steps=8)
    np.savez(tmp_path / "weights.npz", w=np.zeros(3))
    with pytest.raises(ReplayFormatError, match=r"weights\.npz is not a reverie replay chunk"):
        Replay(tmp_path, capacity=1000, seq_len=3, chunk_size=4)
    assert len(chunk_files(tmp_path)) == 3  # nothing was deleted


def test_chunks_of_another_environment_give_one_clear_error(tmp_path):
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    fill(Replay(ours, capacity=1000, seq_len=3, chunk_size=4), streams=1, steps=8)
    other = Replay(theirs, capacity=1000, seq_len=3, chunk_size=4)
    for t in range(4):
        step = make_step(1, t)
        step["vector"] = np.zeros((1, 5), np.float32)
        other.add(step)
    foreign = next(theirs.glob("*.npz"))
    os.replace(foreign, ours / "chunk-000000000099-0000.npz")
    with pytest.raises(ReplayFormatError, match="disagree.*vector: \\(5,\\)"):
        Replay(ours, capacity=1000, seq_len=3, chunk_size=4)


def test_adding_steps_unlike_the_stored_ones_errors(tmp_path):
    fill(Replay(tmp_path, capacity=1000, seq_len=3, chunk_size=4), streams=1, steps=8)
    again = Replay(tmp_path, capacity=1000, seq_len=3, chunk_size=4)
    step = make_step(1, 0)
    step["vector"] = np.zeros((1, 4), np.float32)
    with pytest.raises(ReplayError, match="'vector' is \\(4,\\) float32 per stream but the replay stores \\(3,\\)"):
        again.add(step)
    del step["action"]
    with pytest.raises(ReplayError, match="differ from the keys"):
        again.add(step)


# ---------------------------------------------------------------------- crashes


def test_crash_without_flush_loses_only_chunks_in_progress(tmp_path):
    replay = Replay(tmp_path, capacity=1000, seq_len=3, chunk_size=8)
    fill(replay, streams=2, steps=21)
    replay.flush()  # both streams' third chunk holds 5 of 8 steps on disk
    fill(replay, streams=2, steps=6, start=21)  # completes it (written) and starts a fourth
    del replay  # no flush: the 3 steps of the fourth chunks are lost
    again = Replay(tmp_path, capacity=1000, seq_len=3, chunk_size=8)
    assert stored_tags(again) == {(s, t) for s in range(2) for t in range(24)}


def test_kill_9_loses_only_chunks_in_progress(tmp_path):
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_replay import fill
        from reverie.replay import Replay
        replay = Replay({str(tmp_path)!r}, capacity=1000, seq_len=3, chunk_size=8)
        fill(replay, streams=3, steps=13)
        replay.flush()
        fill(replay, streams=3, steps=7, start=13)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert done.returncode == -9, done.stderr.decode()
    again = Replay(tmp_path, capacity=1000, seq_len=3, chunk_size=8)
    # Steps 0..15 were in complete chunks; 16..19 were in progress and are lost.
    assert stored_tags(again) == {(s, t) for s in range(3) for t in range(16)}


# ---------------------------------------------------------------------- settings


def test_changing_chunk_size_between_runs_still_loads(tmp_path):
    fill(Replay(tmp_path, capacity=1000, seq_len=10, chunk_size=8), streams=1, steps=16)
    smaller = Replay(tmp_path, capacity=1000, seq_len=10, chunk_size=4)
    fill(smaller, streams=1, steps=9, first_stream=3)
    assert smaller.num_sequences == len(reference_starts(smaller, 10)) == 7
    check_batch(smaller.sample(50), 50, 10)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(eviction="lifo"), "eviction must be one of"),
        (dict(sampling="priority"), "sampling must be one of"),
        (dict(capacity=0), "capacity must be a positive integer"),
        (dict(seq_len=2.5), "seq_len must be a positive integer"),
    ],
)
def test_bad_settings_are_named(kwargs, message):
    settings_ = dict(directory=None, capacity=100, seq_len=4) | kwargs
    with pytest.raises(ReplayError, match=message):
        Replay(**settings_)


def test_bad_use_is_named():
    replay = Replay(None, capacity=16, seq_len=4, chunk_size=8)
    with pytest.raises(ReplayError, match="no sequence of seq_len=4"):
        replay.sample(2)
    with pytest.raises(ReplayError, match="cannot hold one in-progress chunk per stream"):
        replay.add(make_step(3, 0))
    replay = Replay(None, capacity=100, seq_len=4, chunk_size=8)
    with pytest.raises(ReplayError, match="'is_first'"):
        replay.add({"vector": np.zeros((2, 3))})
    replay.add(make_step(2, 0))
    with pytest.raises(ReplayError, match="receives 2 streams per add, got 3"):
        replay.add(make_step(3, 1))
