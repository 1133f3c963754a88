"""Per stream: last run, next run, lag, and whether it is fresh, late or failing.

The judgement is a pure function of the schedule, the last runs and the clock, so the CLI,
the status page and the tests agree. A stream is *late* when its last success is older than
``LATE_FACTOR`` schedule periods (the Prometheus alert uses the same factor), *failing*
when its last finished run failed, *never* before its first run.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.triggers.cron import CronTrigger
from sqlalchemy.ext.asyncio import AsyncConnection

from service.config import Settings, parse_every_s
from service.db import stream_statuses
from service.db.overview import last_successes, lease_holders
from service.engine.groups import lease_of

LATE_FACTOR = 2.0
FAILED = ("failed", "abandoned")  # not "cancelled": a shutdown is no failure
FRESH, LATE, FAILING, NEVER = "fresh", "late", "failing", "never"


def period_s(schedule: str, now: datetime) -> float:
    """How long between two runs: the interval, or the gap between the next two cron fires."""
    every = parse_every_s(schedule)
    if every is not None:
        return every
    trigger = CronTrigger.from_crontab(schedule, timezone=UTC)
    first = trigger.get_next_fire_time(None, now)
    second = trigger.get_next_fire_time(first, first + timedelta(seconds=1)) if first else None
    return (second - first).total_seconds() if first and second else 86400.0


def next_run_at(schedule: str, now: datetime, last_started_at: datetime | None) -> datetime:
    """When the schedule runs the stream next (an interval counts from the last start; a
    daemon that knows its job's next fire time passes that instead)."""
    every = parse_every_s(schedule)
    if every is not None:
        if last_started_at is None:
            return now
        return max(now, last_started_at + timedelta(seconds=every))
    fire = CronTrigger.from_crontab(schedule, timezone=UTC).get_next_fire_time(None, now)
    return fire or now


@dataclass(frozen=True, slots=True)
class Freshness:
    vendor: str
    stream: str
    schedule: str
    period_s: float
    state: str  # fresh | late | failing | never
    last_status: str | None
    last_started_at: datetime | None
    last_success_at: datetime | None
    lag_s: float | None  # since the last success
    next_run_at: datetime
    last_rows: int | None
    last_error: str | None
    holder: str | None  # the process holding the vendor's lease now

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def judge(
    *,
    period: float,
    last_status: str | None,
    last_success_at: datetime | None,
    first_seen_at: datetime | None,
    now: datetime,
) -> str:
    """fresh | late | failing | never (see the module docstring).

    A stream that never succeeded is late once ``first_seen_at`` (its first run) is older
    than the late threshold: a stream that cannot succeed is not quietly "never".
    """
    if last_status in FAILED:
        return FAILING
    since = last_success_at or first_seen_at
    if since is None:
        return NEVER
    if (now - since).total_seconds() > LATE_FACTOR * period:
        return LATE
    return FRESH if last_success_at is not None else NEVER


async def collect_freshness(
    conn: AsyncConnection,
    settings: Settings,
    now: datetime,
    scheduled: dict[tuple[str, str], datetime] | None = None,
) -> list[Freshness]:
    """Every enabled stream of every enabled connection, in config order.

    ``scheduled``: next fire times the running daemon knows (better than the estimate).
    """
    statuses = {(s.vendor, s.stream): s for s in await stream_statuses(conn, now=now)}
    successes = await last_successes(conn)
    holders = await lease_holders(conn, now)
    out = []
    for vendor, vs in settings.vendors.items():
        if not vs.enabled:
            continue
        for stream in vs.enabled_streams():
            schedule = vs.schedule_of(stream)
            s = statuses.get((vendor, stream))
            started = s.last_run_started_at if s else None
            success = successes.get((vendor, stream))
            period = period_s(schedule, now)
            state = judge(
                period=period,
                last_status=s.last_run_status if s else None,
                last_success_at=success,
                first_seen_at=started if success is None else None,
                now=now,
            )
            nxt = (scheduled or {}).get((vendor, stream)) or next_run_at(schedule, now, started)
            out.append(
                Freshness(
                    vendor=vendor,
                    stream=stream,
                    schedule=schedule,
                    period_s=period,
                    state=state,
                    last_status=s.last_run_status if s else None,
                    last_started_at=started,
                    last_success_at=success,
                    lag_s=None if success is None else max(0.0, (now - success).total_seconds()),
                    next_run_at=nxt,
                    last_rows=s.last_run_rows if s else None,
                    last_error=s.last_error if s else None,
                    holder=holders.get(lease_of(settings, vendor)),
                )
            )
    return out
