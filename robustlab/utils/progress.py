"""A thin rich progress bar that can be switched off (tests, non-zero ranks) without changing call sites."""

from __future__ import annotations

import os
import time
from types import TracebackType
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.progress import Progress as RichProgress


class Progress:
    """Counts work items and shows ``key=value`` fields and throughput beside the bar."""

    def __init__(
        self, total: int, description: str, *, enabled: bool = True, unit: str = "it", per_item: int = 1,
        initial: int = 0,
    ) -> None:
        """``per_item`` units per counted item (images per step); ``initial`` items were done before (resume)."""
        self.total, self.description, self.unit = total, description, unit
        self.per_item, self.initial = per_item, initial
        self.enabled = enabled and not os.environ.get("ROBUSTLAB_NO_PROGRESS")
        self._rich: RichProgress | None = None
        self._task: Any = None
        self._start = time.perf_counter()
        self._done = 0

    def __enter__(self) -> Progress:
        if self.enabled:
            self._rich = RichProgress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(), transient=False,
            )
            self._rich.__enter__()
            self._task = self._rich.add_task(self.description, total=self.total, completed=self.initial, info="")
        return self

    def advance(self, n: int = 1, **fields: float | int | str) -> None:
        """Advance by ``n`` items and show the given fields plus items per second."""
        self._done += n
        if self._rich is None:
            return
        rate = self._done * self.per_item / max(time.perf_counter() - self._start, 1e-9)
        info = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in fields.items())
        self._rich.update(self._task, advance=n, info=f"{info} {rate:.0f} {self.unit}/s".strip())

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        if self._rich is not None:
            self._rich.__exit__(et, ev, tb)
