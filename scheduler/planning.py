"""Planning and enqueueing: what to analyse, in which order, and how much at once.

An analysis is planned for every study whose selected series is ready (unchanged for the quiet time)
and that has no analysis by the current model. Planned analyses are committed first and sent
afterwards, one task per study: studies never analysed (patients with earlier findings first, then the
newest studies) before re-analyses by a new model version (``scheduler/reanalysis.py``). At
most ``max_outstanding`` analyses are queued or running at once, and nothing is sent after the end
of the overnight window; what is left stays planned for the next run. A reconciler returns
analyses stuck in queued or running past their lease to planned, so they are sent again.
Sending claims each analysis in the database first, so concurrent schedulers send it once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session, aliased

from db.models import (
    Analysis,
    AnalysisStatus,
    ArchiveObject,
    Finding,
    Instance,
    Series,
    SeriesSelection,
    Study,
    utcnow,
)
from scheduler.selection import Decision, SelectionRules, SeriesFacts, rules_for, select_series

log = logging.getLogger(__name__)

OUTSTANDING = (AnalysisStatus.QUEUED, AnalysisStatus.RUNNING)


@dataclass
class PlanReport:
    """What planning did: analyses planned, studies waiting for their series to settle, studies with no series."""

    planned: list[int] = field(default_factory=list)
    waiting: int = 0
    no_series: int = 0


def plan_analyses(session: Session, pipeline: str, model: str, *, quiet_s: float, now: datetime) -> PlanReport:
    """Plan an analysis for each ready study lacking one for (pipeline, model); record every series decision."""
    rules = rules_for(pipeline)
    has_analysis = select(Analysis.id).where(
        Analysis.study_id == Study.id, Analysis.pipeline == pipeline, Analysis.model == model
    )
    report = PlanReport()
    for study in session.scalars(select(Study).where(~has_analysis.exists())):
        choice = choose_series(session, study.id, pipeline, rules, quiet_s=quiet_s, now=now)
        if choice.decision is None:
            report.no_series += 1
            continue
        if choice.waiting:
            report.waiting += 1  # still being uploaded, or just finished: plan it next time
            continue
        chosen = choice.decision
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
        log.info(
            "study %d: planned analysis %d (series %d: %s)", study.id, analysis.id, chosen.series_id, chosen.reason
        )
        report.planned.append(analysis.id)
    return report


@dataclass(frozen=True)
class SeriesChoice:
    """The series the rules chose for a study (None: no series qualifies), and whether it is still changing."""

    decision: Decision | None
    waiting: bool = False  # chosen, but an object of it changed within the quiet time


def choose_series(
    session: Session, study_id: int, pipeline: str, rules: SelectionRules, *, quiet_s: float, now: datetime
) -> SeriesChoice:
    """Apply ``rules`` to the study's series, record every decision, and check the chosen one's quiet time (s)."""
    decisions = select_series(_series_facts(session, study_id), rules)
    _record_decisions(session, pipeline, decisions, now)
    chosen = next((d for d in decisions if d.selected), None)
    if chosen is None:
        return SeriesChoice(None)
    last_change = _last_change(session, chosen.series_id)
    waiting = last_change is not None and (now - _aware(last_change)).total_seconds() < quiet_s
    return SeriesChoice(chosen, waiting)


@dataclass
class EnqueueReport:
    """What one round of enqueueing did, and why it stopped."""

    sent: int = 0
    remaining: int = 0
    stopped: str = "done"  # done, backpressure or window_closed


def enqueue_planned(
    session: Session,
    send: Callable[[int], None],
    *,
    max_outstanding: int | None = None,
    until: datetime | None = None,
    now: Callable[[], datetime] = utcnow,
) -> EnqueueReport:
    """Send planned analyses in priority order until none is left, the window closes or the limit is reached.

    Each analysis is claimed (planned -> queued, committed) before it is sent, so two schedulers
    running at once never send the same analysis. A crash between the commit and the send leaves
    it queued but unsent; the reconciler sends it again once its lease has passed. Under a limit,
    only as many as there is room for are read each time (:func:`_next_planned`): a campaign leaves
    hundreds of thousands planned, and ordering them all every round would cost seconds.
    """
    outstanding = session.scalar(select(func.count()).select_from(Analysis).where(Analysis.status.in_(OUTSTANDING)))
    outstanding = outstanding or 0
    total = session.scalar(select(func.count()).select_from(Analysis).where(Analysis.status == AnalysisStatus.PLANNED))
    session.commit()
    report = EnqueueReport(remaining=total or 0)
    while True:
        room = None if max_outstanding is None else max_outstanding - outstanding
        if room is not None and room <= 0:
            if report.remaining:
                report.stopped = "backpressure"
            return report
        ids = _next_planned(session, room)
        session.commit()
        if not ids:
            return report
        for analysis_id in ids:
            if until is not None and now() >= until:
                report.stopped = "window_closed"
                return report
            claimed = session.execute(
                update(Analysis)
                .where(Analysis.id == analysis_id, Analysis.status == AnalysisStatus.PLANNED)
                .values(status=AnalysisStatus.QUEUED, queued_at=now())
            ).rowcount
            session.commit()
            report.remaining = max(report.remaining - 1, 0)
            if not claimed:
                continue  # another scheduler sent it
            send(analysis_id)
            report.sent += 1
            outstanding += 1


def reconcile(session: Session, *, lease_s: float, now: datetime) -> int:
    """Return analyses queued or running for longer than ``lease_s`` seconds to planned; how many."""
    cutoff = now - timedelta(seconds=lease_s)
    result = session.execute(
        update(Analysis)
        .where(
            or_(
                (Analysis.status == AnalysisStatus.QUEUED) & (Analysis.queued_at < cutoff),
                (Analysis.status == AnalysisStatus.RUNNING) & (Analysis.started_at < cutoff),
            )
        )
        .values(status=AnalysisStatus.PLANNED)
    )
    if result.rowcount:
        log.warning(
            "reconciler: %d analyses were past their %.0f s lease and will be sent again", result.rowcount, lease_s
        )
    return result.rowcount


def _next_planned(session: Session, room: int | None) -> list[int]:
    """Planned analyses in priority order, at most ``room`` of them (None: all).

    First the studies that no model has analysed yet (no finished analysis of the pipeline by another
    model): patients with findings on an earlier study first, then the newest studies. Then the
    re-analyses (``scheduler/reanalysis.py``), newest study first: the cheap order, as there may be
    hundreds of thousands of them.
    """
    earlier = aliased(Study)
    earlier_analysis = aliased(Analysis)
    previous = aliased(Analysis)
    is_reanalysis = (
        select(previous.id)
        .where(
            previous.study_id == Analysis.study_id,
            previous.pipeline == Analysis.pipeline,
            previous.id != Analysis.id,
            previous.status == AnalysisStatus.DONE,
        )
        .exists()
    )
    has_earlier_findings = (
        select(Finding.id)
        .join(earlier_analysis, earlier_analysis.id == Finding.analysis_id)
        .join(earlier, earlier.id == earlier_analysis.study_id)
        .where(earlier.patient_id == Study.patient_id, earlier.id != Study.id)
        .exists()
    )
    planned = (
        select(Analysis.id).join(Study, Study.id == Analysis.study_id).where(Analysis.status == AnalysisStatus.PLANNED)
    )
    new = planned.where(~is_reanalysis).order_by(
        has_earlier_findings.desc(), Study.study_date.desc().nulls_last(), Analysis.id
    )
    ids = list(session.scalars(new if room is None else new.limit(room)))
    if room is not None and len(ids) >= room:
        return ids
    again = planned.where(is_reanalysis).order_by(Study.study_date.desc().nulls_last(), Analysis.id)
    ids.extend(session.scalars(again if room is None else again.limit(room - len(ids))))
    return ids


def _record_decisions(session: Session, pipeline: str, decisions: list[Decision], now: datetime) -> None:
    existing = {
        row.series_id: row
        for row in session.scalars(
            select(SeriesSelection).where(
                SeriesSelection.pipeline == pipeline,
                SeriesSelection.series_id.in_([d.series_id for d in decisions]),
            )
        )
    }
    for decision in decisions:
        row = existing.get(decision.series_id) or SeriesSelection(series_id=decision.series_id, pipeline=pipeline)
        row.selected, row.reason, row.decided_at = decision.selected, decision.reason, now
        session.add(row)


def _last_change(session: Session, series_id: int) -> datetime | None:
    """When the series last changed in the archive: the newest last-modified time of its objects."""
    return session.scalar(
        select(func.max(ArchiveObject.last_modified))
        .join(Instance, Instance.object_id == ArchiveObject.id)
        .where(Instance.series_id == series_id)
    )


def _aware(moment: datetime) -> datetime:
    """SQLite returns naive datetimes for timezone-aware columns: they are UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=utcnow().tzinfo)


def _series_facts(session: Session, study_id: int) -> list[SeriesFacts]:
    rows = session.execute(
        select(Series, func.coalesce(func.sum(Instance.n_frames), 0))
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
            n_slices=count,
        )
        for series, count in rows
    ]
