"""analysis spiculation model: which model (name@version, sha256) gave its findings' spiculation (None: the
measurement's hand-made score)

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-26 06:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("analyses") as batch_op:
        batch_op.add_column(sa.Column("spiculation_model", sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column("spiculation_sha256", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("analyses") as batch_op:
        for name in ("spiculation_sha256", "spiculation_model"):
            batch_op.drop_column(name)
