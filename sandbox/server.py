"""Start the simulators on 127.0.0.1: one port, one path prefix per vendor."""

from __future__ import annotations

import asyncio
import importlib
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from sandbox import VENDORS
from sandbox.app import SandboxOptions, VendorSim, build_app

HOST = "127.0.0.1"


def vendor_module(name: str) -> Any:
    if name not in VENDORS:
        raise ValueError(f"unknown sandbox vendor {name!r}; known: {', '.join(VENDORS)}")
    return importlib.import_module(f"sandbox.{name}")


def create_sims(options: SandboxOptions, vendors: tuple[str, ...] = VENDORS) -> list[VendorSim]:
    return [vendor_module(name).SIM(options) for name in vendors]


@dataclass
class RunningSandbox:
    runner: web.AppRunner
    base_url: str
    sims: dict[str, VendorSim]

    def url(self, vendor: str) -> str:
        return f"{self.base_url}/{vendor}"

    async def close(self) -> None:
        await self.runner.cleanup()


async def start_sandbox(
    options: SandboxOptions | None = None,
    *,
    vendors: tuple[str, ...] = VENDORS,
    port: int = 0,
    host: str = HOST,
) -> RunningSandbox:
    """Serve the chosen simulators; ``port=0`` picks a free port (tests, benchmarks)."""
    options = options or SandboxOptions()
    sims = create_sims(options, vendors)
    app = build_app(sims)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return RunningSandbox(runner, f"http://{host}:{bound}", {s.name: s for s in sims})


def describe(sandbox: RunningSandbox) -> list[str]:
    """Lines naming each vendor's base URL and fixed demo credentials."""
    lines = [f"vendorsync sandbox listening on {sandbox.base_url}"]
    for name in sandbox.sims:
        module = vendor_module(name)
        creds = ", ".join(f"{k}={v}" for k, v in module.DEMO_CREDENTIALS.items())
        lines.append(f"  {name:<7} {sandbox.url(name)}  ({creds})")
    return lines


async def serve_forever(options: SandboxOptions, port: int, host: str = HOST) -> None:
    sandbox = await start_sandbox(options, port=port, host=host)
    for line in describe(sandbox):
        print(line, flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await sandbox.close()
