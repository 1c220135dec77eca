"""The results table that ``nightscan status`` and ``make demo`` print."""

from __future__ import annotations

from rich.table import Table
from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload, sessionmaker

from db.models import Analysis, Instance, Patient, Study


def results_table(factory: sessionmaker[Session]) -> Table:
    """One row per analysis: pseudonymous patient, study date, slices, status, findings (mm)."""
    table = Table(title="nightscan results")
    for column in ("patient", "study date", "slices", "model", "status", "findings (diameter mm @ score)"):
        table.add_column(column)
    with factory() as session:
        counts = dict(session.execute(select(Instance.series_id, func.count()).group_by(Instance.series_id)).all())
        analyses = session.scalars(
            select(Analysis)
            .join(Study)
            .join(Patient)
            .options(selectinload(Analysis.findings), selectinload(Analysis.study).selectinload(Study.patient))
            .order_by(Patient.patient_key, Study.study_date)
        )
        for a in analyses:
            findings = ", ".join(f"{f.diameter_mm:.1f} @ {f.score:.2f}" for f in a.findings) or "none"
            if a.error:
                findings = f"[red]{a.error}[/red]"
            table.add_row(
                a.study.patient.patient_key[:10],
                str(a.study.study_date or "?"),
                str(counts.get(a.series_id, 0)),
                a.model,
                a.status.value,
                findings,
            )
    return table
