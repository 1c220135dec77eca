"""Writes of analysis results: claim an analysis, write its findings once, record failures.

Celery delivers at least once, so the database decides: an analysis is claimed with an attempts
counter (a study that kills its worker stops after ``max_attempts``), and findings are written in
one transaction guarded by ``status != done``, so a redelivered or concurrent run writes nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from db.models import Analysis, AnalysisStatus, ArchiveObject, Finding, Instance, ObjectStatus, utcnow


@dataclass(frozen=True, slots=True)
class AnalysisJob:
    """What a worker needs to run one analysis: where the series' objects are, and which model."""

    analysis_id: int
    source: str
    objects: list[tuple[str, str]]  # (key, ETag) of each instance of the selected series
    model: str
    attempt: int


def claim_analysis(session: Session, analysis_id: int, max_attempts: int) -> AnalysisJob | None:
    """Start an attempt; None when the analysis is already finished or has used up its attempts."""
    analysis = session.get(Analysis, analysis_id, with_for_update=True)
    if analysis is None:
        raise LookupError(f"analysis {analysis_id} does not exist")
    if analysis.status in (AnalysisStatus.DONE, AnalysisStatus.FAILED):
        return None
    if analysis.attempts >= max_attempts:
        analysis.status = AnalysisStatus.FAILED
        analysis.error = f"gave up after {analysis.attempts} attempts; last error: {analysis.error}"
        analysis.finished_at = utcnow()
        return None
    analysis.attempts += 1
    analysis.status = AnalysisStatus.RUNNING
    analysis.started_at = utcnow()
    rows = session.execute(
        select(ArchiveObject.source, ArchiveObject.key, ArchiveObject.etag)
        .join(Instance, Instance.object_id == ArchiveObject.id)
        .where(Instance.series_id == analysis.series_id, ArchiveObject.status == ObjectStatus.INDEXED)
        .order_by(ArchiveObject.key)
    ).all()
    if not rows:
        raise LookupError(f"analysis {analysis_id}: series {analysis.series_id} has no indexed instances")
    return AnalysisJob(
        analysis_id=analysis_id,
        source=rows[0].source,
        objects=[(r.key, r.etag) for r in rows],
        model=analysis.model,
        attempt=analysis.attempts,
    )


def write_findings(
    session: Session,
    job: AnalysisJob,
    findings: list[Finding],
    *,
    timings_s: dict[str, float],
    model_sha256: str,
    preprocessing: str,
    volume: dict[str, object] | None = None,
    classifier: str | None = None,
    classifier_sha256: str | None = None,
    study_score: float | None = None,
) -> bool:
    """Write ``findings`` and mark the analysis done, unless it is done already; True if written.

    ``timings_s`` gets a ``write`` entry: the seconds spent here, the commit excepted. ``volume`` describes
    the volume the model saw (shape, spacing in mm, corrections made while building it); ``classifier`` and
    ``classifier_sha256`` the candidate classifier that scored the findings, ``study_score`` its study-level
    abnormality score (0 to 1).
    """
    start = time.perf_counter()
    result = session.execute(
        update(Analysis)
        .where(Analysis.id == job.analysis_id, Analysis.status != AnalysisStatus.DONE)
        .values(
            status=AnalysisStatus.DONE,
            error=None,
            finished_at=utcnow(),
            inputs=[list(o) for o in job.objects],
            model_sha256=model_sha256,
            preprocessing=preprocessing,
            volume=volume,
            classifier=classifier,
            classifier_sha256=classifier_sha256,
            study_score=study_score,
        )
    )
    if result.rowcount == 0:
        return False
    session.execute(delete(Finding).where(Finding.analysis_id == job.analysis_id))
    for ordinal, finding in enumerate(findings):
        finding.analysis_id, finding.ordinal = job.analysis_id, ordinal
        session.add(finding)
    session.flush()
    timings = {**timings_s, "write": time.perf_counter() - start}
    session.execute(update(Analysis).where(Analysis.id == job.analysis_id).values(timings_s=timings))
    return True


def record_failure(session: Session, analysis_id: int, error: str, *, final: bool) -> None:
    """Record ``error``; ``final`` marks the analysis failed, otherwise it stays open for a retry."""
    values: dict[str, object] = {"error": error[:4000]}
    if final:
        values.update(status=AnalysisStatus.FAILED, finished_at=utcnow())
    session.execute(
        update(Analysis).where(Analysis.id == analysis_id, Analysis.status != AnalysisStatus.DONE).values(**values)
    )
