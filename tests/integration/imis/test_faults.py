"""Auth, faults and restore windows against the iMIS sandbox over real HTTP."""

from __future__ import annotations

import functools

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from service.config import blackout_remaining_s, parse_window
from service.connectors.base import StreamContext
from service.connectors.imis import ImisConnector
from service.engine.runtime import Runtime, login_spec
from service.engine.sync import execute_stream, run_stream
from service.http import HttpClient, RetryPolicy, VendorLimiter
from service.http.logins import build_auth
from service.models import Record
from tests.integration.imis.conftest import (
    FakeTime,
    StartImis,
    at_utc,
    control,
    imis_settings,
    vendor_all,
)
from tests.integration.imis.test_pull import staged, truth


async def test_token_expiry_mid_run_renews_once_and_goes_on(
    db_url: str, imis_sandbox: StartImis
) -> None:
    sb = await imis_sandbox(records=3000)
    settings = imis_settings(db_url, sb.base_url, max_parallel=1)
    async with Runtime(settings, require_schema=False) as rt:
        connector = rt.connector("imis")
        ctx = StreamContext("imis", "Party", None, 500)
        keys: set[str] = set()
        batches = 0
        async for batch in connector.pull(ctx):
            keys.update(r.key for r in batch.records)
            batches += 1
            if batches == 1:  # the sandbox drops every token it issued
                await control(sb, "faults", {"extra": {"token_expire_now": True}})
    assert len(keys) == 3000
    stats = await control(sb, "stats")
    assert stats["by_status"].get("401") == 1  # one refused call, then a fresh token
    assert stats["requests"] == 1 + 6 + 1 + 1  # token, 6 pages, the 401, the new token


async def test_wrong_password_fails_the_run_once_without_leaking_it(
    engine: AsyncEngine, db_url: str, imis_sandbox: StartImis, capsys: pytest.CaptureFixture[str]
) -> None:
    sb = await imis_sandbox(records=10)
    secret = "Wr0ng-Passw0rd-xyz"
    settings = imis_settings(db_url, sb.base_url, password=secret)
    async with Runtime(settings, db=engine) as rt:
        result = await execute_stream(rt, "imis", "Party", "manual")
    assert result.status == "failed"
    assert result.error is not None
    assert secret not in result.error
    assert "imis" in result.error.lower()
    assert "400" in result.error
    stats = await control(sb, "stats")
    assert stats["requests"] == 1  # a refused login is not retried
    async with engine.connect() as conn:
        dump = "\n".join(
            str(row) for row in (await conn.exec_driver_sql("SELECT * FROM sync_run")).all()
        )
    assert secret not in dump
    logged = capsys.readouterr()
    assert "run finished" in logged.out + logged.err  # the logs were captured
    assert secret not in logged.out + logged.err


async def test_five_percent_server_errors_are_retried(
    engine: AsyncEngine, db_url: str, imis_sandbox: StartImis
) -> None:
    sb = await imis_sandbox(records=4000)
    await control(sb, "faults", {"error_rate": 0.05, "error_status": 503})
    settings = imis_settings(
        db_url,
        sb.base_url,
        retry={"max_attempts": 8, "base_s": 0.01, "max_backoff_s": 0.05},
        options={"page_size": 100},
    )
    async with Runtime(settings, db=engine) as rt:
        result = await run_stream(rt, "imis", "Party", "manual")
    assert result.status == "succeeded", result.error
    stats = await control(sb, "stats")
    assert stats["errors_injected"] > 0
    await control(sb, "faults", {"error_rate": 0.0})
    assert await staged(engine, "Party") == await truth(sb, "Party")


@pytest.mark.imis_windows
async def test_restore_window_mid_run_waits_for_its_end_on_a_fake_clock(
    db_url: str, imis_sandbox: StartImis
) -> None:
    sb = await imis_sandbox(records=3000)
    fake = FakeTime(at_utc("2026-03-01T05:58:00"), sb)
    await control(sb, "clock", {"set": fake.now().timestamp()})
    # One call at a time: a call in flight while the fake clock jumps past the window would
    # see its 503 after the window (the HTTP layer then spends its retry budget on it).
    settings = imis_settings(db_url, sb.base_url, max_parallel=1).vendor("imis")
    windows = [parse_window(w) for w in ImisConnector.default_blackouts]
    async with HttpClient(clock=fake.clock, sleep=fake.sleep, now=fake.now) as http:
        limiter = VendorLimiter("imis", 1, 1000, clock=fake.clock, sleep=fake.sleep)
        client = http.register(
            "imis",
            settings.base_url,
            limiter=limiter,
            retry=RetryPolicy(max_attempts=3, base_s=0.01, max_backoff_s=0.05),
            timeout_s=15,
        )
        client.blackout = functools.partial(blackout_remaining_s, windows)
        connector = ImisConnector(settings, client)
        client.auth = build_auth(login_spec(settings.auth, ImisConnector.auth_defaults), client)
        ctx = StreamContext(
            "imis", "Party", None, 500, now=fake.now, clock=fake.clock, sleep=fake.sleep
        )
        records: list[Record] = []
        async for batch in connector.pull(ctx):
            records.extend(batch.records)
            if len(records) == 500:  # the restore starts: the sandbox answers 503
                fake.t += 150  # 06:00:30
                await control(sb, "clock", {"set": fake.now().timestamp()})
    assert len({r.key for r in records}) == 3000
    assert fake.now() >= at_utc("2026-03-01T06:05:00")  # it waited the window out
    assert max(fake.slept) > 300  # in one wait, not by spending retries
    stats = await control(sb, "stats")
    assert stats["by_status"].get("503", 0) >= 1
    assert stats["violations"] == []


@pytest.mark.imis_windows
async def test_a_run_inside_a_window_is_not_started_by_the_scheduler_windows(
    db_url: str, imis_sandbox: StartImis
) -> None:
    """The connector's windows are the documented restores, a minute either side."""
    windows = [parse_window(w) for w in ImisConnector.default_blackouts]
    assert blackout_remaining_s(windows, at_utc("2026-03-01T06:02:00")) > 0
    assert blackout_remaining_s(windows, at_utc("2026-03-01T18:04:00")) > 0
    assert blackout_remaining_s(windows, at_utc("2026-03-01T12:00:00")) == 0


async def test_iqa_query_stream(engine: AsyncEngine, db_url: str, imis_sandbox: StartImis) -> None:
    sb = await imis_sandbox(records=800)
    query = "$/ContactManagement/DefaultSystemQueries/Members"
    streams = {
        "members_s": {
            "query": query,
            "key": "ID",
            "cursor": "LastUpdated",
            "parameters": ["startsWith:S"],
            "filters": {"Status": "eq:A"},
        }
    }
    settings = imis_settings(db_url, sb.base_url, streams=streams, options={"page_size": 20})
    async with Runtime(settings, db=engine) as rt:
        first = await run_stream(rt, "imis", "members_s", "manual")
        again = await run_stream(rt, "imis", "members_s", "manual")
    assert first.status == "succeeded", first.error
    assert again.counts.written == 0
    parties = await vendor_all(sb, "Party", lastName="startsWith:S", status="eq:A")
    want = {p["PartyId"] for p in parties}
    assert 20 < len(want) < 800  # more than a page
    got = await staged(engine, "members_s")
    assert set(got) == want


async def test_unknown_time_zone_is_a_config_error_naming_the_key(
    engine: AsyncEngine, db_url: str, imis_sandbox: StartImis
) -> None:
    sb = await imis_sandbox(records=5)
    settings = imis_settings(db_url, sb.base_url, options={"time_zone": "Mars/Olympus"})
    async with Runtime(settings, db=engine) as rt:
        result = await execute_stream(rt, "imis", "Party", "manual")
    assert result.status == "failed"
    assert "vendors.imis.options.time_zone" in (result.error or "")
