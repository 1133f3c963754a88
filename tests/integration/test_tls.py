"""TLS verification against the Aimsio sandbox served over HTTPS with a self-signed cert.

Default: the certificate is refused, the run fails with one line naming the vendor and the
TLS failure (never retried); ``ca_file`` trusts it; ``tls_verify = false`` skips the check
and every command that talks to the vendor warns.
"""

from __future__ import annotations

import asyncio
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from sandbox.app import SandboxOptions, build_app
from sandbox.server import create_sims
from tests.reliability.conftest import cli_env, log_events

VENDORSYNC = [sys.executable, "-c", "from service.cli import main; main()"]
TLS_OFF = "TLS certificate verification is OFF for this vendor (tls_verify = false)"


def self_signed(dir_: Path) -> tuple[Path, Path]:
    """A self-signed certificate for IP 127.0.0.1 (its own CA) and its key, as PEM files."""
    cert, key = dir_ / "cert.pem", dir_ / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1",
         "-subj", "/CN=vendorsync test CA", "-addext", "subjectAltName=IP:127.0.0.1",
         "-addext", "basicConstraints=critical,CA:TRUE"],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    return cert, key


@pytest.fixture
async def https_sandbox(tmp_path: Path) -> AsyncIterator[tuple[str, Path]]:
    """The Aimsio simulator over HTTPS on 127.0.0.1: (its base URL, the cert's PEM file)."""
    cert, key = self_signed(tmp_path)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    app = build_app(create_sims(SandboxOptions(records=12, seed=5), ("aimsio",)))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"https://127.0.0.1:{port}/aimsio", cert
    await runner.cleanup()


def write_config(path: Path, base_url: str, tls: str = "") -> Path:
    path.write_text(
        f"""\
log_format = "json"
[database]
url = "sqlite+aiosqlite:///{path.parent / "tls.db"}"
[vendors.aimsio]
base_url = "{base_url}"
{tls}
auth = {{ kind = "basic", username = "demo", password = "demo-secret" }}
retry = {{ max_attempts = 3, base_s = 0.05, max_backoff_s = 0.1 }}
[vendors.aimsio.streams]
User = {{}}
"""
    )
    return path


async def vendorsync(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """A real CLI process (in a thread: the sandbox serves from this event loop)."""
    return await asyncio.to_thread(
        subprocess.run,
        [*VENDORSYNC, *args],
        cwd=cwd,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


def plain(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip() and not line.startswith("{")]


async def test_tls_verified_by_default_trusted_with_ca_file_skipped_only_when_told(
    https_sandbox: tuple[str, Path], tmp_path: Path
) -> None:
    url, cert = https_sandbox
    cfg = write_config(tmp_path / "default.toml", url)
    assert (await vendorsync("migrate", "-c", str(cfg), cwd=tmp_path)).returncode == 0

    refused = await vendorsync("resync", "aimsio", "-c", str(cfg), cwd=tmp_path)
    assert refused.returncode == 1, refused.stderr
    assert "Traceback" not in refused.stderr
    lines = plain(refused.stderr)
    assert len(lines) == 1, lines
    assert "[aimsio User] TLS certificate verification failed" in lines[0]
    assert "self-signed certificate" in lines[0] or "self signed" in lines[0]

    trusted = write_config(tmp_path / "ca.toml", url, f'ca_file = "{cert}"')
    ok = await vendorsync("resync", "aimsio", "-c", str(trusted), cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert "tls_verify" not in ok.stderr

    off = write_config(tmp_path / "off.toml", url, "tls_verify = false")
    ran = await vendorsync("resync", "aimsio", "--full", "-c", str(off), cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    warned = log_events(ran.stderr, TLS_OFF)
    assert len(warned) == 1, ran.stderr
    assert warned[0]["level"] == "warning"
    assert warned[0]["vendor"] == "aimsio"

    checked = await vendorsync("check-config", "-c", str(off), cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    assert "warning: vendors.aimsio.tls_verify: false" in checked.stderr


async def test_tls_settings_that_cannot_work_are_config_errors(tmp_path: Path) -> None:
    missing = write_config(tmp_path / "m.toml", "https://127.0.0.1:9/x", 'ca_file = "/nope.pem"')
    both = write_config(
        tmp_path / "b.toml", "https://127.0.0.1:9/x", 'tls_verify = false\nca_file = "/etc/hosts"'
    )
    for cfg, expect in (
        (missing, "vendors.aimsio.ca_file: not a readable file: /nope.pem"),
        (both, "vendors.aimsio.ca_file: has no effect with tls_verify = false"),
    ):
        proc = await vendorsync("check-config", "-c", str(cfg), cwd=tmp_path)
        assert proc.returncode == 2
        assert plain(proc.stderr) == [f"error: config: {expect}"] or expect in proc.stderr
        assert len(plain(proc.stderr)) == 1
        assert "Traceback" not in proc.stderr
