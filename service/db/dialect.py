"""The few places where SQLite and PostgreSQL need different SQL constructs."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection


def is_postgres(conn: AsyncConnection) -> bool:
    return conn.dialect.name == "postgresql"


def upsert_insert(conn: AsyncConnection, table: sa.Table) -> Any:
    """The dialect's ``INSERT`` construct, which has ``on_conflict_do_update``."""
    if is_postgres(conn):
        return postgresql.insert(table)
    return sqlite.insert(table)
