"""The push engine: drain the outbox once, batched per (vendor, entity).

Per row, in order: local validation (``invalid``), skip when the payload equals the last
one the vendor accepted for that key (``skipped``), then send; a row with a newer row for
its key is ``superseded`` instead (checked again under the vendor's lease, just before
the request). The vendor's per-row verdict decides ``sent`` or ``rejected``; transient
failures go back to ``pending`` with backoff, and after ``push.max_attempts`` attempts a
row is dead-lettered with its last error. Two failures never dead-letter: an auth failure
pauses the vendor for the round (rows wait, no attempt spent) and an unexpected exception
is a bug (logged, counted, retried with backoff).
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime, timedelta

import structlog

from service.connectors import Connector
from service.db import translate_db_errors
from service.db.outbox import (
    DEAD,
    INVALID,
    PENDING,
    REJECTED,
    SENT,
    SKIPPED,
    OutboxRow,
    Settlement,
    fill_missing_hashes,
    last_accepted_hashes,
)
from service.db.outbox_claim import claim, settle, supersede_claimed
from service.engine.mapping import apply_mappings
from service.engine.push_preview import preview
from service.engine.push_report import PushOutcomeKind, PushReport, RowOutcome
from service.engine.runtime import Runtime
from service.engine.sync import short_error
from service.errors import (
    AuthError,
    ConfigError,
    FatalError,
    LeaseHeld,
    RetriableError,
    SyncError,
)
from service.http import request_scope
from service.models import JSON

__all__ = ["PushOutcomeKind", "PushReport", "RowOutcome", "push_once", "retry_delay_s"]

log = structlog.get_logger("service.engine.push")
K = PushOutcomeKind

MAX_ROUNDS = 10_000  # bound on claim rounds per call, far above any real backlog / batch
ACCEPTED = ("created", "edited", "accepted")


def retry_delay_s(base_s: float, attempts: int, rng: random.Random) -> float:
    """Exponential backoff with jitter for the ``attempts``-th failure (1-based)."""
    return float(base_s * 2 ** (attempts - 1) * rng.uniform(0.5, 1.0))


def backoff_until(
    now: datetime, base_s: float, rows: list[OutboxRow], rng: random.Random
) -> dict[int, datetime]:
    """Attempt number → when to try again; one time per attempt number, not per row, so
    a failed batch settles in a few UPDATEs (its rows were sent together anyway)."""
    numbers = sorted({r.attempts + 1 for r in rows})
    return {n: now + timedelta(seconds=retry_delay_s(base_s, n, rng)) for n in numbers}


async def push_once(
    rt: Runtime,
    *,
    vendor: str | None = None,
    dry_run: bool = False,
    rng: random.Random | None = None,
    on_batch: Callable[[list[RowOutcome]], None] | None = None,
) -> PushReport:
    """Run mapping rules, then send every due outbox row once.

    With ``dry_run`` nothing is written or sent: the report shows what the mapping rules
    would enqueue and what would happen to each due row.
    """
    if dry_run:
        return await preview(rt, vendor)
    with request_scope() as tally:
        report = await _push_rounds(rt, vendor, rng or random.Random(), on_batch)
        report.requests = tally.requests
    return report


async def _push_rounds(
    rt: Runtime,
    vendor: str | None,
    rng: random.Random,
    on_batch: Callable[[list[RowOutcome]], None] | None,
) -> PushReport:
    report = PushReport()
    cfg = rt.settings.push
    with translate_db_errors("completing outbox rows inserted by SQL"):
        async with rt.db.begin() as conn:
            await fill_missing_hashes(conn)
    rules = [r for r in cfg.mappings if vendor is None or r.target_vendor == vendor]
    report.enqueued_by_mappings = await apply_mappings(rt.db, rules, now=rt.clock())
    for _ in range(MAX_ROUNDS):
        with translate_db_errors("claiming outbox rows"):
            async with rt.db.begin() as conn:
                rows = await claim(
                    conn,
                    rt.owner,
                    now=rt.clock(),
                    claim_ttl_s=cfg.claim_ttl_s,
                    limit=cfg.batch_size,
                    vendor=vendor,
                    skip_vendors=report.auth_failures.keys(),
                )
        if not rows:
            break
        groups: dict[tuple[str, str], list[OutboxRow]] = defaultdict(list)
        for row in rows:
            groups[(row.vendor, row.entity)].append(row)
        for (v, entity), group in groups.items():
            outcomes = await _push_group(rt, report, v, entity, group, rng=rng)
            report.outcomes.extend(outcomes)
            if on_batch is not None:
                on_batch(outcomes)
    return report


async def _settle(rt: Runtime, items: list[tuple[OutboxRow, Settlement]]) -> None:
    if not items:
        return
    with translate_db_errors("recording push outcomes"):
        async with rt.db.begin() as conn:
            await settle(conn, rt.owner, [(r.id, s) for r, s in items], now=rt.clock())


def _outcomes(
    vendor: str, entity: str, rows: list[OutboxRow], kind: K, why: str | None
) -> list[RowOutcome]:
    return [RowOutcome(vendor, entity, r.record_key, kind, why) for r in rows]


async def _wait(rt: Runtime, rows: list[OutboxRow], *, later: datetime | None) -> None:
    """Hand rows back unsent, no attempt counted (due again at ``later``, or at once)."""
    s = Settlement(PENDING, next_attempt_at=later, count_attempt=False)
    await _settle(rt, [(r, s) for r in rows])


async def _bug(
    rt: Runtime, report: PushReport, rows: list[OutboxRow], exc: Exception, rng: random.Random
) -> list[RowOutcome]:
    """An unexpected exception is our bug, not the rows' fault: retry them with backoff
    (attempts counted, so the backoff grows) but never dead-letter them for it."""
    report.bugs += 1
    log.exception("push bug: rows left for retry", rows=len(rows), error=short_error(exc))
    why = f"unexpected error (left for retry): {short_error(exc)}"
    later = backoff_until(rt.clock(), rt.settings.push.backoff_base_s, rows, rng)
    await _settle(
        rt, [(r, Settlement(PENDING, why, next_attempt_at=later[r.attempts + 1])) for r in rows]
    )
    return _outcomes(rows[0].vendor, rows[0].entity, rows, K.ERROR, why)


async def _push_group(
    rt: Runtime,
    report: PushReport,
    vendor: str,
    entity: str,
    rows: list[OutboxRow],
    *,
    rng: random.Random,
) -> list[RowOutcome]:
    vendor_cfg = rt.settings.vendors.get(vendor)
    if vendor_cfg is not None and not vendor_cfg.enabled:
        # Disabled for now: keep the rows, unsent and uncounted, for when it is back.
        await _wait(rt, rows, later=rt.clock() + timedelta(seconds=rt.settings.sync.heartbeat_s))
        return _outcomes(vendor, entity, rows, K.DEFERRED, f"vendor {vendor} is disabled")
    if vendor in report.auth_failures:
        await _wait(rt, rows, later=None)
        return _outcomes(vendor, entity, rows, K.PAUSED, report.auth_failures[vendor])
    try:
        connector = rt.connector(vendor)
    except (ConfigError, KeyError) as exc:  # not configured, or no connector for it
        reason = f"cannot push to {vendor}: {short_error(exc)}"
        await _settle(rt, [(r, Settlement(DEAD, reason)) for r in rows])
        return _outcomes(vendor, entity, rows, K.DEAD, reason)
    except Exception as exc:
        return await _bug(rt, report, rows, exc, rng)
    try:
        invalid = {r.id: connector.validate_push_row(entity, r.payload) for r in rows}
    except Exception as exc:
        return await _bug(rt, report, rows, exc, rng)

    with translate_db_errors("reading accepted payloads"):
        async with rt.db.connect() as conn:
            keys = [r.record_key for r in rows]
            accepted = await last_accepted_hashes(conn, vendor, entity, keys)
    outcomes: list[RowOutcome] = []
    local: list[tuple[OutboxRow, Settlement]] = []
    batch: list[OutboxRow] = []
    for row in rows:
        bad = invalid[row.id]
        if bad is not None:
            local.append((row, Settlement(INVALID, bad, count_attempt=False)))
            outcomes.append(RowOutcome(vendor, entity, row.record_key, K.INVALID, bad))
        elif accepted.get(row.record_key) == row.payload_hash:
            local.append((row, Settlement(SKIPPED, count_attempt=False)))
            why = "unchanged since the last accepted push"
            outcomes.append(RowOutcome(vendor, entity, row.record_key, K.SKIPPED, why))
        else:
            batch.append(row)
    await _settle(rt, local)
    if batch:
        outcomes.extend(await _send(rt, report, connector, vendor, entity, batch, rng=rng))
    return outcomes


async def _send(
    rt: Runtime,
    report: PushReport,
    connector: Connector,
    vendor: str,
    entity: str,
    batch: list[OutboxRow],
    *,
    rng: random.Random,
) -> list[RowOutcome]:
    outcomes: list[RowOutcome] = []
    results: dict[str, tuple[str, str | None]] = {}
    error: str | None = None
    fatal = False
    try:
        async with rt.vendor_lease(vendor):
            # Under the lease no other process sends to this vendor: a row that a newer
            # one overtook meanwhile must not be sent after it.
            with translate_db_errors("checking for newer outbox rows"):
                async with rt.db.begin() as conn:
                    gone = await supersede_claimed(conn, rt.owner, [r.id for r in batch])
            if gone:
                done = [r for r in batch if r.id in gone]
                outcomes += _outcomes(vendor, entity, done, K.SUPERSEDED, "a newer row exists")
                batch = [r for r in batch if r.id not in gone]
            if batch:
                verdicts = await connector.push(entity, [(r.record_key, r.payload) for r in batch])
                results = {v.record_key: (v.status, v.message) for v in verdicts}
    except LeaseHeld as exc:
        # Another process drives this vendor now: nothing was sent; try again later.
        later = rt.clock() + timedelta(seconds=rt.settings.sync.heartbeat_s)
        await _wait(rt, batch, later=later)
        return outcomes + _outcomes(vendor, entity, batch, K.DEFERRED, str(exc))
    except AuthError as exc:
        # Wrong credentials fail every row alike: pause the vendor, spend no attempts.
        why = Exception.__str__(exc)  # without the "[vendor]" prefix: the report names it
        report.auth_failures[vendor] = why
        log.error("push paused: authentication failed", vendor=vendor, error=why)
        await _wait(rt, batch, later=None)
        return outcomes + _outcomes(vendor, entity, batch, K.PAUSED, why)
    except RetriableError as exc:
        error = short_error(exc)
    except FatalError as exc:
        error, fatal = short_error(exc), True
    except SyncError:
        raise  # the database (lease, outbox) failed: the claims expire and are retaken
    except Exception as exc:
        return outcomes + await _bug(rt, report, batch, exc, rng)
    if not batch:
        return outcomes
    outcomes += await _record_verdicts(rt, vendor, entity, batch, results, error, fatal, rng)
    return outcomes


async def _record_verdicts(
    rt: Runtime,
    vendor: str,
    entity: str,
    batch: list[OutboxRow],
    results: dict[str, tuple[str, str | None]],
    error: str | None,
    fatal: bool,
    rng: random.Random,
) -> list[RowOutcome]:
    cfg = rt.settings.push
    now = rt.clock()
    items: list[tuple[OutboxRow, Settlement]] = []
    outcomes: list[RowOutcome] = []
    later = backoff_until(now, cfg.backoff_base_s, batch, rng)
    for row in batch:
        status, message = results.get(row.record_key, (None, None))
        kind: K
        why: str | None
        if status in ACCEPTED:
            response: JSON = {"status": status}
            s, kind, why = Settlement(SENT, response=response), K.SENT, status
        elif status == "rejected":
            response = {"status": "rejected", "message": message}
            s, kind, why = Settlement(REJECTED, message, response), K.REJECTED, message
        else:
            why = message or error or "no verdict for this row"
            attempts = row.attempts + 1
            if fatal or attempts >= cfg.max_attempts:
                s, kind = Settlement(DEAD, why), K.DEAD
            else:
                s = Settlement(PENDING, why, next_attempt_at=later[attempts])
                kind = K.RETRY
        items.append((row, s))
        outcomes.append(RowOutcome(vendor, entity, row.record_key, kind, why))
    await _settle(rt, items)
    log.info(
        "push batch",
        vendor=vendor,
        entity=entity,
        rows=len(batch),
        sent=sum(o.status == K.SENT for o in outcomes),
        rejected=sum(o.status == K.REJECTED for o in outcomes),
    )
    return outcomes
