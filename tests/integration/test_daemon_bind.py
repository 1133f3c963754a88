"""The health/metrics/status server listens on 127.0.0.1 unless ``daemon.host`` says else."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from pathlib import Path

import aiohttp
import pytest

from service.config import Settings
from service.daemon.scheduler import Daemon
from service.db import create_engine, migrate
from tests.conftest import sqlite_url


def other_local_address() -> str | None:
    """A non-loopback address of this machine (None when it has none)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))  # UDP: picks the route's address, sends nothing
            addr = str(s.getsockname()[0])
        except OSError:
            return None
    return None if addr.startswith("127.") or addr == "0.0.0.0" else addr


async def refused(host: str, port: int) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 5)
    except OSError:
        return True
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return False


async def serve(settings: Settings) -> tuple[Daemon, asyncio.Event, asyncio.Task[None]]:
    daemon = Daemon(settings)
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(stop))
    for _ in range(300):  # the server starts within a few seconds
        if daemon.health_url is not None or task.done():
            break
        await asyncio.sleep(0.05)
    if task.done():
        task.result()  # its error, if it died
    assert daemon.health_url is not None, "the health server did not start"
    return daemon, stop, task


@pytest.mark.parametrize("host", [None, "0.0.0.0"])
async def test_health_server_binds_loopback_unless_configured(
    tmp_path: Path, host: str | None
) -> None:
    daemon_cfg: dict[str, object] = {"port": 0, "shutdown_grace_s": 0.5}
    if host is not None:
        daemon_cfg["host"] = host
    url = sqlite_url(tmp_path / "bind.db")
    engine = create_engine(url)
    await migrate(engine)
    await engine.dispose()
    settings = Settings.model_validate({"database": {"url": url}, "daemon": daemon_cfg})
    daemon, stop, task = await serve(settings)
    try:
        addrs = {a for a, _ in daemon.health_sockets}
        port = daemon.health_sockets[0][1]
        assert addrs == ({"127.0.0.1"} if host is None else {host})
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{port}/healthz") as r,
        ):
            assert r.status == 200
        other = other_local_address()
        if other is not None:  # what a neighbour on the network would reach
            assert await refused(other, port) is (host is None)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
