"""Shared fixtures: one store suite runs against SQLite and PostgreSQL.

``db_url`` gives a fresh database per test: a new SQLite file, or a new PostgreSQL schema
(selected with ``search_path``) that is dropped afterwards. PostgreSQL comes from
``VENDORSYNC_TEST_PG_URL`` (default: the local server ``scripts/pg-up.sh`` starts). When it
is unreachable the PostgreSQL cases skip, or fail when ``CI`` is set.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

import sandbox.imis.sim as imis_sim
from service.connectors.imis import ImisConnector
from service.db import create_engine, migrate

DEFAULT_PG_URL = "postgresql+asyncpg://postgres:postgres@127.0.0.1:5432/test"
PG_CONNECT_TIMEOUT_S = 3.0

_pg_unreachable: dict[str, str | None] = {}  # base URL → reason (None: reachable), per session


def pg_base_url() -> str:
    return os.environ.get("VENDORSYNC_TEST_PG_URL") or DEFAULT_PG_URL


def pg_dsn(url: str) -> str:
    """The SQLAlchemy URL as a plain libpq DSN for asyncpg."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def pg_url_with_schema(url: str, schema: str) -> str:
    u = make_url(url).update_query_dict({"options": f"-csearch_path={schema}"})
    return u.render_as_string(hide_password=False)


async def _pg_problem(url: str) -> str | None:
    if url not in _pg_unreachable:
        try:
            conn = await asyncpg.connect(pg_dsn(url), timeout=PG_CONNECT_TIMEOUT_S)
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            masked = make_url(url).render_as_string(hide_password=True)
            _pg_unreachable[url] = f"{masked}: {type(exc).__name__}: {exc}"
        else:
            await conn.close()
            _pg_unreachable[url] = None
    return _pg_unreachable[url]


async def require_pg() -> str:
    """The PostgreSQL base URL, or skip (fail under CI) when it does not answer."""
    url = pg_base_url()
    problem = await _pg_problem(url)
    if problem is not None:
        if os.environ.get("CI"):
            pytest.fail(
                f"PostgreSQL is required under CI but unreachable: {problem}", pytrace=False
            )
        pytest.skip(f"PostgreSQL unreachable ({problem}); start it with scripts/pg-up.sh")
    return url


async def fresh_pg_schema(url: str, prefix: str = "t") -> str:
    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(pg_dsn(url), timeout=PG_CONNECT_TIMEOUT_S)
    try:
        await conn.execute(f'CREATE SCHEMA "{schema}"')
    finally:
        await conn.close()
    return schema


async def drop_pg_schema(url: str, schema: str) -> None:
    conn = await asyncpg.connect(pg_dsn(url), timeout=PG_CONNECT_TIMEOUT_S)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


def sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgresql", id="postgresql", marks=pytest.mark.pg),
    ]
)
async def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A URL to a fresh, empty (unmigrated) database."""
    if request.param == "sqlite":
        yield sqlite_url(tmp_path / "staging.db")
        return
    base = await require_pg()
    schema = await fresh_pg_schema(base)
    try:
        yield pg_url_with_schema(base, schema)
    finally:
        await drop_pg_schema(base, schema)


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    """A migrated engine on a fresh database."""
    eng = create_engine(db_url)
    try:
        await migrate(eng)
        yield eng
    finally:
        await eng.dispose()


@pytest.fixture(autouse=True)
def _no_imis_restore_windows(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """iMIS restores daily at 06:00 and 18:00 UTC (sandbox windows, connector blackouts):
    on the wall clock, a test run at those minutes would meet them. They are off unless a
    test marked ``imis_windows`` asks for them (those set the clock themselves)."""
    if request.node.get_closest_marker("imis_windows") is None:
        monkeypatch.setitem(imis_sim.DEFAULTS, "restore_windows_utc", [])
        monkeypatch.setattr(ImisConnector, "default_blackouts", ())
