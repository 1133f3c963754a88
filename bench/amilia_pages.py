"""Amilia page-following: requests/s ÷ the vendor's 100/s cap, at 100 ms sandbox latency.

The sandbox runs in its own process (only the Amilia simulator) with the vendor's limit
on (100 per sliding second per client address, 429 beyond). We walk ``accounts`` once
with the limit lifted to warm the sandbox's page cache (so the measurement is of the
client, not of the simulator rendering pages), reset its counters, then walk it through
the connector: the first page tells ``TotalCount`` and the rest are fetched concurrently
under the limiter. Rates are measured by the sandbox, from the first arrival to the last.
The measured walk is a scheduled run's: it knows the count the last run listed and asks
for those pages together with the first; the first walk ever (which must wait a round
trip for the first page's total) is reported beside it.
A short sequential walk (following ``Paging.Next``) is measured for comparison, and the
sandbox's own CPU per request is read from ``/proc``.
"""

from __future__ import annotations

import asyncio
import base64
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench import size
from bench._sandbox import vendor_first
from service.config import Settings
from service.connectors.amilia import AmiliaConnector
from service.db import migrate
from service.engine.runtime import Runtime

ACCOUNTS_FULL, ACCOUNTS_QUICK, ACCOUNTS_TINY = 200_000, 50_000, 2_000
PER_PAGE = 200
LATENCY_MS = 100
CAP_PER_S = 100.0
TARGET_RATIO = 0.95
SEQUENTIAL_PAGES = 20
ORG = "/amilia/api/v3/en/org/8008"
ROOT = str(Path(__file__).resolve().parents[1])

SERVE = """
import asyncio, sys
from sandbox.app import SandboxOptions
from sandbox.server import start_sandbox
async def main():
    sb = await start_sandbox(
        SandboxOptions(records=int(sys.argv[1]), seed=42, latency_ms=float(sys.argv[2])),
        vendors=("amilia",),
    )
    print(sb.base_url, flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""


async def start_sandbox(records: int) -> tuple[asyncio.subprocess.Process, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SERVE, str(records), str(LATENCY_MS),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": ROOT},
    )  # fmt: skip
    assert proc.stdout is not None
    line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode().strip()
    if not line.startswith("http://127.0.0.1:"):
        proc.kill()
        raise SystemExit("sandbox did not start")
    vendor_first(proc.pid)
    return proc, line


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def control(http: aiohttp.ClientSession, url: str, what: str, body: Any = None) -> Any:
    method = "GET" if what == "stats" else "POST"
    async with http.request(method, f"{url}/amilia/_sandbox/{what}", json=body or {}) as resp:
        resp.raise_for_status()
        return await resp.json()


async def warm(http: aiohttp.ClientSession, url: str, pages: int) -> None:
    """Read every page once, limits lifted, so the sandbox serves them from its cache."""
    basic = base64.b64encode(b"demo@amilia.test:demo-secret").decode()
    async with http.get(f"{url}/amilia/api/v3/authenticate", headers={"Authorization": f"Basic {basic}"}) as r:  # fmt: skip
        token = (await r.json())["Token"]
    sem = asyncio.Semaphore(8)

    async def one(page: int) -> None:
        query = f"showArchived=true&perPage={PER_PAGE}&page={page}"
        async with (
            sem,
            http.get(
                f"{url}{ORG}/accounts?{query}", headers={"Authorization": f"Bearer {token}"}
            ) as r,
        ):
            await r.read()

    await asyncio.gather(*(one(p) for p in range(1, pages + 1)))


async def measure(proc: asyncio.subprocess.Process, url: str, records: int, workdir: Path) -> dict[str, Any]:  # fmt: skip
    db_url = f"sqlite+aiosqlite:///{workdir}/bench.db"
    await migrate(db_url)
    settings = Settings.model_validate(
        {
            "database": {"url": db_url},
            "vendors": {
                "amilia": {
                    "base_url": f"{url}/amilia",
                    "max_parallel": 20,
                    "rate_per_s": CAP_PER_S,
                    "auth": {
                        "kind": "basic_jwt",
                        "username": "demo@amilia.test",
                        "password": "demo-secret",
                    },
                    "options": {"per_page": PER_PAGE},
                    "streams": {"accounts": {}},
                }
            },
        }
    )
    pages = -(-records // PER_PAGE)
    async with aiohttp.ClientSession() as http, Runtime(settings) as rt:
        connector = rt.connector("amilia")
        assert isinstance(connector, AmiliaConnector)
        await control(http, url, "faults", {"limits": {"enabled": False}})
        cold_cpu = cpu_s(proc.pid)
        await warm(http, url, pages)
        cold_cpu_per_req = (cpu_s(proc.pid) - cold_cpu) / pages
        await control(http, url, "faults", {"limits": {"enabled": True}})
        await connector.client.auth.headers()  # type: ignore[union-attr]  # log in first
        await asyncio.sleep(1.1)  # let the login leave the vendor's one-second window
        first = await walk(http, url, proc, connector, None)
        # A scheduled run knows how many records the last one listed (its stream state)
        # and asks for their pages together with the first: the steady state measured.
        await asyncio.sleep(1.1)
        later = await walk(http, url, proc, connector, first["records"])
        # Sequential following of Paging.Next, for comparison.
        await asyncio.sleep(1.1)
        await control(http, url, "reset", {"faults": False})
        seq_started = time.monotonic()
        next_url: str | None = f"{ORG}/accounts?showArchived=true&perPage={PER_PAGE}"
        for _ in range(SEQUENTIAL_PAGES):
            if next_url is None:
                break
            path = next_url.removeprefix("/amilia")
            body = (await connector.client.request("GET", path, expect_json=True)).json()
            next_url = body["Paging"]["Next"]
        seq_rate = SEQUENTIAL_PAGES / (time.monotonic() - seq_started)
    assert first["records"] == later["records"] == records, (first, later, records)
    return {
        **later,
        "first_walk_ratio_to_cap": first["ratio_to_cap"],
        "first_walk_requests": first["requests"],
        "sequential_ratio": seq_rate / CAP_PER_S,
        "sandbox_cold_cpu_ms_per_page": cold_cpu_per_req * 1000,
    }


async def walk(
    http: aiohttp.ClientSession,
    url: str,
    proc: asyncio.subprocess.Process,
    connector: AmiliaConnector,
    expected: int | None,
) -> dict[str, Any]:
    """One walk of ``accounts`` through the connector, measured at the sandbox."""
    await control(http, url, "reset", {"faults": False})
    cpu0 = cpu_s(proc.pid)
    client_cpu0 = time.process_time()
    started = time.monotonic()
    n = 0
    async for items in connector.pages("accounts", expected=expected):
        n += len(items)
    elapsed_s = time.monotonic() - started
    client_cpu_s = time.process_time() - client_cpu0
    stats = await control(http, url, "stats")
    cpu_per_req = (cpu_s(proc.pid) - cpu0) / max(1, stats["requests"])
    span_s = stats["arrival_span_s"] or elapsed_s
    rate = (stats["requests"] - 1) / span_s if stats["requests"] > 1 else 0.0
    return {
        "records": n,
        "requests": stats["requests"],
        "elapsed_s": elapsed_s,
        "requests_per_s": rate,
        "ratio_to_cap": rate / CAP_PER_S,
        "records_per_s": n / elapsed_s,
        "max_per_s": stats["max_per_s"],
        "violations": stats["violation_count"],
        "rate_limited": stats["rate_limited"],
        "sandbox_cpu_ms_per_request": cpu_per_req * 1000,
        "client_cpu_ms_per_page": client_cpu_s * 1000 / max(1, stats["requests"]),
    }


async def run(records: int) -> dict[str, Any]:
    proc, url = await start_sandbox(records)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            return await measure(proc, url, records, Path(tmp))
    finally:
        proc.terminate()
        await proc.wait()


def main(quick: bool) -> dict[str, Any]:
    records = size(ACCOUNTS_FULL, ACCOUNTS_QUICK, ACCOUNTS_TINY, is_quick=quick)
    f = asyncio.run(run(records))
    print(
        f"amilia_pages: {records} accounts, {PER_PAGE} per page, sandbox latency {LATENCY_MS} ms, "
        "cap 100/s per address"
    )
    rows = [
        ("page requests/s (sandbox-measured)", f"{f['requests_per_s']:.2f}"),
        ("÷ the 100/s cap", f"{f['ratio_to_cap']:.3f} (target ≥ {TARGET_RATIO})"),
        ("÷ cap, first walk (no count known)", f"{f['first_walk_ratio_to_cap']:.3f}"),
        ("records/s", f"{f['records_per_s']:.0f}"),
        ("busiest 1 s window at the vendor", f"{f['max_per_s']} (cap 100)"),
        ("429s / violations", f"{f['rate_limited']} / {f['violations']}"),
        ("sequential Paging.Next ÷ cap", f"{f['sequential_ratio']:.3f}"),
        ("sandbox CPU per request (cached)", f"{f['sandbox_cpu_ms_per_request']:.2f} ms"),
        ("sandbox CPU per page (cold)", f"{f['sandbox_cold_cpu_ms_per_page']:.2f} ms"),
        ("client CPU per page (this process)", f"{f['client_cpu_ms_per_page']:.2f} ms"),
        ("wall time", f"{f['elapsed_s']:.1f} s"),
    ]
    for label, value in rows:
        print(f"  {label:<40} {value}")
    return {
        "records": records,
        "per_page": PER_PAGE,
        "latency_ms": LATENCY_MS,
        **{k: round(v, 3) if isinstance(v, float) else v for k, v in f.items()},
        "target": TARGET_RATIO,
        "met": f["ratio_to_cap"] >= TARGET_RATIO and f["violations"] == 0 and not f["rate_limited"],
    }
