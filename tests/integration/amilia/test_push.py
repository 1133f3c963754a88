"""Pushing accounts and persons to the Amilia sandbox through the outbox; 422s per row."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from service.engine.enqueue import PushRow, enqueue_rows
from service.engine.push import push_once
from service.engine.runtime import Runtime
from tests.integration.amilia.conftest import StartAmilia, amilia_settings, vendor_items


def account(i: int, **owner: Any) -> dict[str, Any]:
    person = {"FirstName": "Push", "LastName": f"Owner {i}", "Email": f"owner{i}@example.org"}
    return {"Owners": [{**person, **owner}], "Members": [], "Corporate": False}


async def test_accounts_created_persons_updated_and_422_recorded_per_row(
    engine: AsyncEngine, db_url: str, amilia_sandbox: StartAmilia
) -> None:
    sb = await amilia_sandbox(records=20)
    before = await vendor_items(sb, "accounts?showArchived=true")
    person = before[0]["Owners"][0]
    rows = [PushRow("amilia", "accounts", f"new-{i}", account(i)) for i in range(12)]
    rows.append(PushRow("amilia", "accounts", "bad-gender", account(99, Gender="Robot")))
    rows.append(
        PushRow(
            "amilia",
            "persons",
            str(person["Id"]),
            {"Id": person["Id"], "TelephoneMobile": "514-555-0000"},
        )
    )
    rows.append(
        PushRow("amilia", "persons", "bad-dob", {"Id": person["Id"], "DateOfBirth": "2999-01-01"})
    )
    assert await enqueue_rows(engine, rows) == len(rows)
    settings = amilia_settings(db_url, sb.base_url)
    async with Runtime(settings, db=engine) as rt:
        report = await push_once(rt)
    by_key = {o.record_key: o for o in report.outcomes}
    assert by_key["bad-gender"].status == "rejected"
    assert "Gender" in (by_key["bad-gender"].detail or "")
    assert by_key["bad-dob"].status == "rejected"
    assert all(by_key[f"new-{i}"].status == "sent" for i in range(12))
    assert by_key[str(person["Id"])].status == "sent"
    after = await vendor_items(sb, "accounts?showArchived=true")
    assert len(after) == len(before) + 12
    owners = {o["Id"]: o for a in after for o in a["Owners"]}
    assert owners[person["Id"]]["TelephoneMobile"] == "514-555-0000"
