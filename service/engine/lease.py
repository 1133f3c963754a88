"""A held lease: heartbeat with retries, fencing while unconfirmed, release on every exit.

A lease row expires ``ttl_s`` after its last renewal. Another process may take it once
it has expired, so this process must stop using what the lease guards *before* then
whenever it cannot prove the lease is still its own:

* a renewal that fails (database down, locked, timed out) or takes longer than
  ``confirm_within_s`` calls ``on_unconfirmed`` at once (the vendor lease fences its
  limiter: no new request leaves); the next successful renewal calls ``on_confirmed``;
* failed renewals are retried with backoff, never raised into the runs that share it;
* a lease found taken by another process, or left unconfirmed for ``give_up_s``, is
  *lost*: ``lost`` is set with a reason, and the runs holding it stop (see ``guard``).
* ``release()`` never raises: a release the database refuses leaves the row to expire.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Coroutine
from datetime import datetime, timedelta
from typing import Any, TypeVar

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from service.db import acquire_lease, release_lease, renew_lease, translate_db_errors
from service.db.leases import TakenOver
from service.errors import LeaseHeld, LeaseLost, StagingError

log = structlog.get_logger("service.engine.lease")

T = TypeVar("T")
Notify = Callable[[str], None]
RELEASE_ATTEMPTS = 3
RELEASE_RETRY_S = 0.2


def _noop(_: str) -> None:
    return None


class HeldLease:
    """One lease this process holds, with its heartbeat task."""

    def __init__(
        self,
        db: AsyncEngine,
        name: str,
        owner: str,
        *,
        ttl_s: float,
        heartbeat_s: float,
        now: Callable[[], datetime],
        on_unconfirmed: Notify = _noop,
        on_confirmed: Callable[[], None] = lambda: None,
        give_up_s: float | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        self.db = db
        self.name = name
        self.owner = owner
        self.ttl_s = ttl_s
        self.heartbeat_s = heartbeat_s
        # A renewal slower than this leaves the lease unconfirmed; both beats together
        # stay well inside the ttl, so the fence falls before another process may take it.
        self.confirm_within_s = max(0.05, min(heartbeat_s, ttl_s - heartbeat_s) / 2)
        self.give_up_s = give_up_s if give_up_s is not None else 2 * ttl_s
        self._now = now
        self._mono = monotonic
        self._sleep = sleep
        self._on_unconfirmed = on_unconfirmed
        self._on_confirmed = on_confirmed
        self.expires_at: datetime | None = None
        self.unconfirmed: str | None = None
        self.lost = asyncio.Event()
        self.lost_reason: str | None = None
        self.took_over: TakenOver | None = None  # another owner's released or lapsed lease we took
        self._beat: asyncio.Task[None] | None = None

    async def acquire(self) -> None:
        """Take the lease (``LeaseHeld`` when another process has it) and start beating."""
        now = self._now()
        with translate_db_errors(f"taking lease {self.name}"):
            async with self.db.begin() as conn:
                self.took_over = await acquire_lease(
                    conn, self.name, self.owner, ttl_s=self.ttl_s, now=now
                )
        self.expires_at = now + timedelta(seconds=self.ttl_s)
        self._beat = asyncio.create_task(self._heartbeat(), name=f"heartbeat {self.name}")

    async def _renew(self) -> None:
        """Extend the lease, or take it back if it expired and nobody took it meanwhile."""
        now = self._now()
        with translate_db_errors(f"renewing lease {self.name}"):
            async with self.db.begin() as conn:
                if not await renew_lease(conn, self.name, self.owner, ttl_s=self.ttl_s, now=now):
                    await acquire_lease(conn, self.name, self.owner, ttl_s=self.ttl_s, now=now)
        self.expires_at = now + timedelta(seconds=self.ttl_s)

    def _unconfirm(self, why: str) -> None:
        if self.unconfirmed is None:
            log.warning(
                "lease unconfirmed: pausing what it guards",
                lease=self.name,
                reason=why,
                expires_at=self.expires_at.isoformat() if self.expires_at else None,
            )
        self.unconfirmed = why
        self._on_unconfirmed(f"lease {self.name} unconfirmed: {why}")

    def _confirm(self) -> None:
        if self.unconfirmed is not None:
            log.info("lease confirmed again", lease=self.name)
            self.unconfirmed = None
            self._on_confirmed()

    def _lose(self, why: str) -> None:
        self.lost_reason = f"lease {self.name} lost: {why}"
        log.error("lease lost", lease=self.name, reason=why)
        self._on_unconfirmed(self.lost_reason)
        self.lost.set()

    async def _heartbeat(self) -> None:
        last_ok = self._mono()
        failures = 0
        while True:
            delay = self.heartbeat_s if failures == 0 else min(self.heartbeat_s, 0.1 * 2**failures)
            await self._sleep(delay)
            renewal = asyncio.create_task(self._renew())
            try:
                done, _ = await asyncio.wait({renewal}, timeout=self.confirm_within_s)
                if not done:
                    self._unconfirm(f"renewal is taking over {self.confirm_within_s:.2f}s")
                    left = max(0.0, last_ok + self.give_up_s - self._mono())
                    done, _ = await asyncio.wait({renewal}, timeout=left)
                    if not done:
                        renewal.cancel()
                        self._lose(f"not renewed for {self.give_up_s:.0f}s")
                        return
                renewal.result()
            except LeaseHeld as exc:
                self._lose(f"taken by {exc.owner}")
                return
            except StagingError as exc:
                failures += 1
                self._unconfirm(str(exc))
                if self._mono() - last_ok >= self.give_up_s:
                    self._lose(f"not renewed for {self.give_up_s:.0f}s ({exc})")
                    return
                continue
            finally:
                if not renewal.done():
                    renewal.cancel()
                    with contextlib.suppress(BaseException):
                        await renewal
            failures = 0
            last_ok = self._mono()
            self._confirm()

    async def release(self) -> None:
        """Stop beating and give the lease up; never raises (a stuck row just expires)."""
        if self._beat is not None:
            self._beat.cancel()
            with contextlib.suppress(BaseException):
                await self._beat
        if self.lost.is_set():
            return
        for attempt in range(RELEASE_ATTEMPTS):
            try:
                with translate_db_errors(f"releasing lease {self.name}"):
                    async with self.db.begin() as conn:
                        await release_lease(conn, self.name, self.owner, now=self._now())
                return
            except StagingError as exc:
                if attempt == RELEASE_ATTEMPTS - 1:
                    log.warning(
                        "lease not released; it expires by itself",
                        lease=self.name,
                        expires_at=self.expires_at.isoformat() if self.expires_at else None,
                        error=str(exc),
                    )
                    return
                await self._sleep(RELEASE_RETRY_S * (attempt + 1))


async def guard(coro: Coroutine[Any, Any, T], leases: list[HeldLease]) -> T:
    """Run ``coro`` unless one of ``leases`` is lost first; then cancel it and raise
    ``LeaseLost`` (the work stops: another process may be driving the same thing)."""
    work = asyncio.ensure_future(coro)
    watchers = [asyncio.ensure_future(h.lost.wait()) for h in leases]
    try:
        done, _ = await asyncio.wait([work, *watchers], return_when=asyncio.FIRST_COMPLETED)
        if work in done:
            return work.result()
        work.cancel()
        with contextlib.suppress(BaseException):
            await work
        reason = next(h.lost_reason for h in leases if h.lost.is_set())
        raise LeaseLost(reason or "lease lost")
    finally:
        for w in watchers:
            w.cancel()
        if not work.done():
            work.cancel()
            with contextlib.suppress(BaseException):
                await work
