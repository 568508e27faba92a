"""Experience replay: chunked crash-safe storage and fixed-length sequence sampling.

``Replay`` is the store (see :mod:`reverie.replay.store` for what it keeps
and how it samples). Inside: ``slots`` holds the chunks in memory,
``selectors`` the vectorised sampling and eviction rules, ``chunkfile`` the
on-disk format.
"""

from reverie.replay.errors import ReplayError, ReplayFormatError
from reverie.replay.store import Replay

__all__ = ["Replay", "ReplayError", "ReplayFormatError"]
