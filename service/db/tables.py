"""The staging schema as SQLAlchemy Core tables (created only by migrations)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect

# Stable constraint names, so migrations and autogenerate agree on every backend.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)

JSON_TYPE = sa.JSON().with_variant(JSONB(), "postgresql")
# SQLite only auto-increments an INTEGER PRIMARY KEY, so BIGINT ids become INTEGER there.
ID_TYPE = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def require_aware(value: datetime) -> datetime:
    """Refuse naive datetimes early, with the same message on every backend."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"naive datetime {value!r}: pass a UTC-aware datetime")
    return value


class UTCDateTime(sa.TypeDecorator[datetime]):
    """``timestamptz`` on PostgreSQL; on SQLite a naive UTC text value read back as UTC-aware.

    Naive datetimes are refused: every time in vendorsync is UTC-aware.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = require_aware(value).astimezone(UTC)
        # SQLite's DATETIME text has no offset: store UTC wall time, so text order is time order.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


staged_record = sa.Table(
    "staged_record",
    metadata,
    sa.Column("id", ID_TYPE, primary_key=True, autoincrement=True),
    sa.Column("vendor", sa.String(64), nullable=False),
    sa.Column("stream", sa.String(128), nullable=False),
    sa.Column("record_key", sa.String(512), nullable=False),
    sa.Column("cursor", sa.String(256), nullable=True),
    sa.Column("payload", JSON_TYPE, nullable=False),
    sa.Column("payload_hash", sa.String(64), nullable=False),
    sa.Column("first_seen_at", UTCDateTime(), nullable=False),
    sa.Column("synced_at", UTCDateTime(), nullable=False),
    sa.Column("deleted_at", UTCDateTime(), nullable=True),
    # The run that last wrote the row. Deliberately no foreign key: its per-row check cost
    # a quarter of the upsert's server time on PostgreSQL, and runs are never deleted.
    sa.Column("last_run_id", ID_TYPE, nullable=True),
    # The last run whose complete pass saw the row (marked batch by batch; see records.py).
    sa.Column("seen_run_id", ID_TYPE, nullable=True),
    sa.UniqueConstraint("vendor", "stream", "record_key"),
)

stream_state = sa.Table(
    "stream_state",
    metadata,
    sa.Column("vendor", sa.String(64), primary_key=True),
    sa.Column("stream", sa.String(128), primary_key=True),
    sa.Column("state", JSON_TYPE, nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
)

sync_run = sa.Table(
    "sync_run",
    metadata,
    sa.Column("id", ID_TYPE, primary_key=True, autoincrement=True),
    sa.Column("vendor", sa.String(64), nullable=False),
    sa.Column("stream", sa.String(128), nullable=False),
    sa.Column("trigger", sa.String(32), nullable=False),
    sa.Column("started_at", UTCDateTime(), nullable=False),
    sa.Column("finished_at", UTCDateTime(), nullable=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("inserted", sa.Integer(), nullable=False, server_default=sa.text("0")),
    sa.Column("updated", sa.Integer(), nullable=False, server_default=sa.text("0")),
    sa.Column("unchanged", sa.Integer(), nullable=False, server_default=sa.text("0")),
    sa.Column("deleted", sa.Integer(), nullable=False, server_default=sa.text("0")),
    sa.Column("requests", sa.Integer(), nullable=False, server_default=sa.text("0")),
    sa.Column("error", sa.Text(), nullable=True),
    # Records refused one by one (e.g. text PostgreSQL cannot hold); the rest went on.
    sa.Column("invalid", sa.Integer(), nullable=False, server_default=sa.text("0")),
    # The process that runs it: a run still `running` whose owner holds no lease was
    # abandoned (its process died), not running forever.
    sa.Column("owner", sa.String(256), nullable=True),
    # A full re-read (--full or the stream's `full_every`), not an incremental run.
    sa.Column("full", sa.Boolean(), nullable=False, server_default=sa.false()),
    # What the connector said about the run that is not an error (e.g. a new export job,
    # and why).
    sa.Column("note", sa.Text(), nullable=True),
    sa.Index(None, "vendor", "stream", "id"),
)

push_outbox = sa.Table(
    "push_outbox",
    metadata,
    sa.Column("id", ID_TYPE, primary_key=True, autoincrement=True),
    sa.Column("vendor", sa.String(64), nullable=False),
    sa.Column("entity", sa.String(128), nullable=False),
    sa.Column("record_key", sa.String(512), nullable=False),
    sa.Column("payload", JSON_TYPE, nullable=False),
    sa.Column("payload_hash", sa.String(64), nullable=True),  # filled in if a user omits it
    sa.Column("status", sa.String(16), nullable=False, server_default="pending"),
    sa.Column("attempts", sa.Integer(), nullable=False, server_default=sa.text("0")),
    sa.Column("next_attempt_at", UTCDateTime(), nullable=True),
    sa.Column("last_error", sa.Text(), nullable=True),
    sa.Column("response", JSON_TYPE, nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False, server_default=sa.func.now()),
    sa.Column("sent_at", UTCDateTime(), nullable=True),
    sa.Column("claimed_by", sa.String(128), nullable=True),
    sa.Column("claimed_until", UTCDateTime(), nullable=True),
    sa.Index(None, "status", "next_attempt_at"),
    sa.Index(None, "vendor", "entity", "record_key"),
)

lease = sa.Table(
    "lease",
    metadata,
    sa.Column("name", sa.String(256), primary_key=True),
    sa.Column("owner", sa.String(256), nullable=False),
    sa.Column("acquired_at", UTCDateTime(), nullable=False),
    sa.Column("expires_at", UTCDateTime(), nullable=False),
    sa.Column("heartbeat_at", UTCDateTime(), nullable=False),
)
