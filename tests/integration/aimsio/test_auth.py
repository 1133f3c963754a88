"""Auth failures stop the run with a clear error, and secrets never reach logs, errors or the DB."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from service.db.tables import staged_record, stream_state, sync_run
from service.engine.runtime import Runtime
from service.engine.sync import run_stream
from service.errors import AuthError
from service.logging import setup_logging
from tests.integration.aimsio.conftest import StartAimsio, aimsio_settings

SECRET = "hunter2-not-the-password"


@pytest.mark.parametrize(
    ("username", "password", "status"),
    [("demo", SECRET, "401"), ("noapi", "noapi-secret", "403")],
)
async def test_bad_credentials_fail_the_run_without_leaking(
    engine: AsyncEngine,
    db_url: str,
    aimsio_sandbox: StartAimsio,
    capsys: pytest.CaptureFixture[str],
    username: str,
    password: str,
    status: str,
) -> None:
    setup_logging("debug", "json")
    sb = await aimsio_sandbox(records=10)
    settings = aimsio_settings(db_url, sb.base_url)
    auth = settings.vendors["aimsio"].auth
    auth.username = username
    auth.password = type(auth.password)(password)  # type: ignore[misc]
    async with Runtime(settings, db=engine) as rt:
        with pytest.raises(AuthError) as info:
            await run_stream(rt, "aimsio", "User", "manual")
        assert rt.connector("aimsio").client.stats.requests == 1  # auth errors are not retried
    assert status in str(info.value)
    async with engine.connect() as conn:
        run = (await conn.execute(sa.select(sync_run.c.status, sync_run.c.error))).one()
        stored = []
        for table in (staged_record, stream_state, sync_run):
            stored += [str(row) for row in (await conn.execute(sa.select(table))).all()]
        dumped = " ".join(stored)
    assert run.status == "failed"
    assert status in run.error
    captured = capsys.readouterr()
    for text in (str(info.value), run.error, dumped, captured.out, captured.err):
        assert password not in text
        assert "Authorization" not in text or "Basic " not in text
