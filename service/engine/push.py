"""The push engine: drain the outbox once, batched per (vendor, entity).

Per row, in order: local validation (``invalid``), skip when the payload equals the last
one the vendor accepted for that key (``skipped``), then send. The vendor's per-row verdict
decides ``sent`` or ``rejected``; transient failures go back to ``pending`` with backoff,
and after ``push.max_attempts`` attempts a row is dead-lettered with its last error.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import structlog

from service.db.outbox import (
    DEAD,
    INVALID,
    PENDING,
    REJECTED,
    SENT,
    SKIPPED,
    OutboxRow,
    claim,
    fill_missing_hashes,
    last_accepted_hashes,
    release_claims,
    settle,
)
from service.engine.mapping import apply_mappings
from service.engine.runtime import Runtime
from service.engine.sync import short_error
from service.errors import FatalError, LeaseHeld, RetriableError
from service.http import request_scope
from service.models import JSON

log = structlog.get_logger("service.engine.push")

MAX_ROUNDS = 10_000  # bound on claim rounds per call, far above any real backlog / batch


@dataclass(slots=True)
class RowOutcome:
    vendor: str
    entity: str
    record_key: str
    status: str  # sent | rejected | invalid | skipped | retry | dead | deferred | would-send
    detail: str | None = None


@dataclass(slots=True)
class PushReport:
    outcomes: list[RowOutcome] = field(default_factory=list)
    enqueued_by_mappings: int = 0
    requests: int = 0

    def counts(self) -> dict[tuple[str, str], dict[str, int]]:
        out: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for o in self.outcomes:
            out[(o.vendor, o.entity)][o.status] += 1
        return {k: dict(v) for k, v in out.items()}


def retry_delay_s(base_s: float, attempts: int, rng: random.Random) -> float:
    """Exponential backoff with jitter for the ``attempts``-th failure (1-based)."""
    return float(base_s * 2 ** (attempts - 1) * rng.uniform(0.5, 1.0))


async def push_once(
    rt: Runtime,
    *,
    vendor: str | None = None,
    dry_run: bool = False,
    rng: random.Random | None = None,
    on_batch: Callable[[list[RowOutcome]], None] | None = None,
) -> PushReport:
    """Run mapping rules, then send every due outbox row once (or show it, with dry_run)."""
    with request_scope() as tally:
        report = await _push_rounds(rt, vendor, dry_run, rng or random.Random(), on_batch)
        report.requests = tally.requests
    return report


async def _push_rounds(
    rt: Runtime,
    vendor: str | None,
    dry_run: bool,
    rng: random.Random,
    on_batch: Callable[[list[RowOutcome]], None] | None,
) -> PushReport:
    report = PushReport()
    cfg = rt.settings.push
    if not dry_run:
        rules = [r for r in cfg.mappings if vendor is None or r.target_vendor == vendor]
        report.enqueued_by_mappings = await apply_mappings(rt.db, rules, now=rt.clock())
        async with rt.db.begin() as conn:
            await fill_missing_hashes(conn)
    for _ in range(MAX_ROUNDS):
        async with rt.db.begin() as conn:
            rows = await claim(
                conn,
                rt.owner,
                now=rt.clock(),
                claim_ttl_s=cfg.claim_ttl_s,
                limit=cfg.batch_size,
                vendor=vendor,
            )
        if not rows:
            break
        groups: dict[tuple[str, str], list[OutboxRow]] = defaultdict(list)
        for row in rows:
            groups[(row.vendor, row.entity)].append(row)
        for (v, entity), group in groups.items():
            outcomes = await _push_group(rt, v, entity, group, dry_run=dry_run, rng=rng)
            report.outcomes.extend(outcomes)
            if on_batch is not None:
                on_batch(outcomes)
    if dry_run:  # the preview held its claims so each row shows once; hand them back
        async with rt.db.begin() as conn:
            await release_claims(conn, rt.owner)
    return report


async def _push_group(
    rt: Runtime,
    vendor: str,
    entity: str,
    rows: list[OutboxRow],
    *,
    dry_run: bool,
    rng: random.Random,
) -> list[RowOutcome]:
    cfg = rt.settings.push
    now = rt.clock()
    outcomes: list[RowOutcome] = []
    vendor_cfg = rt.settings.vendors.get(vendor)
    if vendor_cfg is not None and not vendor_cfg.enabled:
        # Disabled for now: keep the rows, unsent and uncounted, for when it is back.
        if not dry_run:
            await _defer(rt, rows, now)
        why = f"vendor {vendor} is disabled in the config"
        return [RowOutcome(vendor, entity, r.record_key, "deferred", why) for r in rows]
    try:
        connector = rt.connector(vendor)
    except Exception as exc:  # not configured, or no connector: nothing can ever send these
        reason = f"cannot push to {vendor}: {short_error(exc)}"
        if not dry_run:
            async with rt.db.begin() as conn:
                for row in rows:
                    await settle(conn, row.id, rt.owner, status=DEAD, now=now, error=reason)
        return [RowOutcome(vendor, entity, r.record_key, "dead", reason) for r in rows]

    async with rt.db.connect() as conn:
        accepted = await last_accepted_hashes(conn, vendor, entity, [r.record_key for r in rows])
    to_send: list[OutboxRow] = []
    local: list[tuple[OutboxRow, str, str]] = []  # (row, status, reason)
    for row in rows:
        invalid = connector.validate_push_row(entity, row.payload)
        if invalid is not None:
            local.append((row, INVALID, invalid))
        elif accepted.get(row.record_key) == row.payload_hash:
            local.append((row, SKIPPED, "unchanged since the last accepted push"))
        else:
            to_send.append(row)
    for row, status, reason in local:
        outcomes.append(RowOutcome(vendor, entity, row.record_key, status, reason))
    if dry_run:
        outcomes.extend(
            RowOutcome(vendor, entity, r.record_key, "would-send", _why(r, accepted))
            for r in to_send
        )
        return outcomes
    async with rt.db.begin() as conn:
        for row, status, reason in local:
            await settle(
                conn,
                row.id,
                rt.owner,
                status=status,
                now=now,
                error=reason if status == INVALID else None,
                count_attempt=False,
            )
    if not to_send:
        return outcomes
    # Within one request a key may appear once; later duplicates wait for the next round.
    batch: list[OutboxRow] = []
    seen: set[str] = set()
    for row in to_send:
        if row.record_key in seen:
            async with rt.db.begin() as conn:
                await settle(conn, row.id, rt.owner, status=PENDING, now=now, count_attempt=False)
            continue
        seen.add(row.record_key)
        batch.append(row)
    try:
        async with rt.vendor_lease(vendor):
            verdicts = await connector.push(entity, [(r.record_key, r.payload) for r in batch])
        results = {v.record_key: v for v in verdicts}
        error: str | None = None
        fatal = False
    except LeaseHeld as exc:
        # Another process drives this vendor now: nothing was sent; try again later.
        await _defer(rt, batch, now)
        outcomes.extend(
            RowOutcome(vendor, entity, r.record_key, "deferred", str(exc)) for r in batch
        )
        return outcomes
    except RetriableError as exc:
        results, error, fatal = {}, short_error(exc), False
    except FatalError as exc:
        results, error, fatal = {}, short_error(exc), True
    now = rt.clock()
    async with rt.db.begin() as conn:
        for row in batch:
            verdict = results.get(row.record_key)
            attempts = row.attempts + 1
            if verdict is not None and verdict.status in ("created", "edited", "accepted"):
                response: JSON = {"status": verdict.status}
                await settle(conn, row.id, rt.owner, status=SENT, now=now, response=response)
                outcomes.append(RowOutcome(vendor, entity, row.record_key, "sent", verdict.status))
            elif verdict is not None and verdict.status == "rejected":
                await settle(
                    conn,
                    row.id,
                    rt.owner,
                    status=REJECTED,
                    now=now,
                    error=verdict.message,
                    response={"status": "rejected", "message": verdict.message},
                )
                outcomes.append(
                    RowOutcome(vendor, entity, row.record_key, "rejected", verdict.message)
                )
            else:
                why = (verdict.message if verdict else None) or error or "no verdict for this row"
                if fatal or attempts >= cfg.max_attempts:
                    await settle(conn, row.id, rt.owner, status=DEAD, now=now, error=why)
                    outcomes.append(RowOutcome(vendor, entity, row.record_key, "dead", why))
                else:
                    delay = retry_delay_s(cfg.backoff_base_s, attempts, rng)
                    await settle(
                        conn,
                        row.id,
                        rt.owner,
                        status=PENDING,
                        now=now,
                        error=why,
                        next_attempt_at=now + timedelta(seconds=delay),
                    )
                    outcomes.append(RowOutcome(vendor, entity, row.record_key, "retry", why))
    log.info(
        "push batch",
        vendor=vendor,
        entity=entity,
        rows=len(batch),
        sent=sum(o.status == "sent" for o in outcomes),
        rejected=sum(o.status == "rejected" for o in outcomes),
    )
    return outcomes


async def _defer(rt: Runtime, rows: list[OutboxRow], now: datetime) -> None:
    """Hand rows back unsent (no attempt counted), due again after a heartbeat."""
    later = now + timedelta(seconds=rt.settings.sync.heartbeat_s)
    async with rt.db.begin() as conn:
        for row in rows:
            await settle(
                conn,
                row.id,
                rt.owner,
                status=PENDING,
                now=now,
                next_attempt_at=later,
                count_attempt=False,
            )


def _why(row: OutboxRow, accepted: dict[str, str]) -> str:
    if row.record_key not in accepted:
        return "never accepted by the vendor before"
    return "payload changed since the last accepted push"
