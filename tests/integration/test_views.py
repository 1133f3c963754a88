"""Staging views on SQLite and PostgreSQL: typed columns, deleted flag, hostile names."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from service.config import Settings
from service.db.tables import staged_record
from service.db.views import infer_kind, plan_columns, refresh_views, safe_identifier, view_name
from service.engine.views import create_views

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
HOSTILE_STREAM = "x'; DROP TABLE staged_record; --\"; DROP TABLE lease; --"
HOSTILE_FIELD = "'); DROP TABLE staged_record; --"


async def stage(engine: AsyncEngine, vendor: str, stream: str, rows: list[dict[str, Any]]) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            sa.insert(staged_record),
            [
                {
                    "vendor": vendor,
                    "stream": stream,
                    "record_key": str(i),
                    "cursor": f"c{i}",
                    "payload": p,
                    "payload_hash": f"h{i}",
                    "first_seen_at": NOW,
                    "synced_at": NOW,
                    "deleted_at": NOW if p.get("gone") else None,
                }
                for i, p in enumerate(rows)
            ],
        )


async def select_all(engine: AsyncEngine, view: str) -> list[dict[str, Any]]:
    q = engine.dialect.identifier_preparer.quote_identifier
    async with engine.connect() as conn:
        rows = await conn.exec_driver_sql(f"SELECT * FROM {q(view)} ORDER BY record_key")
        return [dict(r._mapping) for r in rows]


def test_names_are_safe_identifiers() -> None:
    assert view_name("aimsio", "Employee") == "aimsio__employee"
    assert view_name("aqua", "All Orders (2026)") == "aqua__all_orders_2026"
    hostile = view_name("aimsio", HOSTILE_STREAM)
    assert hostile.replace("_", "").isalnum()
    assert hostile.islower()
    assert safe_identifier("1st") == "c_1st"
    assert safe_identifier("employeeFirstName") == "employee_first_name"
    assert view_name("aimsio", "JobOrder") == "aimsio__job_order"
    assert view_name("imis", "IQAQuery") == "imis__iqa_query"
    long = safe_identifier("x" * 100)
    assert len(long) == 63
    assert long != safe_identifier("x" * 101)
    assert infer_kind([1, None, 2]) == "integer"
    assert infer_kind([1, 2.5]) == "number"
    assert infer_kind([True, False]) == "boolean"
    assert infer_kind([1, "a"]) == "text"
    cols, skipped = plan_columns([{"record_key": 1, "Record Key": 2, 'a"b': 3}])
    assert [c.name for c in cols] == ["record_key_2", "record_key_3"]
    assert skipped == ['a"b']


async def test_view_has_typed_columns_and_deleted_flag(engine: AsyncEngine) -> None:
    await stage(
        engine,
        "aimsio",
        "Employee",
        [
            {"id": 7, "rate": 12.5, "active": True, "name": "Ann", "tags": ["a"], "n": 1},
            {"id": 8, "rate": 3, "active": False, "name": "Bob", "gone": True, "n": "odd"},
        ],
    )
    await stage(engine, "aimsio", "User", [{"id": 1, "login": "u"}])
    async with engine.begin() as conn:
        made = await refresh_views(conn, [("aimsio", "Employee"), ("aimsio", "User")])
    assert [v.name for v in made] == ["aimsio__employee", "aimsio__user"]
    kinds = {c.name: c.kind for c in made[0].columns}
    assert kinds == {
        "id": "integer",
        "rate": "number",
        "active": "boolean",
        "name": "text",
        "tags": "text",
        "n": "text",
        "gone": "boolean",
    }
    rows = await select_all(engine, "aimsio__employee")
    assert [r["id"] for r in rows] == [7, 8]
    assert [r["rate"] for r in rows] == [12.5, 3.0]
    assert [bool(r["active"]) for r in rows] == [True, False]
    assert [bool(r["deleted"]) for r in rows] == [False, True]
    assert [r["name"] for r in rows] == ["Ann", "Bob"]
    assert rows[0]["record_key"] == "0"
    assert rows[0]["cursor"] == "c0"
    assert rows[0]["synced_at"] is not None
    # Only the stream's own rows.
    assert [r["login"] for r in await select_all(engine, "aimsio__user")] == ["u"]
    # Arithmetic works on the typed columns (the point of typing them).
    async with engine.connect() as conn:
        total = await conn.exec_driver_sql("SELECT SUM(id) FROM aimsio__employee")
        assert total.scalar() == 15


async def test_views_are_rebuilt_when_fields_change(engine: AsyncEngine) -> None:
    await stage(engine, "amilia", "Programs", [{"Id": 1, "Name": "swim"}])
    async with engine.begin() as conn:
        await refresh_views(conn, [("amilia", "Programs")])
    async with engine.begin() as conn:
        await conn.execute(sa.delete(staged_record))
    await stage(engine, "amilia", "Programs", [{"Id": "x1", "Title": "run"}])
    async with engine.begin() as conn:
        made = await refresh_views(conn, [("amilia", "Programs")])
    assert [(c.name, c.kind) for c in made[0].columns] == [("id", "text"), ("title", "text")]
    (row,) = await select_all(engine, "amilia__programs")
    assert (row["id"], row["title"], bool(row["deleted"])) == ("x1", "run", False)
    assert "name" not in row


@pytest.mark.parametrize("field", [HOSTILE_FIELD, "50% off", "what?", "$.x", "a.b", "[0]"])
async def test_hostile_names_cannot_inject_sql(engine: AsyncEngine, field: str) -> None:
    payload = {field: "value'\"", 'quote"d': 1, "select": 2, "ok": 3}
    await stage(engine, "aimsio", HOSTILE_STREAM, [payload])
    await stage(engine, "aimsio", "Other", [{"ok": 99}])
    async with engine.begin() as conn:
        (made,) = await refresh_views(conn, [("aimsio", HOSTILE_STREAM)])
    assert made.skipped == ['quote"d']
    rows = await select_all(engine, made.name)
    assert len(rows) == 1  # the hostile stream's row only, not "Other"'s
    by_field = {c.field: c.name for c in made.columns}
    assert rows[0][by_field[field]] == "value'\""
    assert rows[0]["select"] == 2
    assert rows[0]["ok"] == 3
    async with engine.connect() as conn:  # nothing was dropped
        assert (
            await conn.execute(sa.select(sa.func.count()).select_from(staged_record))
        ).scalar() == 2
        await conn.exec_driver_sql("SELECT count(*) FROM lease")


def test_declared_fields_come_first_with_their_kinds() -> None:
    cols, _ = plan_columns(
        [{"extra": 1, "id": "7"}], declared=[("id", "integer"), ("on", "boolean")]
    )
    assert [(c.name, c.kind) for c in cols] == [
        ("id", "integer"),
        ("on", "boolean"),
        ("extra", "integer"),
    ]


async def test_a_connector_declared_view_exists_before_any_data(engine: AsyncEngine) -> None:
    settings = Settings.model_validate(
        {
            "vendors": {
                "aimms": {
                    "base_url": "http://127.0.0.1:9/aimms",
                    "auth": {"kind": "apikey", "api_key": "k"},
                    "streams": {"users": {}, "applications": {}},
                }
            }
        }
    )
    made = {v.name: v for v in await create_views(engine, settings)}
    users = made["aimms__users"]
    assert [c.name for c in users.columns][:6] == [
        "id",
        "name",
        "email",
        "environment",
        "is_active",
        "is_admin",
    ]
    assert made["aimms__applications"].columns == []  # declares none: fields as seen
    assert await select_all(engine, "aimms__users") == []
    await stage(
        engine,
        "aimms",
        "users",
        [{"id": 5, "name": "Ann", "isActive": True, "isAdmin": False, "groups": [1, 2]}],
    )
    await create_views(engine, settings)
    (row,) = await select_all(engine, "aimms__users")
    assert row["id"] == 5
    assert bool(row["is_active"]) is True
    assert row["email"] is None
    assert row["groups"].replace(" ", "") == "[1,2]"
