"""Planning: an analysis for every study that has no result from the current model, then enqueueing.

Analyses are committed as ``planned`` first and enqueued afterwards, one task per study, newest
study first; a run that stops between the two leaves them planned, and the next run sends them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.models import Analysis, AnalysisStatus, Instance, Series, Study
from scheduler.selection import SeriesFacts, select_series

log = logging.getLogger(__name__)


def plan_analyses(session: Session, pipeline: str, model: str, min_slices: int) -> list[int]:
    """Create a planned analysis for each study lacking one for (pipeline, model); return their IDs."""
    has_analysis = select(Analysis.id).where(
        Analysis.study_id == Study.id, Analysis.pipeline == pipeline, Analysis.model == model
    )
    planned: list[int] = []
    for study in session.scalars(select(Study).where(~has_analysis.exists())):
        chosen, reason = select_series(_series_facts(session, study.id), min_slices)
        if chosen is None:
            log.info("study %d: nothing to analyse: %s", study.id, reason)
            continue
        analysis = Analysis(
            study_id=study.id,
            series_id=chosen.series_id,
            pipeline=pipeline,
            model=model,
            status=AnalysisStatus.PLANNED,
            attempts=0,
        )
        session.add(analysis)
        session.flush()
        log.info("study %d: planned analysis %d (%s)", study.id, analysis.id, reason)
        planned.append(analysis.id)
    return planned


def enqueue_planned(session: Session, send: Callable[[int], None]) -> int:
    """Send every planned analysis (newest study first) and mark it queued; return how many were sent.

    Each analysis is committed as queued right after it is sent: a crash in between re-sends one
    analysis at most, and the worker's idempotent write makes that harmless.
    """
    ids = session.scalars(
        select(Analysis.id)
        .join(Study, Study.id == Analysis.study_id)
        .where(Analysis.status == AnalysisStatus.PLANNED)
        .order_by(Study.study_date.desc().nulls_last(), Analysis.id)
    ).all()
    session.commit()
    for analysis_id in ids:
        send(analysis_id)
        session.execute(
            Analysis.__table__.update()
            .where(Analysis.id == analysis_id, Analysis.status == AnalysisStatus.PLANNED)
            .values(status=AnalysisStatus.QUEUED)
        )
        session.commit()
    return len(ids)


def _series_facts(session: Session, study_id: int) -> list[SeriesFacts]:
    rows = session.execute(
        select(Series, func.count(Instance.id))
        .outerjoin(Instance, Instance.series_id == Series.id)
        .where(Series.study_id == study_id)
        .group_by(Series.id)
    )
    return [
        SeriesFacts(
            series_id=series.id,
            modality=series.modality,
            image_type=tuple(series.image_type or ()),
            image_orientation=tuple(series.image_orientation) if series.image_orientation else None,
            slice_thickness_mm=series.slice_thickness_mm,
            n_instances=count,
        )
        for series, count in rows
    ]
