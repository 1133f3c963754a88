"""A 1,000,000-row Aqua CSV export staged: rows/s, ÷ a raw insert of the same rows, peak RSS.

The sandbox runs in its own process (its memory is not ours) with jobs that complete at
once, so the figure is the connector's: create the export job, poll, download the CSV
and parse it as it arrives, stage it through the engine (batches of ``sync.batch_size``,
one transaction each). Then the raw baseline loads the same rows (the same CSV, parsed by
``csv.DictReader``, each row turned into the same stored values: canonical JSON, its
SHA-256, timestamps) in the same batches into a plain table with the same columns and no
indexes: ``executemany`` on SQLite, ``COPY`` on PostgreSQL, once before and once after our
run (their mean is the baseline). Its time excludes the download and the CSV parsing,
which ours includes. Peak RSS is this process's (``ru_maxrss``), the vendorsync side only:
the raw loads hold one batch at a time, so the peak is our runs'.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import aiosqlite
import asyncpg
from sqlalchemy.engine import make_url

from bench import size
from sandbox.aqua.sim import DEMO_CREDENTIALS
from service.config import Settings
from service.db import create_engine, migrate
from service.db.tables import UTCDateTime
from service.engine.runtime import Runtime
from service.engine.sync import run_stream
from service.models import canonical_json

ROWS_FULL, ROWS_QUICK, ROWS_TINY = 1_000_000, 50_000, 2_000
BATCH_ROWS = 1_000
TARGET_RATIO, TARGET_RSS_MB = 0.5, 250.0
DEFAULT_PG_URL = "postgresql+asyncpg://postgres:postgres@127.0.0.1:5432/test"
NOW = datetime(2026, 1, 1, tzinfo=UTC)
COLUMNS = (
    "vendor",
    "stream",
    "record_key",
    "cursor",
    "payload",
    "payload_hash",
    "first_seen_at",
    "synced_at",
    "deleted_at",
    "last_run_id",
)
SANDBOX = """
import asyncio, sys
from sandbox.app import SandboxOptions
from sandbox.server import start_sandbox
async def main():
    options = SandboxOptions(records=int(sys.argv[1]), vendors={"aqua": {"queued_s": 0, "run_s": 0}})
    sb = await start_sandbox(options, vendors=("aqua",))
    print(sb.base_url, flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""


def start_sandbox(records: int) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", SANDBOX, str(records)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    assert proc.stdout is not None
    match = re.search(r"http://127\.0\.0\.1:\d+", proc.stdout.readline())
    if not match:
        proc.kill()
        raise SystemExit("sandbox did not start")
    return proc, match.group(0)


def settings(db_url: str, sandbox_url: str) -> Settings:
    return Settings.model_validate(
        {
            "database": {"url": db_url},
            "sync": {"batch_size": BATCH_ROWS},
            "vendors": {
                "aqua": {
                    "base_url": f"{sandbox_url}/aqua",
                    "timeout_s": 120,
                    "auth": {"kind": "password_grant", **DEMO_CREDENTIALS},
                    "streams": {
                        "Orders": {
                            "options": {
                                "source": "Orders",
                                "view": "All orders",
                                "key": "Order No",
                                "poll_min_s": 0.05,
                                "poll_max_s": 0.5,
                            }
                        }
                    },
                }
            },
        }
    )


async def ours(db_url: str, sandbox_url: str) -> tuple[int, float]:
    await migrate(db_url)
    engine = create_engine(db_url)
    try:
        async with Runtime(settings(db_url, sandbox_url), db=engine) as rt:
            started = time.perf_counter()
            result = await run_stream(rt, "aqua", "Orders", "bench")
            seconds = time.perf_counter() - started
    finally:
        await engine.dispose()
    return result.counts.inserted, seconds


async def download_csv(sandbox_url: str, path: Path) -> None:
    """The same export, fetched once for the raw baseline (outside any timing)."""
    base = f"{sandbox_url}/aqua"
    async with aiohttp.ClientSession() as http:
        form = {"grant_type": "password", **DEMO_CREDENTIALS}
        async with http.post(f"{base}/authentication/v1/authentication/Token", data=form) as r:
            auth = {"Authorization": f"Bearer {(await r.json())['access_token']}"}
        body = {
            "exportType": "View",
            "exportDataSettings": {"source": "Orders", "viewName": "All orders"},
            "outputFormat": "CSV",
            "publishLinkAccessScope": "Private",
        }
        async with http.post(f"{base}/reports/v1.0/exportdata", json=body, headers=auth) as r:
            job = await r.json()
        for _ in range(100):
            async with http.get(
                f"{base}/jobsmanagement/v1.0/backgroundjob/{job['jobId']}", headers=auth
            ) as r:
                if (await r.json())["jobStatus"] == "Completed":
                    break
            await asyncio.sleep(0.05)
        async with http.get(job["publishLink"], headers=auth) as r:
            r.raise_for_status()
            with path.open("wb") as out:
                async for chunk in r.content.iter_chunked(256 * 1024):
                    out.write(chunk)


def raw_batches(path: Path, when: Any) -> Iterator[list[tuple[Any, ...]]]:
    with path.open(encoding="utf-8", newline="") as fh:
        batch = []
        for row in csv.DictReader(fh):
            text = canonical_json(row)
            digest = hashlib.sha256(text.encode()).hexdigest()
            batch.append(
                ("aqua", "Orders", row["Order No"], None, text, digest, when, when, None, 1)
            )
            if len(batch) >= BATCH_ROWS:
                yield batch
                batch = []
        if batch:
            yield batch


async def raw_sqlite(path: Path, csv_path: Path) -> float:
    url = f"sqlite+aiosqlite:///{path}"
    await migrate(url)
    to_text = UTCDateTime().bind_processor(create_engine("sqlite://").dialect)
    assert to_text is not None
    insert = (
        f"INSERT INTO raw_record ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
    )
    async with aiosqlite.connect(path) as db:
        await db.execute("PRAGMA journal_mode=WAL")
        await db.execute("PRAGMA synchronous=NORMAL")
        await db.execute("CREATE TABLE raw_record AS SELECT * FROM staged_record WHERE 0")
        await db.commit()
        started = time.perf_counter()
        for batch in raw_batches(csv_path, to_text(NOW)):
            await db.executemany(insert, batch)
            await db.commit()
        return time.perf_counter() - started


def pg_base_url() -> str:
    return (
        os.environ.get("VENDORSYNC_BENCH_PG_URL")
        or os.environ.get("VENDORSYNC_TEST_PG_URL")
        or DEFAULT_PG_URL
    )


async def pg_connect(base_url: str) -> asyncpg.Connection:
    dsn = make_url(base_url).set(drivername="postgresql").render_as_string(hide_password=False)
    return await asyncpg.connect(dsn, timeout=3)


async def in_pg_schema(
    admin: asyncpg.Connection, base: str, body: Callable[[str, str], Awaitable[Any]]
) -> Any:
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    await admin.execute(f'CREATE SCHEMA "{schema}"')
    try:
        url = make_url(base).update_query_dict({"options": f"-csearch_path={schema}"})
        return await body(url.render_as_string(hide_password=False), schema)
    finally:
        await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


async def pg_raw(admin: asyncpg.Connection, csv_path: Path) -> float:
    async def load(url: str, schema: str) -> float:
        await migrate(url)
        await admin.execute(
            f'CREATE TABLE "{schema}".raw_record (LIKE "{schema}".staged_record INCLUDING DEFAULTS)'
        )
        started = time.perf_counter()
        for batch in raw_batches(csv_path, NOW):
            await admin.copy_records_to_table(
                "raw_record", records=batch, columns=COLUMNS, schema_name=schema
            )
        return time.perf_counter() - started

    seconds: float = await in_pg_schema(admin, pg_base_url(), load)
    return seconds


async def _run(n: int) -> dict[str, Any]:
    """Per database: raw, ours, raw again; the ratio takes the mean of the two raw loads,
    as load on a shared machine drifts over a minute."""
    proc, sandbox_url = start_sandbox(n)
    out: dict[str, Any] = {"rows": n}
    timings: dict[str, dict[str, float]] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="vendorsync-bench-") as tmp:
            work = Path(tmp)
            csv_path = work / "export.csv"
            await download_csv(sandbox_url, csv_path)
            raw_a = await raw_sqlite(work / "raw-a.db", csv_path)
            rows, seconds = await ours(f"sqlite+aiosqlite:///{work / 'ours.db'}", sandbox_url)
            assert rows == n, rows
            raw_b = await raw_sqlite(work / "raw-b.db", csv_path)
            timings["sqlite"] = {"ours_s": seconds, "raw_s": (raw_a + raw_b) / 2}
            admin: asyncpg.Connection | None = None
            try:
                admin = await pg_connect(pg_base_url())
            except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
                out["postgresql"] = f"skipped: {type(exc).__name__}"
            if admin is not None:

                async def pg_ours(url: str, _schema: str) -> tuple[int, float]:
                    return await ours(url, sandbox_url)

                try:
                    raw_a = await pg_raw(admin, csv_path)
                    rows, seconds = await in_pg_schema(admin, pg_base_url(), pg_ours)
                    assert rows == n, rows
                    raw_b = await pg_raw(admin, csv_path)
                    timings["postgresql"] = {"ours_s": seconds, "raw_s": (raw_a + raw_b) / 2}
                finally:
                    await admin.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    # The raw loads hold one batch at a time: the peak is our runs'.
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    for db, t in timings.items():
        out[db] = {
            "rows_per_s": round(n / t["ours_s"]),
            "raw_rows_per_s": round(n / t["raw_s"]),
            "ratio_to_raw": round(t["raw_s"] / t["ours_s"], 3),
            "seconds": round(t["ours_s"], 1),
        }
    out["peak_rss_mb"] = round(peak_mb, 1)
    out["targets"] = {"ratio_to_raw": TARGET_RATIO, "peak_rss_mb": TARGET_RSS_MB}
    return out


def main(quick: bool) -> dict[str, Any]:
    n = size(ROWS_FULL, ROWS_QUICK, ROWS_TINY, is_quick=quick)
    figures = asyncio.run(_run(n))
    print(f"Aqua CSV export of {n:,} rows staged (batches of {BATCH_ROWS:,})")
    print(f"{'database':<12}{'ours rows/s':>14}{'raw rows/s':>14}{'ours ÷ raw':>12}{'seconds':>10}")
    for db in ("sqlite", "postgresql"):
        f = figures.get(db)
        if isinstance(f, dict):
            print(
                f"{db:<12}{f['rows_per_s']:>14,}{f['raw_rows_per_s']:>14,}"
                f"{f['ratio_to_raw']:>12.2f}{f['seconds']:>10.1f}"
            )
        elif f is not None:
            print(f"{db:<12}{f}")
    print(
        f"peak RSS of the vendorsync side: {figures['peak_rss_mb']} MB (target < {TARGET_RSS_MB:.0f})"
    )
    return figures
