"""Property: any sequence of upserts and deletes leaves the last payload per key, and every
call's counts match a plain-dict model of the table."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncEngine

from service.db import fetch_live, soft_delete_keys, upsert_records
from service.models import Record, UpsertCounts

T0 = datetime(2024, 1, 1, tzinfo=UTC)
KEYS = st.sampled_from(["a", "b", "c", "d", "e"])
PAYLOADS = st.dictionaries(st.sampled_from(["x", "y"]), st.integers(0, 2), max_size=2)
UPSERT = st.tuples(st.just("upsert"), st.lists(st.tuples(KEYS, PAYLOADS), max_size=8))
DELETE = st.tuples(st.just("delete"), st.lists(KEYS, max_size=3))
OPS = st.lists(st.one_of(UPSERT, UPSERT, DELETE), min_size=1, max_size=6)


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(ops=OPS)
async def test_upserts_match_a_dict_model(engine: AsyncEngine, ops: list[tuple[str, Any]]) -> None:
    vendor, stream = "prop", uuid.uuid4().hex  # a fresh stream per example, same database
    live: dict[str, dict[str, int]] = {}
    deleted: dict[str, dict[str, int]] = {}
    for step, (op, items) in enumerate(ops):
        now = T0 + timedelta(minutes=step)
        async with engine.begin() as conn:
            if op == "delete":
                gone = await soft_delete_keys(conn, vendor, stream, items, now=now)
                expected_gone = {k for k in items if k in live}
                assert gone == len(expected_gone)
                for k in expected_gone:
                    deleted[k] = live.pop(k)
                continue
            records = [Record(stream=stream, key=k, payload=p) for k, p in items]
            counts = await upsert_records(conn, vendor, stream, records, run_id=None, now=now)
        expected = UpsertCounts()
        for k, p in {k: p for k, p in items}.items():
            if k in live:
                if live[k] == p:
                    expected.unchanged += 1
                else:
                    expected.updated += 1
            elif k in deleted:
                expected.updated += 1
                deleted.pop(k)
            else:
                expected.inserted += 1
            live[k] = p
        assert counts == expected
        async with engine.connect() as conn:
            assert await fetch_live(conn, vendor, stream) == live
