"""Gauges from the database at every scrape: per-stream lag, schedule and failing state,
dead letters and backlog. Read from the staging database, so they survive a restart and
agree across replicas (the alert rules in deploy/monitoring/ query them)."""

from __future__ import annotations

from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, Gauge
from sqlalchemy.ext.asyncio import AsyncConnection

from service.config import Settings
from service.db.overview import dead_letter_count, outbox_backlog
from service.engine.freshness import FAILING, Freshness, collect_freshness


class StreamGauges:
    def __init__(self, registry: CollectorRegistry, namespace: str = "vendorsync") -> None:
        labels = ["vendor", "stream"]
        self.lag = Gauge(
            "stream_lag_seconds",
            "Seconds since the stream's last successful run (absent before the first).",
            labels,
            namespace=namespace,
            registry=registry,
        )
        self.period = Gauge(
            "stream_schedule_seconds",
            "The stream's schedule period: its interval, or the gap between cron fires.",
            labels,
            namespace=namespace,
            registry=registry,
        )
        self.failing = Gauge(
            "stream_failing",
            "1 when the stream's last finished run failed (or its process died), else 0.",
            labels,
            namespace=namespace,
            registry=registry,
        )
        self.next_run = Gauge(
            "stream_next_run_timestamp_seconds",
            "Unix time of the stream's next scheduled run.",
            labels,
            namespace=namespace,
            registry=registry,
        )
        self.dead = Gauge(
            "outbox_dead_letters",
            "Push outbox rows dead-lettered (waiting for a fix and a requeue).",
            namespace=namespace,
            registry=registry,
        )
        self.backlog = Gauge(
            "outbox_backlog",
            "Push outbox rows still to send (pending or being sent).",
            namespace=namespace,
            registry=registry,
        )

    def update(self, streams: list[Freshness], dead: int, backlog: int) -> None:
        for gauge in (self.lag, self.period, self.failing, self.next_run):
            gauge.clear()  # streams removed from the config disappear
        for f in streams:
            labels = {"vendor": f.vendor, "stream": f.stream}
            if f.lag_s is not None:
                self.lag.labels(**labels).set(f.lag_s)
            self.period.labels(**labels).set(f.period_s)
            self.failing.labels(**labels).set(1 if f.state == FAILING else 0)
            self.next_run.labels(**labels).set(f.next_run_at.timestamp())
        self.dead.set(dead)
        self.backlog.set(backlog)


async def update_stream_gauges(
    gauges: StreamGauges,
    conn: AsyncConnection,
    settings: Settings,
    scheduled: dict[tuple[str, str], datetime],
) -> None:
    """Read freshness, dead letters and backlog, and set the gauges (before a scrape)."""
    streams = await collect_freshness(conn, settings, datetime.now(UTC), scheduled)
    gauges.update(streams, await dead_letter_count(conn), await outbox_backlog(conn))
