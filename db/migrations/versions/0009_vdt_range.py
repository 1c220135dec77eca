"""lesion VDT range: the shortest and longest VDT (days) its two volumes allow (longest None: growth within the
measurements' noise)

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-27 17:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("lesions") as batch_op:
        batch_op.add_column(sa.Column("vdt_shortest_days", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("vdt_longest_days", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("lesions") as batch_op:
        for name in ("vdt_longest_days", "vdt_shortest_days"):
            batch_op.drop_column(name)
