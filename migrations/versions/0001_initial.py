"""Initial staging schema: staged_record, stream_state, sync_run, push_outbox, lease.

Revision ID: 0001
Revises:
Create Date: 2024-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the column types in service/db/tables.py as of this revision.
JSON_TYPE = sa.JSON().with_variant(JSONB(), "postgresql")
ID_TYPE = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def timestamp() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "sync_run",
        sa.Column("id", ID_TYPE, autoincrement=True, nullable=False),
        sa.Column("vendor", sa.String(64), nullable=False),
        sa.Column("stream", sa.String(128), nullable=False),
        sa.Column("trigger", sa.String(32), nullable=False),
        sa.Column("started_at", timestamp(), nullable=False),
        sa.Column("finished_at", timestamp(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("inserted", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("updated", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("unchanged", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("deleted", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("requests", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_sync_run"),
    )
    op.create_index("ix_sync_run_vendor_stream_id", "sync_run", ["vendor", "stream", "id"])

    op.create_table(
        "staged_record",
        sa.Column("id", ID_TYPE, autoincrement=True, nullable=False),
        sa.Column("vendor", sa.String(64), nullable=False),
        sa.Column("stream", sa.String(128), nullable=False),
        sa.Column("record_key", sa.String(512), nullable=False),
        sa.Column("cursor", sa.String(256), nullable=True),
        sa.Column("payload", JSON_TYPE, nullable=False),
        sa.Column("payload_hash", sa.String(64), nullable=False),
        sa.Column("first_seen_at", timestamp(), nullable=False),
        sa.Column("synced_at", timestamp(), nullable=False),
        sa.Column("deleted_at", timestamp(), nullable=True),
        # No foreign key to sync_run: its per-row check cost a quarter of the upsert's
        # server time on PostgreSQL, and run rows are never deleted.
        sa.Column("last_run_id", ID_TYPE, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_staged_record"),
        sa.UniqueConstraint(
            "vendor", "stream", "record_key", name="uq_staged_record_vendor_stream_record_key"
        ),
    )

    op.create_table(
        "stream_state",
        sa.Column("vendor", sa.String(64), nullable=False),
        sa.Column("stream", sa.String(128), nullable=False),
        sa.Column("state", JSON_TYPE, nullable=False),
        sa.Column("updated_at", timestamp(), nullable=False),
        sa.PrimaryKeyConstraint("vendor", "stream", name="pk_stream_state"),
    )

    op.create_table(
        "push_outbox",
        sa.Column("id", ID_TYPE, autoincrement=True, nullable=False),
        sa.Column("vendor", sa.String(64), nullable=False),
        sa.Column("entity", sa.String(128), nullable=False),
        sa.Column("record_key", sa.String(512), nullable=False),
        sa.Column("payload", JSON_TYPE, nullable=False),
        sa.Column("payload_hash", sa.String(64), nullable=True),  # users may omit it
        sa.Column("status", sa.String(16), server_default="pending", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("next_attempt_at", timestamp(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("response", JSON_TYPE, nullable=True),
        sa.Column("created_at", timestamp(), server_default=sa.func.now(), nullable=False),
        sa.Column("sent_at", timestamp(), nullable=True),
        sa.Column("claimed_by", sa.String(128), nullable=True),
        sa.Column("claimed_until", timestamp(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_push_outbox"),
    )
    op.create_index(
        "ix_push_outbox_status_next_attempt_at", "push_outbox", ["status", "next_attempt_at"]
    )
    op.create_index(
        "ix_push_outbox_vendor_entity_record_key",
        "push_outbox",
        ["vendor", "entity", "record_key"],
    )

    op.create_table(
        "lease",
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("owner", sa.String(256), nullable=False),
        sa.Column("acquired_at", timestamp(), nullable=False),
        sa.Column("expires_at", timestamp(), nullable=False),
        sa.Column("heartbeat_at", timestamp(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_lease"),
    )


def downgrade() -> None:
    op.drop_table("lease")
    op.drop_index("ix_push_outbox_vendor_entity_record_key", table_name="push_outbox")
    op.drop_index("ix_push_outbox_status_next_attempt_at", table_name="push_outbox")
    op.drop_table("push_outbox")
    op.drop_table("stream_state")
    op.drop_table("staged_record")
    op.drop_index("ix_sync_run_vendor_stream_id", table_name="sync_run")
    op.drop_table("sync_run")
