"""Data for ``vendorsync status``: streams, and (when present) the push outbox."""

from __future__ import annotations

import json
from typing import Any

from service.config import Settings
from service.db import check_schema, create_engine, stream_statuses, translate_db_errors
from service.db.outbox import outbox_summary, recent_failures


def cursor_text(state: dict[str, Any] | None, limit: int = 40) -> str | None:
    """A short, human view of a checkpoint: its ``cursor`` if it has one, else the JSON."""
    if not state:
        return None
    value = state.get("cursor", state)
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


async def collect_status(settings: Settings) -> dict[str, Any]:
    engine = create_engine(settings.database.url)
    try:
        # The whole block, so a refused connection is one line naming what we were doing.
        with translate_db_errors("reading status"):
            await check_schema(engine)
            async with engine.connect() as conn:
                rows = await stream_statuses(conn)
                outbox = await outbox_summary(conn)
                failures = await recent_failures(conn)
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
        }
        for s in rows
    ]
    return {"streams": streams, "outbox": outbox, "failures": failures}
