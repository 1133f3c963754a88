"""Aqua auth: the password grant (tested everywhere else), a static token from config or a
secret file, and bad credentials as one clear error."""

from __future__ import annotations

from pathlib import Path

import aiohttp
from sqlalchemy.ext.asyncio import AsyncEngine

from service.engine.runtime import Runtime
from service.engine.sync import execute_stream, run_stream
from tests.integration.aqua.conftest import CREDENTIALS, StartAqua, aqua_settings


async def fetch_token(base: str) -> str:
    form = {"grant_type": "password", **{k: v for k, v in CREDENTIALS.items() if k != "kind"}}
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{base}/authentication/v1/authentication/Token", data=form) as resp,
    ):
        assert resp.status == 200
        return str((await resp.json())["access_token"])


async def test_a_static_token_from_a_secret_file(
    engine: AsyncEngine, db_url: str, aqua_sandbox: StartAqua, tmp_path: Path
) -> None:
    sb = await aqua_sandbox(records=40)
    secret = tmp_path / "aqua.token"
    secret.write_text(await fetch_token(sb.url("aqua")) + "\n")
    settings = aqua_settings(db_url, sb, auth={"kind": "bearer", "token_file": str(secret)})
    async with Runtime(settings, db=engine) as rt:
        result = await run_stream(rt, "aqua", "Orders", "manual")
    assert result.counts.inserted == 40


async def test_bad_credentials_fail_the_run_without_the_secret(
    engine: AsyncEngine, db_url: str, aqua_sandbox: StartAqua
) -> None:
    sb = await aqua_sandbox(records=10)
    settings = aqua_settings(db_url, sb, auth={**CREDENTIALS, "password": "wrong-pw-42"})
    async with Runtime(settings, db=engine) as rt:
        result = await execute_stream(rt, "aqua", "Orders", "manual")
    assert result.status == "failed"
    assert "login refused (HTTP 400)" in (result.error or "")
    assert "wrong-pw-42" not in (result.error or "")
