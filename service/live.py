"""Live progress on a terminal for ``resync`` and the demo: rich stays up here.

One line per stream (records fetched of those expected, once its connector knows, and
the committed counts) and one per vendor (requests per second against its cap). The
engine only calls a plain ``RunProgress`` callback; off a terminal nothing is drawn.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from types import TracebackType

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from service.models import RunProgress


class LiveProgress:
    """``with LiveProgress(console, caps) as live:`` then pass ``live.update`` as the
    engine's progress callback."""

    def __init__(self, console: Console | None, caps: Mapping[str, float]) -> None:
        self.caps = dict(caps)
        self.enabled = console is not None and console.is_terminal
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(bar_width=24),
            MofNCompleteColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
            disable=not self.enabled,
        )
        self._streams: dict[tuple[str, str], TaskID] = {}
        self._vendors: dict[str, TaskID] = {}
        self._requests: dict[tuple[str, str], int] = {}
        self._started = time.monotonic()

    def __enter__(self) -> LiveProgress:
        self._started = time.monotonic()
        self._progress.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._progress.__exit__(exc_type, exc, tb)

    def update(self, p: RunProgress) -> None:
        key = (p.vendor, p.stream)
        task = self._streams.get(key)
        if task is None:
            task = self._progress.add_task(escape(f"{p.vendor}/{p.stream}"), total=None, detail="")
            self._streams[key] = task
        c = p.counts
        self._progress.update(
            task,
            total=p.expected,
            completed=p.fetched,
            detail=f"+{c.inserted} ~{c.updated} ={c.unchanged} -{c.deleted}",
        )
        self._requests[key] = p.requests
        self._show_rate(p.vendor)

    def _show_rate(self, vendor: str) -> None:
        sent = sum(n for (v, _), n in self._requests.items() if v == vendor)
        elapsed = max(time.monotonic() - self._started, 1e-3)
        cap = self.caps.get(vendor)
        rate = sent / elapsed
        detail = f"{rate:.1f} req/s" + (f" of {cap:g} cap" if cap else "")
        task = self._vendors.get(vendor)
        if task is None:
            task = self._progress.add_task(escape(f"{vendor} requests"), total=None, detail="")
            self._vendors[vendor] = task
        self._progress.update(task, completed=sent, detail=detail)
