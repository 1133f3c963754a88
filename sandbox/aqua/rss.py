"""Measure a large Aqua CSV export end to end: ``python -m sandbox.aqua.rss N``.

Starts the sandbox in this process with N records, exports the "All orders" view as CSV,
waits for the job, downloads the publish link over HTTP counting rows as they arrive, and
prints rows, bytes, seconds and the process's peak RSS (server and client together), then
the same figures as one JSON line.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time
from typing import Any

import aiohttp

from sandbox.app import SandboxOptions
from sandbox.aqua.sim import DEMO_CREDENTIALS
from sandbox.server import start_sandbox

READ_CHUNK_BYTES = 256 * 1024
MAX_POLLS = 50


async def measure(records: int) -> dict[str, Any]:
    # No queue or run time: the job completes at once, so only the download is measured.
    options = SandboxOptions(records=records, vendors={"aqua": {"queued_s": 0, "run_s": 0}})
    sandbox = await start_sandbox(options, vendors=("aqua",))
    base = sandbox.url("aqua")
    try:
        async with aiohttp.ClientSession() as http:
            form = {"grant_type": "password", **DEMO_CREDENTIALS}
            async with http.post(f"{base}/authentication/v1/authentication/Token", data=form) as r:
                token = (await r.json())["access_token"]
            auth = {"Authorization": f"Bearer {token}"}
            request = {
                "exportType": "View",
                "exportDataSettings": {"source": "Orders", "viewName": "All orders"},
                "outputFormat": "CSV",
                "publishLinkAccessScope": "Private",
            }
            async with http.post(
                f"{base}/reports/v1.0/exportdata", json=request, headers=auth
            ) as r:
                job = await r.json()
            for _ in range(MAX_POLLS):
                async with http.get(
                    f"{base}/jobsmanagement/v1.0/backgroundjob/{job['jobId']}", headers=auth
                ) as r:
                    if (await r.json())["jobStatus"] == "Completed":
                        break
                await asyncio.sleep(0.05)
            started = time.perf_counter()
            lines = size = 0
            async with http.get(job["publishLink"], headers=auth) as r:
                r.raise_for_status()
                async for chunk in r.content.iter_chunked(READ_CHUNK_BYTES):
                    lines += chunk.count(b"\n")
                    size += len(chunk)
            seconds = time.perf_counter() - started
    finally:
        await sandbox.close()
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {
        "bench": "aqua_rss",
        "rows": lines - 1,  # minus the header row
        "bytes": size,
        "seconds": round(seconds, 2),
        "peak_rss_mb": round(peak_kb / 1024, 1),
    }


def main(argv: list[str]) -> int:
    records = int(argv[0]) if argv else 1_000_000
    result = asyncio.run(measure(records))
    print(
        f"rows={result['rows']} bytes={result['bytes']} seconds={result['seconds']} "
        f"peak_rss_mb={result['peak_rss_mb']}"
    )
    print(json.dumps(result))
    return 0 if result["rows"] == records else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
