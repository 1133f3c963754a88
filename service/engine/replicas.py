"""Replicas: daemon processes on one PostgreSQL dividing the limit groups between them.

Each replica registers ``replica:<owner>`` and renews it with every balancing round;
live replicas are those whose row has not expired. A replica is *assigned* at most
⌈groups ÷ live replicas⌉ groups (``assigned:<group lease>`` rows, renewed in the same
round): it gives up its surplus when another replica joins and takes free groups up to
its share, so a dead replica's groups are taken over once their rows expire (within
``lease_ttl_s`` plus one round). A replica schedules only its assigned groups' streams.

The assignment says who *schedules* a group; the group's own lease (taken by each run,
see ``Runtime.vendor_lease``) still says who *drives* it, so a run of a group that just
changed hands never overlaps the previous holder's run, and a manual ``resync`` of an
idle group works as before. On SQLite there is one replica: a second daemon is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import socket
import zlib
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

import structlog

from service.db import (
    acquire_lease,
    live_leases,
    release_lease,
    renew_owned,
    translate_db_errors,
)
from service.db.dialect import is_sqlite_engine
from service.engine.groups import LimitGroup
from service.engine.runtime import Runtime
from service.errors import ConfigError, LeaseHeld, StagingError

log = structlog.get_logger("service.engine.replicas")

REPLICA_PREFIX = "replica:"
ASSIGNED_PREFIX = "assigned:"
SQLITE_REPLICA = "replica:sqlite"  # one name: a second daemon finds it held


def fair_share(groups: int, replicas: int) -> int:
    """The most groups one replica may hold: ⌈groups ÷ live replicas⌉."""
    return math.ceil(groups / max(1, replicas)) if groups else 0


def assigned_name(group: LimitGroup) -> str:
    return f"{ASSIGNED_PREFIX}{group.lease}"


def _dead_here(owner: str) -> bool:
    """Whether ``owner`` (``host:pid:suffix``) was a process of this host that is gone."""
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False  # alive, another user's
    return False


class ReplicaRefused(ConfigError):
    """A second daemon on SQLite (one replica only: no shared leases across machines)."""


class Replica:
    """This daemon's membership: registration, its assigned groups, balancing rounds."""

    def __init__(
        self,
        rt: Runtime,
        groups: Sequence[LimitGroup],
        *,
        on_gained: Callable[[LimitGroup], None] = lambda _: None,
        on_lost: Callable[[LimitGroup], None] = lambda _: None,
        round_s: float | None = None,
    ) -> None:
        self.rt = rt
        self.groups = list(groups)
        self.on_gained = on_gained
        self.on_lost = on_lost
        self.ttl_s = rt.settings.sync.lease_ttl_s
        self.round_s = round_s if round_s is not None else rt.settings.sync.heartbeat_s
        self.sqlite = is_sqlite_engine(rt.db)
        self.name = SQLITE_REPLICA if self.sqlite else f"{REPLICA_PREFIX}{rt.owner}"
        self._mine: dict[str, LimitGroup] = {}  # assigned, by group lease
        self._confirmed_at: datetime | None = None
        self._task: asyncio.Task[None] | None = None
        self.live_replicas = 1

    def assigned(self, lease: str) -> bool:
        """Whether this replica schedules the group ``lease`` now (its assignment is
        confirmed within the ttl: one that may have expired is not relied on)."""
        if lease not in self._mine or self._confirmed_at is None:
            return False
        return self.rt.clock() - self._confirmed_at < timedelta(seconds=self.ttl_s)

    def held(self) -> list[str]:
        return [g.name for g in self._mine.values()]

    async def start(self) -> None:
        """Register (``ReplicaRefused`` on SQLite when another daemon runs), take a first
        share, and keep balancing in the background."""
        try:
            await self._register()
        except LeaseHeld as exc:
            if self.sqlite and _dead_here(exc.owner):
                await self._take_from(exc.owner)  # a crashed daemon: no need to wait
            elif self.sqlite:
                raise ReplicaRefused(
                    f"another daemon ({exc.owner}) already runs on this SQLite database; "
                    "several replicas need PostgreSQL",
                    key="database.url",
                ) from None
            else:
                raise
        await self.balance()
        self._task = asyncio.create_task(self._rounds(), name="replica balancing")

    async def _register(self) -> None:
        with translate_db_errors("registering the replica"):
            async with self.rt.db.begin() as conn:
                await acquire_lease(
                    conn, self.name, self.rt.owner, ttl_s=self.ttl_s, now=self.rt.clock()
                )

    async def _take_from(self, dead: str) -> None:
        log.info("replica lease of a dead process taken over", owner=dead)
        with translate_db_errors("registering the replica"):
            async with self.rt.db.begin() as conn:
                await release_lease(conn, self.name, dead, now=self.rt.clock())
                # Its assignments too: nobody else could be scheduling them.
                for name in await live_leases(conn, ASSIGNED_PREFIX, now=self.rt.clock()):
                    await release_lease(conn, name, dead, now=self.rt.clock())
        await self._register()

    async def _rounds(self) -> None:
        while True:
            await asyncio.sleep(self.round_s)
            try:
                await self.balance()
            except StagingError as exc:
                log.warning("replica balancing failed; retrying", error=str(exc))
            except LeaseHeld as exc:
                log.error("replica registration taken by another process", owner=exc.owner)

    async def balance(self) -> None:
        """One round: renew registration and assignments, then give up surplus groups
        or take free ones up to the fair share."""
        rt, owner = self.rt, self.rt.owner
        now = rt.clock()
        with translate_db_errors("balancing replicas"):
            async with rt.db.begin() as conn:
                await acquire_lease(conn, self.name, owner, ttl_s=self.ttl_s, now=now)
                names = [assigned_name(g) for g in self._mine.values()]
                kept = await renew_owned(conn, names, owner, ttl_s=self.ttl_s, now=now)
                replicas = await live_leases(conn, REPLICA_PREFIX, now=now)
                assigned = await live_leases(conn, ASSIGNED_PREFIX, now=now)
        self._confirmed_at = now
        for lease, group in list(self._mine.items()):
            if assigned_name(group) not in kept:
                log.warning("group taken by another replica", group=group.name)
                del self._mine[lease]
                self.on_lost(group)
        self.live_replicas = max(1, len(replicas))
        share = fair_share(len(self.groups), self.live_replicas)
        surplus = len(self._mine) - share
        if surplus > 0:
            for lease in list(self._mine)[-surplus:]:
                group = self._mine.pop(lease)
                self.on_lost(group)
                with translate_db_errors("releasing a group"):
                    async with rt.db.begin() as conn:
                        await release_lease(conn, assigned_name(group), owner, now=rt.clock())
                log.info("group released to another replica", group=group.name, share=share)
            return
        free = [g for g in self.groups if assigned_name(g) not in assigned]
        # Replicas start at different points of the list, so they seldom contend for one row.
        if free:
            start = zlib.crc32(owner.encode()) % len(free)
            free = free[start:] + free[:start]
        for group in free[: max(0, share - len(self._mine))]:
            try:
                with translate_db_errors("taking a group"):
                    async with rt.db.begin() as conn:
                        await acquire_lease(
                            conn, assigned_name(group), owner, ttl_s=self.ttl_s, now=rt.clock()
                        )
            except LeaseHeld:
                continue  # another replica was quicker
            self._mine[group.lease] = group
            log.info("group taken", group=group.name, share=share, replicas=self.live_replicas)
            self.on_gained(group)

    async def close(self) -> None:
        """Stop balancing and give up every assignment and the registration."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        names = [assigned_name(g) for g in self._mine.values()] + [self.name]
        self._mine.clear()
        try:
            with translate_db_errors("leaving the replicas"):
                async with self.rt.db.begin() as conn:
                    for name in names:
                        await release_lease(conn, name, self.rt.owner, now=self.rt.clock())
        except StagingError as exc:
            log.warning("replica leases not released; they expire by themselves", error=str(exc))
