"""Failpoints: named places where a fault-injection run kills its own process on purpose.

The shell's writers and the training loop call :func:`failpoint` at the
moments a crash is most dangerous (a checkpoint's weights written but not yet
committed, a replay chunk half written, an update or a collection step in
progress). Unless the environment variable ``REVERIE_FAILPOINTS`` arms one,
a call does nothing but test one module-level flag. Armed, e.g.::

    REVERIE_FAILPOINTS="checkpoint.weights_written=2" reverie train ...

the process sends itself ``SIGKILL`` the 2nd time it passes that point: no
handler, ``finally`` block or buffered write gets to run, as with a power cut
or the kernel's OOM killer. ``benchmarks/faults.py`` uses this to kill runs
at each dangerous moment and checks that the same command resumes them.

Points: ``loop.collect`` (after an environment step, before the replay sees
the next), ``loop.update`` (between two gradient updates), ``loop.stage`` (after a checkpointed unit of
a staged agent's work),
``checkpoint.weights_written`` (weights on disk, JSON marker not yet),
``replay.chunk_written`` (a chunk's temporary file written, not yet renamed).
"""

from __future__ import annotations

import os
import signal

POINTS = ("loop.collect", "loop.update", "loop.stage", "checkpoint.weights_written", "replay.chunk_written")
ENV_VAR = "REVERIE_FAILPOINTS"


def _parse(text: str) -> dict[str, int]:
    armed = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, count = item.partition("=")
        if name not in POINTS or not count.isdigit() or int(count) < 1:
            raise ValueError(f"{ENV_VAR}={text!r}: each item must be POINT=N with N >= 1 and POINT one of {POINTS}")
        armed[name] = int(count)
    return armed


_armed = _parse(os.environ.get(ENV_VAR, ""))
_hits: dict[str, int] = {}


def failpoint(name: str) -> None:
    """Kill this process with SIGKILL if ``name`` is armed and this is its N-th pass; else nothing."""
    if not _armed or name not in _armed:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] == _armed[name]:
        os.kill(os.getpid(), signal.SIGKILL)


__all__ = ["ENV_VAR", "POINTS", "failpoint"]
