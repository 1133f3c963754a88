"""Rich tables shared by the CLI and the demo."""

from __future__ import annotations

from collections.abc import Iterable

from rich.markup import escape
from rich.table import Table

from service.engine.push import PushReport
from service.models import RunResult

_LEFT = ("vendor", "stream", "result")


def runs_table(title: str, results: Iterable[RunResult]) -> Table:
    """One row per stream run: counts, requests and duration."""
    table = Table(title=title)
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
            r.vendor,
            r.stream,
            r.status,
            *(str(n) for n in (c.inserted, c.updated, c.unchanged, c.deleted, r.requests)),
            f"{r.duration_s:.1f}",
        )
    return table


def push_table(title: str, report: PushReport) -> Table:
    """One row per outbox row handled: its outcome and the reason."""
    table = Table(title=title)
    for col in ("vendor", "entity", "key", "outcome", "detail"):
        table.add_column(col)
    for o in report.outcomes:
        # escape: vendor errors start with "[aimsio]", which rich would take for markup
        table.add_row(o.vendor, o.entity, escape(o.record_key), o.status, escape(o.detail or ""))
    return table


def push_summary(report: PushReport) -> str:
    """``vendor/entity: outcome n, …`` per group (plus what mapping rules enqueued)."""
    counts = report.counts()
    parts = [
        f"{v}/{e}: " + ", ".join(f"{k} {n}" for k, n in sorted(c.items()))
        for (v, e), c in sorted(counts.items())
    ]
    if report.enqueued_by_mappings and not report.dry_run:
        parts.append(f"mapping rules enqueued {report.enqueued_by_mappings}")
    return "; ".join(parts)
