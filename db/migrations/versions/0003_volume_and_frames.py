"""analysis volume (shape, spacing, corrections made while building it), frames per instance, finding frame

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 20:40:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("analyses") as batch_op:
        batch_op.add_column(sa.Column("volume", sa.JSON(), nullable=True))
    with op.batch_alter_table("findings") as batch_op:
        batch_op.add_column(sa.Column("frame_number", sa.Integer(), nullable=True))
    with op.batch_alter_table("instances") as batch_op:
        batch_op.add_column(sa.Column("n_frames", sa.Integer(), server_default="1", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("instances") as batch_op:
        batch_op.drop_column("n_frames")
    with op.batch_alter_table("findings") as batch_op:
        batch_op.drop_column("frame_number")
    with op.batch_alter_table("analyses") as batch_op:
        batch_op.drop_column("volume")
