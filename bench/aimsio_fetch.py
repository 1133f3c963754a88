"""Aimsio GET-one requests/s ÷ the vendor's 10/s cap, at 200 ms sandbox latency.

The sandbox runs in its own process (its clock and event loop independent of ours, as a
real vendor's are) with the vendor's limits on. We list the users once, reset the
sandbox's counters, then fetch every user through the connector: the rate is measured
by the sandbox, from the first GET-one's arrival to the last, with its peak concurrency,
busiest one-second window and violations. With 10 in flight at 200 ms the parallel cap
allows 50/s, so the 10/s rate cap is what binds; the target is ≥ 0.95 of it.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench import size
from bench._sandbox import vendor_first
from service.config import Settings
from service.connectors.aimsio import AimsioConnector
from service.db import migrate
from service.engine.runtime import Runtime

USERS_FULL, USERS_QUICK, USERS_TINY = 600, 150, 10
LATENCY_MS = 200
CAP_PER_S = 10.0
TARGET_RATIO = 0.95


def start_sandbox(records: int) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", "from service.cli import main; main()", "sandbox", "--port", "0",
         "--records", str(records), "--latency-ms", str(LATENCY_MS)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )  # fmt: skip
    assert proc.stdout is not None
    match = re.search(r"http://127\.0\.0\.1:\d+", proc.stdout.readline())
    if not match:
        proc.kill()
        raise SystemExit("sandbox did not start")
    vendor_first(proc.pid)
    return proc, match.group(0)


async def control(http: aiohttp.ClientSession, url: str, what: str) -> Any:
    method = "GET" if what == "stats" else "POST"
    async with http.request(method, f"{url}/aimsio/_sandbox/{what}", json={}) as resp:
        resp.raise_for_status()
        return await resp.json()


async def measure(url: str, users: int, workdir: Path) -> dict[str, Any]:
    db_url = f"sqlite+aiosqlite:///{workdir}/bench.db"
    await migrate(db_url)
    settings = Settings.model_validate(
        {
            "database": {"url": db_url},
            "vendors": {
                "aimsio": {
                    "base_url": f"{url}/aimsio",
                    "max_parallel": 10,
                    "rate_per_s": CAP_PER_S,
                    "auth": {"kind": "basic", "username": "demo", "password": "demo-secret"},
                    "streams": {"User": {}},
                }
            },
        }
    )
    async with aiohttp.ClientSession() as http, Runtime(settings) as rt:
        connector = rt.connector("aimsio")
        assert isinstance(connector, AimsioConnector)
        stubs = await connector.list_stubs("User")
        await asyncio.sleep(1.1)  # let the listing leave the vendor's one-second window
        await control(http, url, "reset")
        started = time.monotonic()
        fetched = [r async for r in connector.fetch_records("User", stubs)]
        elapsed_s = time.monotonic() - started
        stats = await control(http, url, "stats")
    assert len(fetched) == users, len(fetched)
    span_s = stats["arrival_span_s"] or elapsed_s
    rate = (stats["requests"] - 1) / span_s if stats["requests"] > 1 else 0.0
    return {
        "requests": stats["requests"],
        "elapsed_s": elapsed_s,
        "requests_per_s": rate,
        "ratio_to_cap": rate / CAP_PER_S,
        "peak_in_flight": stats["peak_in_flight"],
        "max_per_s": stats["max_per_s"],
        "violations": stats["violation_count"],
        "timeouts": stats["timeouts"],
        "rate_limited": stats["rate_limited"],
    }


def main(quick: bool) -> dict[str, Any]:
    users = size(USERS_FULL, USERS_QUICK, USERS_TINY, is_quick=quick)
    proc, url = start_sandbox(users)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            f = asyncio.run(measure(url, users, Path(tmp)))
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
    print(
        f"aimsio_fetch: {users} GET-one requests, sandbox latency {LATENCY_MS} ms, cap 10/s and 10 in flight"
    )
    rows = [
        ("GET-one requests/s (sandbox-measured)", f"{f['requests_per_s']:.2f}"),
        ("÷ the 10/s cap", f"{f['ratio_to_cap']:.3f} (target ≥ {TARGET_RATIO})"),
        ("busiest 1 s window at the vendor", f"{f['max_per_s']} (cap 10)"),
        ("peak in flight at the vendor", f"{f['peak_in_flight']} (cap 10)"),
        (
            "violations / 429s / timeouts",
            f"{f['violations']} / {f['rate_limited']} / {f['timeouts']}",
        ),
        ("wall time", f"{f['elapsed_s']:.1f} s"),
    ]
    for label, value in rows:
        print(f"  {label:<40} {value}")
    figures = {
        "users": users,
        "latency_ms": LATENCY_MS,
        "requests_per_s": round(f["requests_per_s"], 3),
        "ratio_to_cap": round(f["ratio_to_cap"], 3),
        "peak_in_flight": f["peak_in_flight"],
        "max_per_s": f["max_per_s"],
        "violations": f["violations"],
        "rate_limited": f["rate_limited"],
        "timeouts": f["timeouts"],
        "target": TARGET_RATIO,
        "met": f["ratio_to_cap"] >= TARGET_RATIO and f["violations"] == 0,
    }
    return figures
