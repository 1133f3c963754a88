"""Data for ``vendorsync status``: streams, limit groups and their replicas, and (when
present) the push outbox."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from service.config import Settings
from service.connectors import connector_class
from service.db import (
    check_schema,
    create_engine,
    last_full_run_at,
    live_leases,
    stream_statuses,
    translate_db_errors,
)
from service.db.outbox import outbox_summary, recent_failures
from service.db.overview import dead_letters, outbox_backlog
from service.engine.freshness import collect_freshness
from service.engine.groups import limit_groups
from service.engine.replicas import ASSIGNED_PREFIX, REPLICA_PREFIX, assigned_name
from service.secrets import redact_text

# Epoch milliseconds between 2001 and 2286: how Aimsio's `updatedAt` cursors look.
EPOCH_MS_RANGE = (10**12, 10**13)


def cursor_text(state: dict[str, Any] | None, limit: int = 48) -> str | None:
    """A short, human view of a checkpoint: its ``cursor`` if it has one, else the JSON.

    Epoch milliseconds are shown as UTC time (the raw value follows in brackets).
    """
    if not state:
        return None
    value = state.get("cursor", state)
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    if text.isdigit() and EPOCH_MS_RANGE[0] <= int(text) < EPOCH_MS_RANGE[1]:
        when = datetime.fromtimestamp(int(text) / 1000, UTC)
        text = f"{when.strftime('%Y-%m-%d %H:%M:%S')} UTC ({text})"
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _full_every_s(settings: Settings, vendor: str, stream: str) -> float | None:
    vs = settings.vendors.get(vendor)
    configured = vs.streams.get(stream) if vs else None
    if configured is not None and configured.full_every is not None:
        return configured.full_every_s()
    try:
        spec = connector_class(settings.connector_of(vendor)).declared(stream)
    except KeyError:
        return None
    return spec.full_every_s if spec else None


async def collect_status(settings: Settings) -> dict[str, Any]:
    engine = create_engine(settings.database.url)
    try:
        # The whole block, so a refused connection is one line naming what we were doing.
        with translate_db_errors("reading status"):
            await check_schema(engine)
            async with engine.connect() as conn:
                rows = await stream_statuses(conn)
                last_full = {
                    (r.vendor, r.stream): await last_full_run_at(conn, r.vendor, r.stream)
                    for r in rows
                    if _full_every_s(settings, r.vendor, r.stream) is not None
                }
                outbox = await outbox_summary(conn)
                failures = await recent_failures(conn)
                now = datetime.now(UTC)
                assigned = await live_leases(conn, ASSIGNED_PREFIX, now=now)
                driving = await live_leases(conn, "", now=now)
                replicas = await live_leases(conn, REPLICA_PREFIX, now=now)
                freshness = await collect_freshness(conn, settings, now)
                dead = await dead_letters(conn)
                backlog = await outbox_backlog(conn)
    finally:
        await engine.dispose()
    streams = [
        {
            "vendor": s.vendor,
            "stream": s.stream,
            "last_run_status": s.last_run_status,
            "last_run_started_at": s.last_run_started_at,
            "last_run_finished_at": s.last_run_finished_at,
            "last_run_rows": s.last_run_rows,
            "last_error": s.last_error,
            "staged_rows": s.staged_rows,
            "cursor": cursor_text(s.state),
            "state_updated_at": s.state_updated_at,
            **_full_reread(settings, s.vendor, s.stream, last_full),
        }
        for s in rows
    ]
    groups = [
        {
            "group": g.name,
            "connections": list(g.connections),
            # The replica that schedules it (daemons), and who runs it right now (if any).
            "replica": assigned.get(assigned_name(g), (None,))[0],
            "running": driving.get(g.lease, (None,))[0],
        }
        for g in limit_groups(settings).values()
    ]
    for row in dead:
        row["last_error"] = row["last_error"] and redact_text(row["last_error"])
    return {
        "streams": streams,
        "groups": groups,
        "replicas": sorted(owner for owner, _ in replicas.values()),
        "outbox": outbox,
        "failures": failures,
        "freshness": [
            {**f.as_dict(), "last_error": f.last_error and redact_text(f.last_error)}
            for f in freshness
        ],
        "outbox_backlog": backlog,
        "dead_letters": dead,
    }


def _full_reread(
    settings: Settings,
    vendor: str,
    stream: str,
    last_full: dict[tuple[str, str], datetime | None],
) -> dict[str, Any]:
    every_s = _full_every_s(settings, vendor, stream)
    if every_s is None:
        return {"full_every_s": None, "last_full_at": None, "next_full_due": None}
    last = last_full.get((vendor, stream))
    due = None if last is None else last + timedelta(seconds=every_s)
    return {"full_every_s": every_s, "last_full_at": last, "next_full_due": due}
