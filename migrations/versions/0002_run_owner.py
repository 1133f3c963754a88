"""sync_run: owner (abandoned runs), invalid (records refused one by one), full (re-reads).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("sync_run") as batch:
        batch.add_column(
            sa.Column("invalid", sa.Integer(), nullable=False, server_default=sa.text("0"))
        )
        batch.add_column(sa.Column("owner", sa.String(256), nullable=True))
        batch.add_column(sa.Column("full", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("sync_run") as batch:
        batch.drop_column("full")
        batch.drop_column("owner")
        batch.drop_column("invalid")
