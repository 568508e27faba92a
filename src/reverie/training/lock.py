"""One writer per run folder: an advisory lock held for the life of the training process.

``reverie train`` takes the lock before it touches anything in the folder and
holds it until the process ends. The lock is a POSIX record lock
(``fcntl.lockf``) on ``DIR/.lock``: the kernel drops it when its process ends
in any way (a normal exit, an exception, ``kill -9``), so a lock left by a
process that is gone is never in the way: the next writer simply takes it
over, and says whose it was. The file also holds the holder's pid, host,
start time and command line, so a refused writer can name the process in
its way. Readers (``eval``, ``dream``, ``analyze``) never take the lock:
they only read files that are replaced atomically.

POSIX record locks belong to a process, not to a file descriptor: a second
acquisition in the same process would succeed silently, so this module also
keeps a set of the folders the process holds. They are not inherited by
child processes (environment workers), which matters: a worker that outlives
its parent must not keep the folder locked.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
import sys
from pathlib import Path

if sys.platform != "win32":
    import fcntl

LOCK_NAME = ".lock"

_held: set[Path] = set()   # folders this process holds


class RunLockedError(RuntimeError):
    """Another live process is training in this run folder."""


class RunLock:
    """The writer's lock on one run folder; a context manager.

    ``acquire()`` returns the holder record the lock file held before (a stale
    holder that is gone), or None; raises :class:`RunLockedError` naming the
    live holder otherwise.
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> dict | None:
        key = self.folder.resolve()
        if key in _held:
            raise RunLockedError(f"{self.folder} is already being trained by this process (pid {os.getpid()}); "
                                 "one run folder takes one writer")
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            _lock(fd, self.path)
        except BlockingIOError:
            holder = _parse(_read_all(fd))
            os.close(fd)
            raise RunLockedError(f"{self.folder} is being trained by {describe(holder)}; wait for it to finish, "
                                 "stop it, or choose another --run-dir") from None
        except BaseException:
            os.close(fd)
            raise
        previous = _parse(_read_all(fd))
        record = {"pid": os.getpid(), "host": socket.gethostname(),
                  "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                  "command": _command_line()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode("utf-8"), 0)
        os.fsync(fd)
        self._fd = fd
        _held.add(key)
        return previous

    def release(self) -> None:
        """Drop the lock (the file stays: removing it would race with a writer taking it)."""
        if self._fd is None:
            return
        _held.discard(self.folder.resolve())
        try:
            os.ftruncate(self._fd, 0)
        except OSError:
            pass
        os.close(self._fd)   # closing releases the record lock
        self._fd = None

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def describe(record: dict | None) -> str:
    """'process 123 on host (started ..., `reverie train ...`)' from a lock record."""
    if not record:
        return "another process"
    where = f" on {record['host']}" if record.get("host") and record["host"] != socket.gethostname() else ""
    extra = ", ".join(x for x in (f"started {record['started']}" if record.get("started") else "",
                                  f"'{record['command']}'" if record.get("command") else "") if x)
    return f"process {record.get('pid', '?')}{where}" + (f" ({extra})" if extra else "")


def _lock(fd: int, path: Path) -> None:
    """Take the exclusive lock on ``fd`` without waiting; BlockingIOError if another process holds it."""
    if sys.platform != "win32":
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return
    import msvcrt   # Windows: a byte-range lock, also dropped when its process ends (no fcntl there)
    try:
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    except OSError:
        raise BlockingIOError(f"{path} is locked") from None


def _command_line() -> str:
    """This process's command line, as the user typed it for ``reverie`` and ``python -m reverie``."""
    name = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    if name in ("reverie", "__main__.py"):
        return " ".join(["reverie", *sys.argv[1:]])
    return " ".join([Path(sys.executable).name, *sys.argv])


def _read_all(fd: int) -> str:
    return os.pread(fd, 1 << 16, 0).decode("utf-8", errors="replace")


def _parse(text: str) -> dict | None:
    try:
        record = json.loads(text)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


__all__ = ["LOCK_NAME", "RunLock", "RunLockedError", "describe"]
