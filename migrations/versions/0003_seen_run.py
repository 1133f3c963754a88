"""staged_record.seen_run_id: the last run whose complete pass saw the row.

A snapshot too large to hold its keys in memory marks what it saw batch by batch; at the
end of a complete pass every live row not marked by that run is soft-deleted in SQL.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID_TYPE = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("staged_record") as batch:
        batch.add_column(sa.Column("seen_run_id", ID_TYPE, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("staged_record") as batch:
        batch.drop_column("seen_run_id")
