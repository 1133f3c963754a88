"""Pushing Party and Activity rows to the iMIS sandbox through the outbox, both databases."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from service.db.tables import push_outbox
from service.engine.enqueue import PushRow, enqueue_rows
from service.engine.push import push_once
from service.engine.runtime import Runtime
from tests.integration.imis.conftest import StartImis, control, imis_settings, vendor_all


def person(i: int, email: str | None = None) -> dict[str, Any]:
    return {
        "PersonName": {"FirstName": "Push", "LastName": f"Person {i}"},
        "Emails": [{"Address": email or f"push{i}@example.org", "EmailType": "_Primary"}],
    }


async def test_push_parties_and_an_activity_with_one_invalid_row(
    engine: AsyncEngine, db_url: str, imis_sandbox: StartImis
) -> None:
    sb = await imis_sandbox(records=20)
    await control(sb, "faults", {"error_rate": 0.15, "error_status": 503})
    rows = [PushRow("imis", "Party", f"new-{i}", person(i)) for i in range(8)]
    rows.append(PushRow("imis", "Party", "bad-email", person(99, email="not-an-address")))
    rows.append(
        PushRow("imis", "Party", "edit-101", {"PartyId": "101", **person(101)}),
    )
    rows.append(
        PushRow(
            "imis",
            "Activity",
            "act-1",
            {"Properties": {"ACTIVITY_TYPE": "NOTE", "PartyId": "102", "DESCRIPTION": "hi"}},
        )
    )
    assert await enqueue_rows(engine, rows) == len(rows)
    settings = imis_settings(
        db_url,
        sb.base_url,
        retry={"max_attempts": 10, "base_s": 0.01, "max_backoff_s": 0.05},
        push={"batch_size": 20},
    )
    async with Runtime(settings, db=engine) as rt:
        report = await push_once(rt)
    by_key = {o.record_key: o for o in report.outcomes}
    assert by_key["bad-email"].status == "rejected"
    assert "not a valid email address" in (by_key["bad-email"].detail or "")
    assert all(o.status == "sent" for k, o in by_key.items() if k != "bad-email"), by_key
    async with engine.connect() as conn:
        t = push_outbox.c
        q = sa.select(t.record_key, t.status, t.last_error)
        stored = {k: (s, e) for k, s, e in (await conn.execute(q)).all()}
    assert stored["bad-email"][0] == "rejected"
    assert "not a valid email address" in (stored["bad-email"][1] or "")
    await control(sb, "faults", {"error_rate": 0.0})
    parties = await vendor_all(sb, "Party", lastName="startsWith:Person")
    names = sorted(p["PersonName"]["LastName"] for p in parties)
    assert names == sorted(f"Person {i}" for i in [*range(8), 101])
    activities = await vendor_all(sb, "Activity", description="eq:hi")
    assert len(activities) == 1
