"""finding measurements (axes, volume, type, solid component, classifier probability); analysis classifier

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25 21:10:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

FINDING_COLUMNS = (
    ("nodule_type", sa.String(length=16)),
    ("probability", sa.Float()),
    ("long_axis_mm", sa.Float()),
    ("short_axis_mm", sa.Float()),
    ("volume_mm3", sa.Float()),
    ("solid_component_mm", sa.Float()),
)


def upgrade() -> None:
    with op.batch_alter_table("findings") as batch_op:
        for name, kind in FINDING_COLUMNS:
            batch_op.add_column(sa.Column(name, kind, nullable=True))
    with op.batch_alter_table("analyses") as batch_op:
        batch_op.add_column(sa.Column("classifier", sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column("classifier_sha256", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("study_score", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("analyses") as batch_op:
        for name in ("study_score", "classifier_sha256", "classifier"):
            batch_op.drop_column(name)
    with op.batch_alter_table("findings") as batch_op:
        for name, _ in reversed(FINDING_COLUMNS):
            batch_op.drop_column(name)
