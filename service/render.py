"""Rich tables shared by the CLI and the demo.

Every cell and title is a ``Text``: values come from vendor data, rows files and
arguments, and a string such as ``[/x]`` must print as itself, never be read as markup.
"""

from __future__ import annotations

from collections.abc import Iterable

from rich.table import Table
from rich.text import Text

from service.engine.push import PushReport
from service.models import RunResult

_LEFT = ("vendor", "stream", "result")


def plain(value: object) -> Text:
    """``value`` as literal text for a rich table or console (no markup, no emoji codes)."""
    return Text("" if value is None else str(value))


def runs_table(title: str, results: Iterable[RunResult]) -> Table:
    """One row per stream run: counts, requests and duration."""
    table = Table(title=plain(title))
    cols = (
        "vendor",
        "stream",
        "result",
        "inserted",
        "updated",
        "unchanged",
        "deleted",
        "requests",
        "s",
    )
    for col in cols:
        table.add_column(col, justify="left" if col in _LEFT else "right")
    for r in results:
        c = r.counts
        table.add_row(
            plain(r.vendor),
            plain(r.stream),
            plain(r.status),
            *(plain(n) for n in (c.inserted, c.updated, c.unchanged, c.deleted, r.requests)),
            plain(f"{r.duration_s:.1f}"),
        )
    return table


def push_table(title: str, report: PushReport) -> Table:
    """One row per outbox row handled: its outcome and the reason."""
    table = Table(title=plain(title))
    for col in ("vendor", "entity", "key", "outcome", "detail"):
        table.add_column(col)
    for o in report.outcomes:
        table.add_row(*(plain(v) for v in (o.vendor, o.entity, o.record_key, o.status, o.detail)))
    return table


def push_summary(report: PushReport) -> Text:
    """``vendor/entity: sent 3, rejected 1; …`` plus what mapping rules enqueued (empty,
    and so false, when nothing ran)."""
    counts = report.counts()
    parts = [
        f"{v}/{e}: " + ", ".join(f"{k} {n}" for k, n in sorted(c.items()))
        for (v, e), c in sorted(counts.items())
    ]
    if report.enqueued_by_mappings and not report.dry_run:
        parts.append(f"mapping rules enqueued {report.enqueued_by_mappings}")
    return plain("; ".join(parts))
