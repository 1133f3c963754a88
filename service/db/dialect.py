"""The few places where SQLite and PostgreSQL need different SQL constructs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine


def is_postgres(conn: AsyncConnection) -> bool:
    return conn.dialect.name == "postgresql"


def is_sqlite_engine(engine: AsyncEngine) -> bool:
    return engine.dialect.name == "sqlite"


def upsert_insert(conn: AsyncConnection, table: sa.Table) -> Any:
    """The dialect's ``INSERT`` construct, which has ``on_conflict_do_update``."""
    if is_postgres(conn):
        return postgresql.insert(table)
    return sqlite.insert(table)


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL; None for any other database (or an in-memory one)."""
    u = make_url(url)
    if u.get_backend_name() != "sqlite" or not u.database or u.database == ":memory:":
        return None
    return Path(u.database)
