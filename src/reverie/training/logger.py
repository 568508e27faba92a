"""Metrics writers: JSON lines for people and scripts, TensorBoard for browsing.

``run_dir/metrics.jsonl`` holds one JSON object per :meth:`MetricsLogger.log`
call: ``{"step": 1200, "train/loss": 0.53, "eval/return": 812.0}``. Numbers
are written as JSON numbers (integers stay integers, everything else is a
float); NaN and infinities are written as ``null`` so the file stays strict
JSON that any tool reads, and :func:`read_metrics` turns ``null`` back into
``float("nan")``. Every line is flushed as it is written, and fsynced at most
every few seconds, so a crash loses at most the lines of the last moments and
never corrupts earlier ones; a torn last line is skipped when read, and cut
off when the file is reopened for appending.

The same scalars go to TensorBoard under ``run_dir/tb``.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Protocol

__all__ = ["Log", "MetricsLogger", "read_metrics"]

_FSYNC_EVERY_S = 5.0


class Log(Protocol):
    """Where metrics rows go (:class:`~reverie.training.logger.MetricsLogger`)."""

    def log(self, step: int, metrics: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


class MetricsLogger:
    """Append metrics to ``run_dir/metrics.jsonl`` and mirror them to TensorBoard.

    ``tensorboard``: also write ``run_dir/tb/events.out.tfevents.*``.
    ``resume_step``: when resuming from a checkpoint at this step, drop the
    rows (and TensorBoard events) logged after it by the interrupted run, so
    curves do not double back. ``None`` keeps everything and just appends.
    ``keep_after``: rows after ``resume_step`` for which it returns True are
    kept all the same (and written to TensorBoard again): the episodes a resumed
    run keeps in its replay, say.
    """

    def __init__(self, run_dir: str | os.PathLike, tensorboard: bool = True, resume_step: int | None = None,
                 keep_after: Callable[[dict], bool] | None = None):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.run_dir / "metrics.jsonl"
        kept_late = _prepare_for_append(self.path, resume_step, keep_after)
        self._file = open(self.path, "a", encoding="utf-8")
        self._last_fsync = time.monotonic()
        self._tb = None
        if tensorboard:
            try:  # torch's TensorBoard writer needs the tensorboard package
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as e:
                warnings.warn(f"TensorBoard logging is off ({e}); metrics.jsonl is still written", stacklevel=2)
            else:
                purge = None if resume_step is None else int(resume_step) + 1
                self._tb = SummaryWriter(str(self.run_dir / "tb"), purge_step=purge, flush_secs=10)
                for row in kept_late:   # the purge dropped them from TensorBoard too
                    for key, value in row.items():
                        if key != "step" and isinstance(value, (int, float)):
                            self._tb.add_scalar(key, value, global_step=row["step"])

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        """Append one row: ``step`` plus ``metrics`` (python/numpy numbers or one-element tensors)."""
        if self._file.closed:
            raise ValueError(f"MetricsLogger for {self.run_dir} is closed; create a new one to keep logging")
        row: dict[str, Any] = {"step": int(step)}
        for key, value in metrics.items():
            if key == "step":
                raise ValueError("metric name 'step' is reserved for the step column; rename the metric")
            row[str(key)] = _scalar(key, value)
        self._file.write(json.dumps(row, allow_nan=False) + "\n")
        self._file.flush()
        now = time.monotonic()
        if now - self._last_fsync >= _FSYNC_EVERY_S:
            os.fsync(self._file.fileno())
            self._last_fsync = now
        if self._tb is not None:
            for key, value in row.items():
                if key != "step" and value is not None:
                    self._tb.add_scalar(key, value, global_step=row["step"])

    def flush(self) -> None:
        """Force everything written so far onto disk (and out of TensorBoard's buffer)."""
        if not self._file.closed:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._last_fsync = time.monotonic()
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        """Flush and close both writers; safe to call twice."""
        if not self._file.closed:
            self.flush()
            self._file.close()
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    def __enter__(self) -> MetricsLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _scalar(key: str, value: Any) -> int | float | None:
    """One metric value as a JSON number (or None for NaN/inf)."""
    if hasattr(value, "numel") and hasattr(value, "item"):  # torch tensor, without importing torch
        if value.numel() != 1:
            raise ValueError(
                f"metric '{key}' has shape {list(value.shape)}; log a scalar (e.g. its .mean())"
            )
        value = value.item()
    elif hasattr(value, "shape") and hasattr(value, "item"):  # numpy array or scalar
        if getattr(value, "size", 1) != 1:
            raise ValueError(f"metric '{key}' has shape {list(value.shape)}; log a scalar (e.g. its .mean())")
        value = value.item()
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        value = float(value)
        return value if math.isfinite(value) else None
    raise ValueError(f"metric '{key}' is a {type(value).__name__} ({value!r}); metrics must be numbers")


def _prepare_for_append(path: Path, resume_step: int | None,
                        keep_after: Callable[[dict], bool] | None = None) -> list[dict]:
    """Cut a torn last line (a crash mid-write) and, when resuming, rows after ``resume_step``
    (except those ``keep_after`` keeps, which are returned)."""
    if not path.exists():
        return []
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1  # everything after the last newline is a torn line
    if resume_step is None:
        if end != len(data):
            with open(path, "r+b") as fh:
                fh.truncate(end)
        return []
    kept, late = [], []
    for line in data[:end].splitlines(keepends=True):
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if not isinstance(row, dict) or not isinstance(row.get("step"), (int, float)):
            continue
        if row["step"] <= resume_step:
            kept.append(line)
        elif keep_after is not None and keep_after(row):
            kept.append(line)
            late.append(row)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as fh:
        fh.writelines(kept)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return late


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """All rows of a ``metrics.jsonl`` (or of ``run_dir/metrics.jsonl`` given the folder).

    ``null`` values come back as ``float("nan")``. A torn last line (the
    writer was killed mid-line) is skipped silently; a malformed line in the
    middle is skipped with a warning naming its line number.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"metrics file {path} does not exist; has the run logged anything yet?")
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict):
                raise ValueError("not an object")
        except ValueError:
            if number != len(lines):
                warnings.warn(f"{path}:{number} is not a JSON object; skipped it", stacklevel=2)
            continue
        rows.append({k: (math.nan if v is None else v) for k, v in row.items()})
    return rows
