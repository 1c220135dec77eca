"""longitudinal step: lesions tracked per (patient, model), per-analysis assessments, patient status; findings.lesion_id

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26 09:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "lesions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("patient_id", sa.Integer(), nullable=False),
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("label", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("nodule_type", sa.String(length=16), nullable=True),
        sa.Column("first_seen", sa.Date(), nullable=True),
        sa.Column("last_seen", sa.Date(), nullable=True),
        sa.Column("diameter_mm", sa.Float(), nullable=True),
        sa.Column("vdt_days", sa.Float(), nullable=True),
        sa.Column("brock_probability", sa.Float(), nullable=True),
        sa.Column("n_observations", sa.Integer(), server_default="0", nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["patient_id"], ["patients.id"], name=op.f("fk_lesions_patient_id_patients")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lesions")),
        sa.UniqueConstraint("patient_id", "model", "label", name=op.f("uq_lesions_patient_id_model_label")),
    )
    op.create_index(op.f("ix_lesions_patient_id"), "lesions", ["patient_id"], unique=False)

    op.create_table(
        "assessments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("analysis_id", sa.Integer(), nullable=False),
        sa.Column("patient_id", sa.Integer(), nullable=False),
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("study_date", sa.Date(), nullable=True),
        sa.Column("lungrads", sa.String(length=4), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("brock_max", sa.Float(), nullable=True),
        sa.Column("vdt_min_days", sa.Float(), nullable=True),
        sa.Column("follow_up_due", sa.Date(), nullable=True),
        sa.Column("assumptions", sa.JSON(), nullable=True),
        sa.Column("assessed_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["analysis_id"], ["analyses.id"], name=op.f("fk_assessments_analysis_id_analyses")),
        sa.ForeignKeyConstraint(["patient_id"], ["patients.id"], name=op.f("fk_assessments_patient_id_patients")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_assessments")),
        sa.UniqueConstraint("analysis_id", name=op.f("uq_assessments_analysis_id")),
    )
    op.create_index(op.f("ix_assessments_patient_id"), "assessments", ["patient_id"], unique=False)

    op.create_table(
        "patient_status",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("patient_id", sa.Integer(), nullable=False),
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("latest_analysis_id", sa.Integer(), nullable=False),
        sa.Column("latest_study_date", sa.Date(), nullable=True),
        sa.Column("lungrads", sa.String(length=4), nullable=False),
        sa.Column("brock_max", sa.Float(), nullable=True),
        sa.Column("vdt_min_days", sa.Float(), nullable=True),
        sa.Column("follow_up_due", sa.Date(), nullable=True),
        sa.Column("n_lesions", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["latest_analysis_id"], ["analyses.id"], name=op.f("fk_patient_status_latest_analysis_id_analyses")
        ),
        sa.ForeignKeyConstraint(["patient_id"], ["patients.id"], name=op.f("fk_patient_status_patient_id_patients")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_patient_status")),
        sa.UniqueConstraint("patient_id", "model", name=op.f("uq_patient_status_patient_id_model")),
    )
    op.create_index("ix_patient_status_model_lungrads", "patient_status", ["model", "lungrads"], unique=False)
    op.create_index("ix_patient_status_model_follow_up_due", "patient_status", ["model", "follow_up_due"], unique=False)
    op.create_index("ix_patient_status_model_vdt_min_days", "patient_status", ["model", "vdt_min_days"], unique=False)

    with op.batch_alter_table("findings") as batch_op:
        batch_op.add_column(sa.Column("lesion_id", sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f("ix_findings_lesion_id"), ["lesion_id"], unique=False)
        batch_op.create_foreign_key(
            batch_op.f("fk_findings_lesion_id_lesions"), "lesions", ["lesion_id"], ["id"], ondelete="SET NULL"
        )


def downgrade() -> None:
    with op.batch_alter_table("findings") as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_findings_lesion_id_lesions"), type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_findings_lesion_id"))
        batch_op.drop_column("lesion_id")
    op.drop_index("ix_patient_status_model_vdt_min_days", table_name="patient_status")
    op.drop_index("ix_patient_status_model_follow_up_due", table_name="patient_status")
    op.drop_index("ix_patient_status_model_lungrads", table_name="patient_status")
    op.drop_table("patient_status")
    op.drop_index(op.f("ix_assessments_patient_id"), table_name="assessments")
    op.drop_table("assessments")
    op.drop_index(op.f("ix_lesions_patient_id"), table_name="lesions")
    op.drop_table("lesions")
