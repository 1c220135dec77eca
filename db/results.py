"""Writes of analysis results: claim an analysis, write its findings once, record failures.

Celery delivers at least once, so the database decides. A worker holds the analysis lock while it runs
an analysis (:func:`analysis_lock`), so two deliveries of one analysis never run at once; it claims the
analysis with an attempts counter (a study that kills its worker stops after ``max_attempts``); and it
writes the findings in one transaction guarded by ``status != done``, so a redelivered run writes nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import Engine, Row, case, delete, func, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from db.models import Analysis, AnalysisStatus, ArchiveObject, Finding, Instance, ObjectStatus, utcnow

log = logging.getLogger(__name__)

ANALYSIS_LOCK_CLASS = 0x6E53
"""First key of the PostgreSQL advisory locks on analyses (the second is the analysis ID)."""


@contextmanager
def analysis_lock(engine: Engine, analysis_id: int) -> Iterator[bool]:
    """Try to lock analysis ``analysis_id`` for as long as the block runs; yield whether this process got it.

    On PostgreSQL a session advisory lock on a connection of its own: the server releases it when the
    connection closes, so a worker that dies (SIGKILL, out of memory, a lost machine once TCP gives up)
    never leaves the analysis locked. Other databases (the embedded SQLite, one machine) have no such
    lock: this yields True, and the ``status != done`` guard of :func:`write_findings` alone prevents a
    second write.
    """
    if engine.dialect.name != "postgresql":
        yield True
        return
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT")  # no transaction left open while the study runs
        locked = bool(conn.scalar(select(func.pg_try_advisory_lock(ANALYSIS_LOCK_CLASS, analysis_id))))
        try:
            yield locked
        finally:
            if locked:
                try:
                    conn.scalar(select(func.pg_advisory_unlock(ANALYSIS_LOCK_CLASS, analysis_id)))
                except DBAPIError:
                    log.warning("analysis %d: could not unlock; dropping the connection releases it", analysis_id)
                    conn.invalidate()


@dataclass(frozen=True, slots=True)
class AnalysisJob:
    """What a worker needs to run one analysis: where the series' objects are, and which model."""

    analysis_id: int
    source: str
    objects: list[tuple[str, str]]  # (key, ETag) of each instance of the selected series
    model: str
    attempt: int


def claim_analysis(session: Session, analysis_id: int, max_attempts: int) -> AnalysisJob | None:
    """Start an attempt; None when the analysis is already finished or has used up its attempts.

    Call it holding :func:`analysis_lock`: an analysis still ``running`` then had its last attempt end
    without an outcome (its worker process died: a crash, out of memory, SIGKILL, a hard time limit
    that could not be recorded), and that is recorded as its error. After ``max_attempts`` such
    attempts the analysis is marked failed, so a study that kills its worker does not loop forever.
    """
    analysis = session.get(Analysis, analysis_id, with_for_update=True)
    if analysis is None:
        raise LookupError(f"analysis {analysis_id} does not exist")
    if analysis.status in (AnalysisStatus.DONE, AnalysisStatus.FAILED):
        return None
    if analysis.status == AnalysisStatus.RUNNING and analysis.attempts:
        analysis.error = (
            f"attempt {analysis.attempts} ended without an outcome: its worker process died "
            "(a crash, out of memory or killed)"
        )
    if analysis.attempts >= max_attempts:
        analysis.status = AnalysisStatus.FAILED
        analysis.error = f"gave up after {analysis.attempts} attempts; last error: {analysis.error}"
        analysis.finished_at = utcnow()
        return None
    analysis.attempts += 1
    analysis.status = AnalysisStatus.RUNNING
    analysis.started_at = utcnow()
    rows = series_objects(session, analysis.series_id)
    if not rows:
        raise LookupError(f"analysis {analysis_id}: series {analysis.series_id} has no indexed instances")
    return AnalysisJob(
        analysis_id=analysis_id,
        source=rows[0].source,
        objects=[(r.key, r.etag) for r in rows],
        model=analysis.model,
        attempt=analysis.attempts,
    )


def series_objects(session: Session, series_id: int) -> Sequence[Row[tuple[str, str, str | None]]]:
    """(source, key, etag) of the series' indexed objects, in key order: the order the worker fetches them."""
    return session.execute(
        select(ArchiveObject.source, ArchiveObject.key, ArchiveObject.etag)
        .join(Instance, Instance.object_id == ArchiveObject.id)
        .where(Instance.series_id == series_id, ArchiveObject.status == ObjectStatus.INDEXED)
        .order_by(ArchiveObject.key)
    ).all()


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
    spiculation_model: str | None = None,
    spiculation_sha256: str | None = None,
) -> bool:
    """Write ``findings`` and mark the analysis done, unless it is done already; True if written.

    ``timings_s`` gets a ``write`` entry: the seconds spent here, the commit excepted. ``volume`` describes
    the volume the model saw (shape, spacing in mm, corrections made while building it); ``classifier`` and
    ``classifier_sha256`` the candidate classifier that scored the findings, ``study_score`` its study-level
    abnormality score (0 to 1); ``spiculation_model`` and ``spiculation_sha256`` the model behind the findings'
    spiculation (None: the measurement's hand-made score).
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
            spiculation_model=spiculation_model,
            spiculation_sha256=spiculation_sha256,
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


def record_failure(session: Session, analysis_id: int, error: str) -> None:
    """Mark the analysis failed for good with ``error`` (unless it is done already)."""
    session.execute(
        update(Analysis)
        .where(Analysis.id == analysis_id, Analysis.status != AnalysisStatus.DONE)
        .values(status=AnalysisStatus.FAILED, error=error[:4000], finished_at=utcnow())
    )


def release_for_retry(session: Session, analysis_id: int, error: str) -> None:
    """After a transient error: back to ``queued`` (a retry is on its way) with ``error``, and the attempt given
    back, since the worker survived it (the attempts counter counts attempts that may have killed a worker)."""
    session.execute(
        update(Analysis)
        .where(Analysis.id == analysis_id, Analysis.status == AnalysisStatus.RUNNING)
        .values(
            status=AnalysisStatus.QUEUED,
            queued_at=utcnow(),
            attempts=case((Analysis.attempts > 0, Analysis.attempts - 1), else_=0),
            error=error[:4000],
        )
    )


def return_to_planned(session: Session, analysis_id: int, error: str) -> None:
    """After the last retry of a transient error: back to ``planned`` with ``error``, for the next scan or night
    to send again (an outage is not the study's fault, so it does not fail it)."""
    session.execute(
        update(Analysis)
        .where(Analysis.id == analysis_id, Analysis.status.in_((AnalysisStatus.QUEUED, AnalysisStatus.RUNNING)))
        .values(status=AnalysisStatus.PLANNED, error=error[:4000])
    )
