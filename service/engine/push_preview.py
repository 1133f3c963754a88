"""``push --dry-run``: what a push would do now, read only (no claims, no enqueues)."""

from __future__ import annotations

from collections import defaultdict

from service.connectors import connector_class
from service.db import translate_db_errors
from service.db.outbox import OutboxRow, last_accepted_hashes
from service.db.outbox_claim import due_rows
from service.engine.mapping import plan_mappings
from service.engine.push_report import PushOutcomeKind, PushReport, RowOutcome
from service.engine.runtime import Runtime
from service.engine.sync import short_error

K = PushOutcomeKind


async def preview(rt: Runtime, vendor: str | None) -> PushReport:
    """The rows mapping rules would enqueue, then each due row's likely outcome.

    Without requests the vendor's verdict is unknown: a row that passes validation and
    differs from the last accepted payload shows as ``would-send``.
    """
    report = PushReport(dry_run=True)
    cfg = rt.settings.push
    rules = [r for r in cfg.mappings if vendor is None or r.target_vendor == vendor]
    planned = await plan_mappings(rt.db, rules)
    report.enqueued_by_mappings = len(planned)
    newer = set()
    for rule, key in planned:
        newer.add((rule.target_vendor, rule.entity, key))
        why = f"mapping {rule.source_vendor}/{rule.source_stream} → {rule.entity}"
        report.outcomes.append(
            RowOutcome(rule.target_vendor, rule.entity, key, K.WOULD_ENQUEUE, why)
        )
    now = rt.clock()
    after = 0
    while True:
        with translate_db_errors("reading the outbox"):
            async with rt.db.connect() as conn:
                rows = await due_rows(
                    conn, now=now, after_id=after, limit=cfg.batch_size, vendor=vendor
                )
        if not rows:
            return report
        after = rows[-1].id
        groups: dict[tuple[str, str], list[OutboxRow]] = defaultdict(list)
        for row in rows:
            groups[(row.vendor, row.entity)].append(row)
        for (v, entity), group in groups.items():
            report.outcomes.extend(await _preview_group(rt, v, entity, group, newer))


async def _preview_group(
    rt: Runtime,
    vendor: str,
    entity: str,
    rows: list[OutboxRow],
    newer: set[tuple[str, str, str]],
) -> list[RowOutcome]:
    def each(kind: K, why: str) -> list[RowOutcome]:
        return [RowOutcome(vendor, entity, r.record_key, kind, why) for r in rows]

    vendor_cfg = rt.settings.vendors.get(vendor)
    if vendor_cfg is None:
        return each(K.DEAD, f"cannot push to {vendor}: not configured")
    if not vendor_cfg.enabled:
        return each(K.DEFERRED, f"vendor {vendor} is disabled")
    try:
        cls = connector_class(rt.settings.connector_of(vendor))
    except KeyError as exc:
        return each(K.DEAD, f"cannot push to {vendor}: {short_error(exc)}")
    with translate_db_errors("reading accepted payloads"):
        async with rt.db.connect() as conn:
            keys = [r.record_key for r in rows]
            accepted = await last_accepted_hashes(conn, vendor, entity, keys)
    out = []
    for r in rows:
        kind, why = K.WOULD_SEND, "payload changed since the last accepted push"
        if r.superseded or (vendor, entity, r.record_key) in newer:
            kind, why = K.SUPERSEDED, "a newer row exists"
        elif (invalid := cls.validate_push_row(entity, r.payload)) is not None:
            kind, why = K.INVALID, invalid
        elif accepted.get(r.record_key) == r.payload_hash:
            kind, why = K.SKIPPED, "unchanged since the last accepted push"
        elif r.record_key not in accepted:
            why = "never accepted by the vendor before"
        out.append(RowOutcome(vendor, entity, r.record_key, kind, why))
    return out
