"""A thin progress bar that can be switched off (tests, non-zero ranks) without changing call sites.

On a terminal it is a rich bar with the ``key=value`` fields on a line of their own (so nothing is cut off at 80
columns); when output goes to a file or a pipe (CI logs, ``nohup``) it prints a plain line at the start, every
``ROBUSTLAB_PROGRESS_SECONDS`` (default 30) and at the end, so a long job is never silent.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from types import TracebackType
from typing import Any

from rich.console import Console, RenderableType
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.progress import Progress as RichProgress
from rich.text import Text

PLAIN_INTERVAL_ENV = "ROBUSTLAB_PROGRESS_SECONDS"


class _TwoLineProgress(RichProgress):
    """Bar, counts and times on one line; the task's fields below it, folded rather than cut."""

    def get_renderables(self) -> Iterable[RenderableType]:
        yield self.make_tasks_table(self.tasks)
        for task in self.tasks:
            info = task.fields.get("info", "")
            if info:
                yield Text(f"  {info}", overflow="fold")


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


class Progress:
    """Counts work items and shows ``key=value`` fields and throughput beside the bar."""

    def __init__(
        self, total: int, description: str, *, enabled: bool = True, unit: str = "it", per_item: int = 1,
        initial: int = 0, console: Console | None = None,
    ) -> None:
        """``per_item`` units per counted item (images per step); ``initial`` items were done before (resume)."""
        self.total, self.description, self.unit = total, description, unit
        self.per_item, self.initial = per_item, initial
        self.enabled = enabled and not os.environ.get("ROBUSTLAB_NO_PROGRESS")
        self.console = console or Console(stderr=True)
        self.plain = self.enabled and not self.console.is_terminal
        self.interval = float(os.environ.get(PLAIN_INTERVAL_ENV, "30"))
        self._rich: RichProgress | None = None
        self._task: Any = None
        self._start = time.perf_counter()
        self._last_line = self._start
        self._done = 0
        self._info = ""

    def __enter__(self) -> Progress:
        if self.plain:
            self._line("started")
        elif self.enabled:
            self._rich = _TwoLineProgress(
                TextColumn("[bold]{task.description}"), BarColumn(bar_width=24), MofNCompleteColumn(),
                TimeElapsedColumn(), TimeRemainingColumn(), console=self.console, transient=False,
            )
            self._rich.__enter__()
            self._task = self._rich.add_task(self.description, total=self.total, completed=self.initial, info="")
        return self

    def advance(self, n: int = 1, **fields: float | int | str) -> None:
        """Advance by ``n`` items and show the given fields plus items per second."""
        self._done += n
        if not self.enabled:
            return
        rate = self._done * self.per_item / max(time.perf_counter() - self._start, 1e-9)
        info = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in fields.items())
        self._info = f"{info} {rate:.0f} {self.unit}/s".strip()
        if self._rich is not None:
            self._rich.update(self._task, advance=n, info=self._info)
        elif self.plain and time.perf_counter() - self._last_line >= self.interval:
            self._line()

    def _line(self, note: str = "") -> None:
        """One plain progress line: description, count, percentage, fields, elapsed time."""
        done = self.initial + self._done
        pct = f" ({100 * done / self.total:.0f}%)" if self.total else ""
        parts = [f"{self.description}: {done}/{self.total}{pct}", self._info,
                 f"elapsed {_duration(time.perf_counter() - self._start)}", note]
        print(" ".join(p for p in parts if p), file=self.console.file, flush=True)
        self._last_line = time.perf_counter()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        if self._rich is not None:
            self._rich.__exit__(et, ev, tb)
        elif self.plain:
            self._line("done" if et is None else f"stopped ({et.__name__})")


__all__ = ["PLAIN_INTERVAL_ENV", "Progress"]
