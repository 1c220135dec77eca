"""The results table that ``nightscan status`` and ``make demo`` print."""

from __future__ import annotations

from rich.table import Table
from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload, sessionmaker

from db.models import Analysis, Assessment, Instance, Lesion, Patient, ScanRun, Series, SeriesSelection, Study


def results_table(factory: sessionmaker[Session], truth_counts: dict[str, tuple[int, int]] | None = None) -> Table:
    """One row per analysis: pseudonymous patient, study date, slices, status, time, findings (with their lesion
    labels once the per-patient step has run) and the study's Lung-RADS category.

    ``truth_counts`` (StudyInstanceUID -> (true nodules, of them found)) adds a ground-truth column,
    for synthetic archives.
    """
    table = Table(
        title="nightscan results",
        caption="findings: \\[lesion] mean diameter in mm (measured, else the detector box) @ detector score; "
        "Lung-RADS v2022 of the study",
    )
    for column in ("patient", "study date", "slices", "model", "status", "seconds", "findings", "Lung-RADS"):
        table.add_column(column, overflow="fold", no_wrap=column == "model")
    if truth_counts is not None:
        table.add_column("truth found")
    with factory() as session:
        counts = dict(
            session.execute(select(Instance.series_id, func.sum(Instance.n_frames)).group_by(Instance.series_id)).all()
        )
        analyses = session.scalars(
            select(Analysis)
            .join(Study)
            .join(Patient)
            .options(selectinload(Analysis.findings), selectinload(Analysis.study).selectinload(Study.patient))
            .order_by(Patient.patient_key, Study.study_date)
        )
        categories = dict(session.execute(select(Assessment.analysis_id, Assessment.lungrads)).all())
        labels = dict(session.execute(select(Lesion.id, Lesion.label)).all())
        for a in analyses:
            findings = (
                ", ".join(
                    (f"L{labels[f.lesion_id]} " if f.lesion_id in labels else "")
                    + f"{f.diameter_mm:.1f} @ {f.score:.2f}"
                    for f in a.findings
                )
                or "none"
            )
            if a.error:
                findings = f"[red]{a.error}[/red]"
            row = [
                a.study.patient.patient_key[:8],
                str(a.study.study_date or "?"),
                str(counts.get(a.series_id, 0)),
                a.model,
                a.status.value,
                f"{sum(a.timings_s.values()):.1f}" if a.timings_s else "",
                findings,
                categories.get(a.id, ""),
            ]
            if truth_counts is not None:
                total, found = truth_counts.get(a.study.study_instance_uid, (0, 0))
                row.append(f"{found} of {total}")
            table.add_row(*row)
    return table


def runs_table(factory: sessionmaker[Session], limit: int = 10) -> Table:
    """The latest scan runs: source, start, end, status and counts."""
    table = Table(title=f"last {limit} scan runs")
    for column in ("run", "source", "started", "finished", "status", "listed", "planned", "enqueued", "left"):
        table.add_column(column, overflow="fold")
    with factory() as session:
        for run in session.scalars(select(ScanRun).order_by(ScanRun.id.desc()).limit(limit)):
            counts = run.counts or {}
            table.add_row(
                str(run.id),
                run.source,
                f"{run.started_at:%Y-%m-%d %H:%M:%S}",
                f"{run.finished_at:%H:%M:%S}" if run.finished_at else "",
                run.status.value + (f": {run.error}" if run.error else ""),
                *(str(counts.get(k, "")) for k in ("listed", "planned", "enqueued", "remaining")),
            )
    return table


def selections_table(factory: sessionmaker[Session], limit: int = 50) -> Table:
    """The latest series decisions: which series of each study a pipeline chose, and why each other was not."""
    table = Table(title="series selection")
    for column in ("patient", "study date", "series", "modality", "pipeline", "chosen", "reason"):
        table.add_column(column, overflow="fold")
    with factory() as session:
        rows = session.scalars(
            select(SeriesSelection)
            .options(selectinload(SeriesSelection.series).selectinload(Series.study).selectinload(Study.patient))
            .order_by(SeriesSelection.decided_at.desc(), SeriesSelection.id)
            .limit(limit)
        )
        for row in rows:
            study = row.series.study
            table.add_row(
                study.patient.patient_key[:8],
                str(study.study_date or "?"),
                str(row.series.series_number or "?"),
                row.series.modality,
                row.pipeline,
                "yes" if row.selected else "no",
                row.reason,
            )
    return table
