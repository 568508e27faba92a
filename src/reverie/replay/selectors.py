"""Which sequences to sample and which chunks to evict, as vectorised numpy.

The store keeps chunks in *slots*: row ``s`` of every data array
``[S, W, *shape]`` holds one chunk of ``length[s] <= W`` steps, and
``next_slot[s]`` is the slot holding the same stream's following chunk
(-1 if it is not stored). A sequence of ``seq_len`` steps starts at
``(slot, offset)`` and may run on through ``next_slot`` links; it never
crosses from one stream into another because links only join chunks of one
stream that are back to back in time.

Every function here works on whole arrays: the only Python loops run over
chain hops (about ``seq_len / chunk_size + 1`` of them), never over
elements.
"""

from __future__ import annotations

import numpy as np


def sequence_counts(length: np.ndarray, next_slot: np.ndarray, seq_len: int) -> np.ndarray:
    """Number of valid sequence starts in each slot.

    A start at ``offset`` in slot ``s`` is valid when ``seq_len`` steps are
    stored from there on, following ``next_slot`` links.

    Args:
        length: ``[S]`` int, steps stored in each slot (0 for free slots).
        next_slot: ``[S]`` int, following slot of the same stream or -1.
        seq_len: steps per sequence.

    Returns:
        ``[S]`` int64 counts, each in ``[0, length[s]]``.
    """
    need = seq_len - 1  # steps the successors must supply for the last start of a slot
    after = np.zeros_like(length)  # steps stored after slot s in its chain, capped near `need`
    cursor = next_slot.copy()
    active = np.flatnonzero((cursor >= 0) & (need > 0))
    while active.size:
        after[active] += length[cursor[active]]
        cursor[active] = next_slot[cursor[active]]
        keep = (cursor[active] >= 0) & (after[active] < need)
        active = active[keep]
    return np.clip(length + after - need, 0, length).astype(np.int64)


def recency_weights(
    counts: np.ndarray, birth: np.ndarray, clock: int, generation: float, exponent: float
) -> np.ndarray:
    """Per-slot sampling mass that favours recently started chunks.

    A start in a chunk whose first step was added ``age = clock - birth``
    clock steps ago gets weight ``(1 + age / generation) ** -exponent``;
    with ``generation = chunk_size * num_streams`` the age counts chunk
    generations, so the newest generation weighs 1, the one before
    ``2 ** -exponent``, and so on (a power law, as in DreamerV3's recency
    selector). Starts inside one chunk stay equally likely.

    Returns:
        ``[S]`` float64, ``counts * (1 + age / generation) ** -exponent``.
    """
    age = np.maximum(clock - birth, 0).astype(np.float64)
    return counts * (1.0 + age / generation) ** (-exponent)


def draw_uniform(
    counts: np.ndarray, cumulative: np.ndarray, rng: np.random.Generator, batch: int
) -> tuple[np.ndarray, np.ndarray]:
    """``batch`` starts drawn uniformly (with replacement) over all valid starts.

    Args:
        counts: ``[S]`` valid starts per slot.
        cumulative: ``np.cumsum(counts)``.

    Returns:
        ``(slot [batch], offset [batch])`` int64.
    """
    flat = rng.integers(0, cumulative[-1], size=batch)
    slot = np.searchsorted(cumulative, flat, side="right")
    offset = flat - (cumulative[slot] - counts[slot])
    return slot, offset


def balanced_shares(batch: int, groups: int) -> np.ndarray:
    """How many of ``batch`` sequences each of ``groups`` groups gets: equal shares, the remainder one each
    to the first groups. ``[groups]`` int64 summing to ``batch``."""
    return batch // groups + (np.arange(groups) < batch % groups).astype(np.int64)


def draw_balanced(
    counts: np.ndarray, group: np.ndarray, groups: int, rng: np.random.Generator, batch: int
) -> tuple[np.ndarray, np.ndarray]:
    """``batch`` starts, :func:`balanced_shares` of them from each group, uniform over the valid starts of
    that group (with replacement), group 0's first.

    Args:
        counts: ``[S]`` valid starts per slot.
        group: ``[S]`` the group of each slot, in ``[0, groups)``.

    Returns:
        ``(slot [batch], offset [batch])`` int64. ValueError naming a group with no valid start.
    """
    slots, offsets = [], []
    for g, share in enumerate(balanced_shares(batch, groups)):
        own = np.where(group == g, counts, 0)
        cumulative = np.cumsum(own)
        if cumulative.size == 0 or cumulative[-1] <= 0:
            raise ValueError(f"group {g} holds no sequence yet")
        slot, offset = draw_uniform(own, cumulative, rng, int(share))
        slots.append(slot)
        offsets.append(offset)
    return np.concatenate(slots), np.concatenate(offsets)


def draw_weighted(
    counts: np.ndarray, cumulative_weight: np.ndarray, rng: np.random.Generator, batch: int
) -> tuple[np.ndarray, np.ndarray]:
    """``batch`` starts: a slot in proportion to its weight, then a uniform start inside it.

    Args:
        counts: ``[S]`` valid starts per slot.
        cumulative_weight: ``np.cumsum(weights)`` with ``weights[s] > 0`` only where ``counts[s] > 0``.

    Returns:
        ``(slot [batch], offset [batch])`` int64.
    """
    total = cumulative_weight[-1]
    slot = np.searchsorted(cumulative_weight, rng.random(batch) * total, side="right")
    # Rounding can put a draw at `total` exactly; fold it onto the last slot with mass.
    slot = np.minimum(slot, np.flatnonzero(counts)[-1])
    offset = rng.integers(0, counts[slot])
    return slot, offset


def gather_index(
    slot: np.ndarray,
    offset: np.ndarray,
    seq_len: int,
    length: np.ndarray,
    next_slot: np.ndarray,
    width: int,
) -> np.ndarray:
    """Flat row indices into ``data.reshape(S * W, *shape)`` for each sampled sequence.

    Args:
        slot, offset: ``[B]`` valid starts (see :func:`sequence_counts`).
        seq_len: ``T``.
        length, next_slot: ``[S]`` slot table.
        width: ``W``, steps per slot row.

    Returns:
        ``[B, T]`` int64; row ``b`` lists the stored steps of sequence ``b`` in time order.
    """
    position = offset[:, None] + np.arange(seq_len)  # [B, T], from the start of the first chunk
    row_slot = np.repeat(slot[:, None], seq_len, axis=1)  # [B, T] slot holding each step
    within = position.copy()  # [B, T] step index inside that slot
    current = slot
    begin = np.zeros_like(offset)  # [B] where `current` starts, same origin as `position`
    covered = length[slot].astype(np.int64)  # [B] steps available up to the end of `current`
    while True:
        beyond = position >= covered[:, None]  # [B, T] steps that lie past `current`
        if not beyond.any():
            break
        more = beyond[:, -1]  # the last step is the first to run out
        following = np.where(more, next_slot[current], current)
        if (following[more] < 0).any():
            raise AssertionError("replay slot chain broken under a sampled sequence")
        begin = np.where(more, covered, begin)
        row_slot = np.where(beyond, following[:, None], row_slot)
        within = np.where(beyond, position - begin[:, None], within)
        covered = covered + np.where(more, length[following], 0)
        current = following
    return row_slot * width + within


def fifo_victim(evictable: np.ndarray, birth: np.ndarray, stream: np.ndarray) -> int:
    """Slot of the oldest evictable chunk (earliest birth, then lowest stream)."""
    big = np.iinfo(np.int64).max
    order = np.where(evictable, birth, big)
    oldest = np.flatnonzero(order == order.min())
    return int(oldest[np.argmin(stream[oldest])])


def reservoir_victim(evictable: np.ndarray, key: np.ndarray) -> int:
    """Slot of the evictable chunk with the largest reservoir key.

    Always dropping the largest of i.i.d. uniform keys keeps the chunks with
    the smallest keys, which is a uniform random subset of every chunk seen.
    """
    return int(np.argmax(np.where(evictable, key, -1.0)))
