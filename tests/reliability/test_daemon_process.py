"""``vendorsync run`` as operators run it: a subprocess against the sandbox and PostgreSQL.

Scheduled runs of every vendor happen; /readyz, /metrics and the status page answer;
SIGTERM ends it cleanly (exit 0) with no lease left behind.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
from pathlib import Path

import aiohttp
import pytest
import sqlalchemy as sa

from service.db import create_engine
from service.db.leases import UNRELEASED
from service.db.tables import lease, sync_run
from tests.conftest import drop_pg_schema, fresh_pg_schema, pg_url_with_schema, require_pg
from tests.reliability.test_cli import VENDORSYNC, sandbox_url

__all__ = ["sandbox_url"]  # fixture

VENDORS = {"aimsio", "aqua", "imis", "amilia", "aimms"}
WAIT_S = 180


def write_config(tmp_path: Path, sandbox_url: str) -> None:
    text = Path("config/vendorsync.toml").read_text().replace("http://127.0.0.1:8765", sandbox_url)
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "vendorsync.toml").write_text(text)


def read(path: Path) -> str:
    return path.read_text()


async def cli(*args: str, cwd: Path, env: dict[str, str]) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *VENDORSYNC,
        *args,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    return proc.returncode or 0, out.decode()


@pytest.mark.timeout(WAIT_S + 120)  # a whole daemon's first runs, on a shared machine
async def test_daemon_process_on_postgresql(tmp_path: Path, sandbox_url: str) -> None:
    base = await require_pg()
    schema = await fresh_pg_schema(base, "daemon")
    db_url = pg_url_with_schema(base, schema)
    write_config(tmp_path, sandbox_url)
    env = {
        **os.environ,
        "PYTHONPATH": str(Path.cwd()),
        "VENDORSYNC_DATABASE__URL": db_url,
        "VENDORSYNC_DAEMON__PORT": "0",
        "VENDORSYNC_LOG_FORMAT": "json",
        # iMIS restore windows would make the test depend on the time of day.
        "VENDORSYNC_VENDORS__IMIS__BLACKOUTS": "[]",
        # A short schedule, to see a second scheduled run come.
        "VENDORSYNC_VENDORS__AMILIA__SCHEDULE": "every 5s",
    }
    engine = create_engine(db_url)
    log_path = tmp_path / "daemon.log"
    try:
        code, out = await cli("migrate", cwd=tmp_path, env=env)
        assert code == 0, out
        log = await asyncio.to_thread(log_path.open, "w")
        with log:
            proc = await asyncio.create_subprocess_exec(
                *VENDORSYNC, "run", cwd=tmp_path, env=env, stdout=log, stderr=log
            )
        try:
            deadline = time.monotonic() + WAIT_S
            url = None
            while url is None:
                assert time.monotonic() < deadline, read(log_path)[-3000:]
                assert proc.returncode is None, read(log_path)[-3000:]
                await asyncio.sleep(0.2)
                found = re.search(r"http://127\.0\.0\.1:\d+", read(log_path))
                url = found.group(0) if found else None

            async def succeeded() -> dict[str, int]:
                async with engine.connect() as conn:
                    rows = await conn.execute(
                        sa.select(sync_run.c.vendor, sa.func.count())
                        .where(sync_run.c.status == "succeeded", sync_run.c.trigger == "schedule")
                        .group_by(sync_run.c.vendor)
                    )
                    return {r[0]: int(r[1]) for r in rows}

            done = await succeeded()
            while set(done) != VENDORS or done.get("amilia", 0) < 12:  # 6 streams × 2 runs
                assert time.monotonic() < deadline, (done, read(log_path)[-3000:])
                await asyncio.sleep(0.5)
                done = await succeeded()

            async with aiohttp.ClientSession() as http:
                async with http.get(f"{url}/readyz") as r:
                    assert r.status == 200
                    assert (await r.json())["status"] == "ready"
                async with http.get(f"{url}/metrics") as r:
                    metrics = await r.text()
                async with http.get(f"{url}/") as r:
                    assert r.status == 200
                    page = await r.text()
            for vendor in VENDORS:
                assert 'vendorsync_runs_total{status="succeeded",stream=' in metrics
                assert f'vendor="{vendor}"' in metrics
                assert f'data-stream="{vendor}/' in page
            assert 'vendorsync_stream_failing{stream="persons",vendor="amilia"} 0.0' in metrics
            assert "Read-only" in page  # no admin token configured
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(proc.wait(), 90)
        assert code == 0, read(log_path)[-3000:]
        async with engine.connect() as conn:
            assert (await conn.execute(sa.select(lease).where(UNRELEASED))).all() == []
            running = await conn.execute(
                sa.select(sa.func.count()).where(sync_run.c.status == "running")
            )
            assert running.scalar_one() == 0
        assert "Traceback" not in read(log_path)
    finally:
        await engine.dispose()
        await drop_pg_schema(base, schema)
