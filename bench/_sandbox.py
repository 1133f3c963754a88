"""The sandbox in its own process (its clock, event loop and CPU apart from ours, as a real
vendor's are), its control endpoints, and its CPU time, for benchmarks that drive several
vendors at once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp

ROOT = str(Path(__file__).resolve().parents[1])
SERVE = """
import asyncio, json, sys
from sandbox.app import SandboxOptions
from sandbox.server import start_sandbox
async def main():
    spec = json.loads(sys.argv[1])
    options = SandboxOptions(records=spec["records"], seed=42, vendors=spec["vendors"])
    sb = await start_sandbox(options, vendors=tuple(spec["vendors"]))
    print(sb.base_url, flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""
START_TIMEOUT_S = 60.0
VENDOR_NICE = -10
"""The sandbox process's priority: a real vendor's edge runs on its own machines, so its
arrival stamps never wait for our processes. On a busy 2-core host a starved sandbox
stamps arrivals late and sees bunches our limiter never sent (``docs/scaling.md``).
``VENDORSYNC_SANDBOX_NICE`` overrides it (``0``: as started)."""


def vendor_first(pid: int) -> int | None:
    """Give the sandbox process ``pid`` the CPU first; its niceness, or None if not allowed
    (it needs root or CAP_SYS_NICE)."""
    nice = int(os.environ.get("VENDORSYNC_SANDBOX_NICE", VENDOR_NICE))
    try:
        os.setpriority(os.PRIO_PROCESS, pid, nice)
    except PermissionError:
        return None
    return nice


class Sandbox:
    """``with Sandbox(records, {"amilia": {...}}) as sb:``: the chosen simulators on 127.0.0.1."""

    def __init__(self, records: int, vendors: dict[str, dict[str, Any]]) -> None:
        self.spec = json.dumps({"records": records, "vendors": vendors})
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self.nice: int | None = None

    def __enter__(self) -> Sandbox:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SERVE, self.spec],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env={**os.environ, "PYTHONPATH": ROOT},
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()  # blocks until the sandbox is up
        if not line.startswith("http://127.0.0.1:"):
            self.proc.kill()
            raise SystemExit("sandbox did not start")
        self.url = line
        self.nice = vendor_first(self.proc.pid)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            if self.proc.stdout is not None:
                self.proc.stdout.close()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def cpu_s(self) -> float:
        return cpu_s(self.pid)

    async def control(self, vendor: str, what: str, body: Any = None) -> Any:
        """``GET stats`` or ``POST faults|reset|mutate`` on one vendor's control endpoints."""
        method = "GET" if what == "stats" else "POST"
        url = f"{self.url}/{vendor}/_sandbox/{what}"
        async with aiohttp.ClientSession() as http, http.request(method, url, json=body or {}) as r:
            if r.status != 200:
                raise RuntimeError(f"sandbox {vendor} {what}: {r.status} {await r.text()}")
            return await r.json()


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    """Resident set size of a process now (Linux /proc), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))
