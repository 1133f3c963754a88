"""The daemon: one APScheduler job per enabled stream of the limit groups this replica
is assigned (``engine/replicas.py``), plus the push outbox.

A job runs at most once per tick of its schedule, across replicas and restarts: it is
skipped when a run started in the current tick already succeeded. The scheduler stays thin: a job calls the same ``run_stream`` that ``vendorsync resync``
calls. On SIGTERM no new job starts; running ones get ``shutdown_grace_s`` to finish,
then are cancelled: a cancelled run keeps every committed batch and releases its lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from aiohttp import web
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger
from prometheus_client import CollectorRegistry

from service.config import (
    Settings,
    expiry_warnings,
    parse_every_s,
)
from service.daemon.health import build_health_app
from service.daemon.metrics import DaemonMetrics
from service.daemon.status_page import PageHooks, add_status_page
from service.daemon.stream_metrics import StreamGauges, update_stream_gauges
from service.db import check_schema, last_success_started_at, translate_db_errors
from service.db.outbox import outbox_summary
from service.engine.groups import LimitGroup, lease_of, limit_groups
from service.engine.push import push_once
from service.engine.replicas import Replica
from service.engine.runtime import Runtime, vendor_blackout_s
from service.engine.sync import execute_stream
from service.errors import LeaseHeld, SyncError

log = structlog.get_logger("service.daemon")

PUSH_INTERVAL_S = 60.0
BUSY_RETRY_MAX_S = 60.0
# Interval ticks count from a fixed instant, so every replica sees the same ticks.
TICK_ANCHOR = datetime(2000, 1, 3, tzinfo=UTC)
CRON_LOOKBACK = timedelta(days=1)


def trigger_for(schedule: str) -> BaseTrigger:
    every = parse_every_s(schedule)
    if every is not None:
        return IntervalTrigger(seconds=every, start_date=TICK_ANCHOR, timezone=UTC)
    return CronTrigger.from_crontab(schedule, timezone=UTC)


def tick_start(trigger: BaseTrigger, now: datetime) -> datetime:
    """When the schedule's current tick began: its latest fire time at or before ``now``
    (for a cron, searched over the last day; the day's start when none fired)."""
    if isinstance(trigger, IntervalTrigger):
        period_s = trigger.interval.total_seconds()
        start: datetime = trigger.start_date
        n = math.floor((now - start).total_seconds() / period_s)
        return start + timedelta(seconds=n * period_s)
    prev = now - CRON_LOOKBACK
    fire = trigger.get_next_fire_time(None, prev)
    while fire is not None and fire <= now:
        prev = fire
        fire = trigger.get_next_fire_time(fire, fire + timedelta(microseconds=1))
    return prev


class Daemon:
    def __init__(self, settings: Settings, *, registry: CollectorRegistry | None = None) -> None:
        self.settings = settings
        self.registry = registry or CollectorRegistry()
        self.metrics = DaemonMetrics(self.registry)
        self.stream_gauges = StreamGauges(self.registry)
        self._running: set[asyncio.Task[Any]] = set()
        self._active: set[tuple[str, str]] = set()
        self._accepting = True
        self._scheduler: AsyncIOScheduler | None = None
        self.failures = 0  # stream runs and pushes that failed (for `run --once`'s exit code)
        self.first_failure: str | None = None  # "vendor/stream: error", for that exit's line
        self.busy = 0  # stream runs skipped because another process held the stream
        self.health_url: str | None = None  # set once the health server listens
        self.health_sockets: list[tuple[str, int]] = []
        self.replica: Replica | None = None  # the daemon's share of the limit groups
        self._triggers: dict[tuple[str, str], BaseTrigger] = {}

    def jobs(self) -> list[tuple[str, str, str]]:
        """(vendor, stream, schedule) for every enabled stream of every enabled vendor."""
        out: list[tuple[str, str, str]] = []
        for vendor, vs in self.settings.vendors.items():
            if vs.enabled:
                out.extend((vendor, s, vs.schedule_of(s)) for s in vs.enabled_streams())
        return out

    async def _tracked(self, coro: Any) -> None:
        task = asyncio.current_task()
        assert task is not None
        if not self._accepting:
            coro.close()
            return
        self._running.add(task)
        try:
            await coro
        except asyncio.CancelledError:
            if self._accepting:
                raise
            # Cancelled by our own shutdown after the grace period: the run is recorded
            # as cancelled and its lease released; nothing for the scheduler to report.
        finally:
            self._running.discard(task)

    async def _sync_job(self, rt: Runtime, vendor: str, stream: str) -> None:
        async def go() -> None:
            if (vendor, stream) in self._active:
                return  # its regular job and a busy-retry met; one run is enough
            if self.replica is not None and not self.replica.assigned(
                lease_of(self.settings, vendor)
            ):
                return  # another replica schedules this group
            wait_s = self._blackout_s(vendor)
            if wait_s > 0:  # the vendor is known to be down: start once it is back
                log.info("skipped: blackout window", vendor=vendor, stream=stream, wait_s=wait_s)
                self._retry_soon(rt, vendor, stream, delay_s=wait_s + 1)
                return
            self._active.add((vendor, stream))  # before any await: one run per stream here
            try:
                if await self._tick_served(rt, vendor, stream):
                    return  # this tick's run succeeded (here, elsewhere, or before a restart)
                result = await execute_stream(rt, vendor, stream, "schedule")
            except LeaseHeld as exc:
                log.info("skipped: stream busy", vendor=vendor, stream=stream, reason=str(exc))
                self.busy += 1
                self._retry_soon(rt, vendor, stream)
                return
            except SyncError as exc:
                log.error("run failed", vendor=vendor, stream=stream, error=str(exc))
                self.metrics.runs.labels(vendor=vendor, stream=stream, status="failed").inc()
                self._failed(f"{vendor}/{stream}: {exc}")
                return
            finally:
                self._active.discard((vendor, stream))
            self.metrics.observe_run(result, time.time())
            if result.status != "succeeded":
                self._failed(f"{vendor}/{stream}: {result.error or result.status}")

        await self._tracked(go())

    def _failed(self, what: str) -> None:
        self.failures += 1
        if self.first_failure is None:
            self.first_failure = what

    async def _tick_served(self, rt: Runtime, vendor: str, stream: str) -> bool:
        trigger = self._triggers.get((vendor, stream))
        if trigger is None:
            return False
        try:
            with translate_db_errors("reading the last run"):
                async with rt.db.connect() as conn:
                    last = await last_success_started_at(conn, vendor, stream)
        except SyncError:
            return False  # the run itself reports the database's trouble
        return last is not None and last >= tick_start(trigger, datetime.now(UTC))

    def _gained(self, rt: Runtime, group: LimitGroup) -> None:
        """A group this replica now schedules: its streams' jobs, and a run now of those
        whose current tick has not been served (the start-up run, or a takeover's)."""
        self.metrics.group_assigned.labels(group=group.name).set(1)
        if self._scheduler is None or not self._accepting:
            return
        for vendor in group.connections:
            for stream in self.settings.vendors[vendor].enabled_streams():
                self._scheduler.add_job(
                    self._sync_job,
                    self._triggers[(vendor, stream)],
                    args=(rt, vendor, stream),
                    id=f"{vendor}:{stream}",
                    replace_existing=True,
                    max_instances=1,
                    coalesce=True,
                    misfire_grace_time=60,
                )
                self._scheduler.add_job(
                    self._sync_job,
                    DateTrigger(run_date=datetime.now(UTC), timezone=UTC),
                    args=(rt, vendor, stream),
                    id=f"{vendor}:{stream}:gained",
                    replace_existing=True,
                    misfire_grace_time=60,
                )

    def _lost(self, group: LimitGroup) -> None:
        """A group another replica schedules now: drop its streams' jobs (a run in progress
        finishes; the group's lease keeps the other replica's runs waiting until then)."""
        self.metrics.group_assigned.labels(group=group.name).set(0)
        if self._scheduler is None:
            return
        for vendor in group.connections:
            for stream in self.settings.vendors[vendor].enabled_streams():
                for suffix in ("", ":gained", ":busy-retry"):
                    with contextlib.suppress(JobLookupError):
                        self._scheduler.remove_job(f"{vendor}:{stream}{suffix}")

    def _blackout_s(self, vendor: str) -> float:
        return vendor_blackout_s(self.settings, vendor)

    def _retry_soon(
        self, rt: Runtime, vendor: str, stream: str, *, delay_s: float | None = None
    ) -> None:
        """A busy stream is tried again after about one heartbeat of its holder, not a
        whole schedule interval later (the holder releases it as soon as it is done);
        one skipped for a blackout window, once the window has ended."""
        if self._scheduler is None or not self._accepting:
            return
        if delay_s is None:
            delay_s = min(BUSY_RETRY_MAX_S, max(1.0, self.settings.sync.heartbeat_s))
        delay_s *= 1 + random.random() / 4  # replicas retrying together spread out
        self._scheduler.add_job(
            self._sync_job,
            DateTrigger(run_date=datetime.now(UTC) + timedelta(seconds=delay_s), timezone=UTC),
            args=(rt, vendor, stream),
            id=f"{vendor}:{stream}:busy-retry",
            replace_existing=True,
            misfire_grace_time=60,
        )

    async def _push_job(self, rt: Runtime) -> None:
        async def go() -> None:
            try:
                await push_once(rt)
            except SyncError as exc:
                log.error("push failed", error=str(exc))
                self._failed(f"push: {exc}")

        await self._tracked(go())

    async def run(self, stop: asyncio.Event, *, once: bool = False) -> None:
        async with Runtime(self.settings, registry=self.registry) as rt:
            if once:
                await asyncio.gather(
                    *(self._sync_job(rt, v, s) for v, s, _ in self.jobs()),
                    self._push_job(rt),
                )
                return
            scheduler = AsyncIOScheduler(timezone=UTC)
            self._scheduler = scheduler
            self._triggers = {(v, s): trigger_for(sched) for v, s, sched in self.jobs()}
            replica = Replica(
                rt,
                list(limit_groups(self.settings).values()),
                on_gained=functools.partial(self._gained, rt),
                on_lost=self._lost,
            )
            await replica.start()  # first: a refused second replica starts nothing
            self.replica = replica
            runner = await self._serve_health(rt)
            # Stream jobs come and go with the groups this replica is assigned (_gained).
            scheduler.add_job(
                self._push_job,
                IntervalTrigger(seconds=PUSH_INTERVAL_S, timezone=UTC),
                args=(rt,),
                id="push",
                max_instances=1,
                coalesce=True,
            )
            scheduler.add_job(
                self._expiry_job,
                IntervalTrigger(days=1, timezone=UTC),
                id="credential-expiry",
                next_run_time=datetime.now(UTC),
            )
            scheduler.start()
            log.info(
                "daemon started",
                jobs=len(self.jobs()),
                owner=rt.owner,
                groups=replica.held(),
                replicas=replica.live_replicas,
            )
            try:
                await stop.wait()
            finally:
                log.info("daemon stopping", running=len(self._running))
                self._accepting = False
                # Drain before shutdown: APScheduler's shutdown cancels running jobs at once,
                # and they deserve shutdown_grace_s to finish their current batches.
                scheduler.pause()
                await self._drain()
                scheduler.shutdown(wait=False)
                await replica.close()
                await runner.cleanup()

    def scheduled_runs(self) -> dict[tuple[str, str], datetime]:
        """Each stream's next scheduled start, as the scheduler has it (for the status page)."""
        if self._scheduler is None:
            return {}
        out: dict[tuple[str, str], datetime] = {}
        for vendor, stream, _ in self.jobs():
            job = self._scheduler.get_job(f"{vendor}:{stream}")
            if job is not None and job.next_run_time is not None:
                out[(vendor, stream)] = job.next_run_time
        return out

    def _runner_now(self, rt: Runtime) -> Callable[[str, str], bool]:
        def run_now(vendor: str, stream: str) -> bool:
            """The status page's "run now": one extra run at once (skipped if one is running)."""
            if (vendor, stream) not in {(v, s) for v, s, _ in self.jobs()}:
                return False
            self._retry_soon(rt, vendor, stream, delay_s=0.0)
            return True

        return run_now

    async def _expiry_job(self) -> None:
        # Daily: a credential that expires soon (AIMMS PRO keys live at most a year).
        for warning in expiry_warnings(self.settings, datetime.now(UTC).date()):
            log.warning("credential expires soon", detail=warning)

    async def _drain(self) -> None:
        if not self._running:
            return
        _, pending = await asyncio.wait(
            set(self._running), timeout=self.settings.daemon.shutdown_grace_s
        )
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(BaseException):
                await task

    async def _serve_health(self, rt: Runtime) -> web.AppRunner:
        async def ready() -> str | None:
            try:
                await check_schema(rt.db)
            except SyncError as exc:
                return str(exc)
            return None

        async def refresh_outbox() -> None:
            if self.replica is not None:
                self.metrics.replicas_live.set(self.replica.live_replicas)
            with contextlib.suppress(Exception):
                async with rt.db.connect() as conn:
                    self.metrics.set_outbox(await outbox_summary(conn))
                    await update_stream_gauges(
                        self.stream_gauges, conn, self.settings, self.scheduled_runs()
                    )

        app = build_health_app(self.registry, ready, refresh_outbox)
        hooks = PageHooks(self.settings, rt.db, self.scheduled_runs, self._runner_now(rt), rt.owner)
        add_status_page(app, hooks)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.settings.daemon.host, self.settings.daemon.port)
        await site.start()
        server: Any = site._server  # aiohttp exposes the bound port only here (port 0)
        # What the server really listens on (tests check it is loopback unless configured).
        self.health_sockets = [s.getsockname()[:2] for s in server.sockets] if server else []
        port = server.sockets[0].getsockname()[1] if server else 0
        self.health_url = f"http://{self.settings.daemon.host}:{port}"
        log.info("health server", url=self.health_url)
        return runner
