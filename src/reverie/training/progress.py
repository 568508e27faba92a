"""A progress display: a rich bar in a terminal, a line every 10% elsewhere (logs, CI)."""

from __future__ import annotations

import sys
from typing import Any, Protocol

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn, TimeElapsedColumn


class Display(Protocol):
    """What shows a run's progress (:class:`~reverie.training.progress.Progress`)."""

    def episode(self, ret: float) -> None: ...

    def update(self, steps: int, updates: int, seconds: float, evaluation: tuple[float, float] | None) -> None: ...

    def close(self) -> None: ...


class Silent:
    """A logger and progress display that shows and writes nothing (ranks other than the main one)."""

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        pass

    def episode(self, ret: float) -> None:
        pass

    def update(self, steps: int, updates: int, seconds: float, evaluation: tuple[float, float] | None) -> None:
        pass

    def close(self) -> None:
        pass


class Progress:
    """Environment steps so far, updates per second, the latest training and evaluation return."""

    def __init__(self, total: int, start: int = 0, refits: bool = False):
        self.total = total
        self.refits = refits  # the agent refits its model at intervals (PETS): count refits, not a rate
        self.console = Console(stderr=True)
        self.live = self.console.is_terminal
        self.last_return: float | None = None
        self.next_line = start + total // 10
        self.info = ""
        if self.live:
            self.bar = RichProgress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
                                    TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=self.console)
            self.task = self.bar.add_task("train", total=total, completed=start, info="")
            self.bar.start()

    def episode(self, ret: float) -> None:
        self.last_return = ret

    def update(self, steps: int, updates: int, seconds: float, evaluation: tuple[float, float] | None) -> None:
        parts = [f"{updates} model fits" if self.refits else f"{updates / max(seconds, 1e-9):.1f} upd/s"]
        if self.last_return is not None:
            parts.append(f"return {self.last_return:.1f}")
        if evaluation is not None:
            parts.append(f"eval {evaluation[0]:.1f}")
        self.info = "  ".join(parts)
        if self.live:
            self.bar.update(self.task, completed=min(steps, self.total), info=self.info)
        elif steps >= self.next_line:
            print(f"step {steps}/{self.total}  {self.info}", file=sys.stderr, flush=True)
            self.next_line += max(self.total // 10, 1)

    def close(self) -> None:
        if self.live:
            self.bar.stop()
