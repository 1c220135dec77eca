"""The reads behind the API and the exports: patients, studies, findings, runs, models, timelines, audit.

Every filter is a bound parameter of a SQLAlchemy expression (never text pasted into SQL), every list
is ordered by a unique key and paged with ``limit``/``offset``. Functions take a session and return
the pydantic shapes of :mod:`reports.schemas`; they never write.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, TypeVar

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from db import queries
from db.models import (
    Analysis,
    AnalysisStatus,
    ApiAudit,
    Assessment,
    Finding,
    Instance,
    Lesion,
    Patient,
    PatientStatus,
    RunStatus,
    ScanRun,
    Series,
    Study,
)
from reports.schemas import (
    MAX_LIMIT,
    MAX_OFFSET,
    AnalysisOut,
    AuditOut,
    FindingOut,
    LesionOut,
    LesionPointOut,
    ModelOut,
    Page,
    PatientOut,
    PatientStatusOut,
    RunOut,
    SeriesOut,
    StudyDetailOut,
    StudyOut,
    TimelineOut,
    TimelineStudyOut,
    WorklistItemOut,
)
from screening.types import LungRads

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Paging:
    """Which rows of a list: ``limit`` rows (1..MAX_LIMIT) from ``offset`` (0..MAX_OFFSET)."""

    limit: int = 50
    offset: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.limit <= MAX_LIMIT:
            raise ValueError(f"limit must be 1 to {MAX_LIMIT}, got {self.limit!r}")
        if not 0 <= self.offset <= MAX_OFFSET:
            raise ValueError(f"offset must be 0 to {MAX_OFFSET}, got {self.offset!r}")


def lesion_name(label: int | None) -> str | None:
    """A lesion's label as reports show it: 1 -> "L1"."""
    return None if label is None else f"L{label}"


def _page(session: Session, query: Select[Any], paging: Paging) -> tuple[list[Any], int]:
    """One page of ``query``'s rows and the number of rows that match in all."""
    total = session.scalar(select(func.count()).select_from(query.order_by(None).subquery())) or 0
    rows = list(session.execute(query.limit(paging.limit).offset(paging.offset)).all())
    return rows, int(total)


def make_page(items: list[T], paging: Paging, total: int | None, *, more: bool | None = None) -> Page[T]:
    """A page of ``items``; ``more`` (whether rows follow) defaults to what ``total`` implies."""
    if more is None:
        more = total is not None and paging.offset + len(items) < total
    next_offset = paging.offset + paging.limit if more and paging.offset + paging.limit <= MAX_OFFSET else None
    return Page[T](items=items, limit=paging.limit, offset=paging.offset, total=total, next_offset=next_offset)


# --- patients -----------------------------------------------------------------------------------------


def patient_by_key(session: Session, patient_key: str) -> Patient | None:
    """The patient whose keyed hash is ``patient_key``, or None."""
    return session.scalar(select(Patient).where(Patient.patient_key == patient_key))


def patient_summary(session: Session, patient: Patient) -> PatientOut:
    """A patient's studies (count, first and last date) and latest status under each model."""
    n, first, last = session.execute(
        select(func.count(Study.id), func.min(Study.study_date), func.max(Study.study_date)).where(
            Study.patient_id == patient.id
        )
    ).one()
    statuses = session.scalars(
        select(PatientStatus).where(PatientStatus.patient_id == patient.id).order_by(PatientStatus.model)
    )
    return PatientOut(
        patient_key=patient.patient_key,
        sex=patient.sex,
        n_studies=n,
        first_study_date=first,
        last_study_date=last,
        status=[PatientStatusOut.model_validate(s) for s in statuses],
    )


# --- studies ------------------------------------------------------------------------------------------


def _analyses(session: Session, study_ids: Sequence[int], model: str | None) -> dict[int, list[AnalysisOut]]:
    """The analyses of ``study_ids`` (only ``model``'s when given), by study id, oldest first."""
    if not study_ids:
        return {}
    n_findings = (
        select(Finding.analysis_id, func.count(Finding.id).label("n"))
        .where(Finding.analysis_id.in_(select(Analysis.id).where(Analysis.study_id.in_(study_ids))))
        .group_by(Finding.analysis_id)
        .subquery()
    )
    query = (
        select(Analysis, Series.series_instance_uid, func.coalesce(n_findings.c.n, 0), Assessment.lungrads)
        .join(Series, Series.id == Analysis.series_id)
        .outerjoin(n_findings, n_findings.c.analysis_id == Analysis.id)
        .outerjoin(Assessment, Assessment.analysis_id == Analysis.id)
        .where(Analysis.study_id.in_(study_ids))
        .order_by(Analysis.id)
    )
    if model is not None:
        query = query.where(Analysis.model == model)
    out: dict[int, list[AnalysisOut]] = {}
    for analysis, series_uid, n, lungrads in session.execute(query):
        out.setdefault(analysis.study_id, []).append(
            AnalysisOut(
                id=analysis.id,
                model=analysis.model,
                pipeline=analysis.pipeline,
                status=analysis.status.value,
                series_instance_uid=series_uid,
                classifier=analysis.classifier,
                study_score=analysis.study_score,
                n_findings=n,
                lungrads=lungrads,
                finished_at=analysis.finished_at,
                error=analysis.error,
            )
        )
    return out


def list_studies(
    session: Session,
    paging: Paging,
    *,
    patient_id: int | None = None,
    model: str | None = None,
    status: AnalysisStatus | None = None,
    date_from: date | None = None,
    date_to: date | None = None,
) -> Page[StudyOut]:
    """Studies, newest first: of one patient (internal id), in a date range (inclusive), having an analysis
    by ``model`` and/or in ``status``. Each study lists its analyses (``model``'s only, when given)."""
    query = select(Study, Patient.patient_key).join(Patient, Patient.id == Study.patient_id)
    if patient_id is not None:
        query = query.where(Study.patient_id == patient_id)
    if date_from is not None:
        query = query.where(Study.study_date >= date_from)
    if date_to is not None:
        query = query.where(Study.study_date <= date_to)
    if model is not None or status is not None:
        having = select(Analysis.id).where(Analysis.study_id == Study.id)
        if model is not None:
            having = having.where(Analysis.model == model)
        if status is not None:
            having = having.where(Analysis.status == status)
        query = query.where(having.exists())
    query = query.order_by(Study.study_date.desc().nulls_last(), Study.id.desc())
    rows, total = _page(session, query, paging)
    analyses = _analyses(session, [study.id for study, _ in rows], model)
    items = [
        StudyOut(
            study_instance_uid=study.study_instance_uid,
            patient_key=key,
            study_date=study.study_date,
            patient_age_years=study.patient_age_years,
            analyses=analyses.get(study.id, []),
        )
        for study, key in rows
    ]
    return make_page(items, paging, total)


def study_detail(session: Session, study_uid: str) -> StudyDetailOut | None:
    """One study by StudyInstanceUID: its series (with slice counts) and every analysis; None if unknown."""
    row = session.execute(
        select(Study, Patient.patient_key)
        .join(Patient, Patient.id == Study.patient_id)
        .where(Study.study_instance_uid == study_uid)
    ).first()
    if row is None:
        return None
    study, key = row
    series = session.execute(
        select(Series, func.coalesce(func.sum(Instance.n_frames), 0))
        .outerjoin(Instance, Instance.series_id == Series.id)
        .where(Series.study_id == study.id)
        .group_by(Series.id)
        .order_by(Series.series_number, Series.id)
    ).all()
    return StudyDetailOut(
        study_instance_uid=study.study_instance_uid,
        patient_key=key,
        study_date=study.study_date,
        patient_age_years=study.patient_age_years,
        analyses=_analyses(session, [study.id], None).get(study.id, []),
        series=[
            SeriesOut(
                series_instance_uid=s.series_instance_uid,
                modality=s.modality,
                series_number=s.series_number,
                slice_thickness_mm=s.slice_thickness_mm,
                rows=s.rows,
                columns=s.columns,
                n_slices=int(n),
            )
            for s, n in series
        ],
    )


# --- findings -----------------------------------------------------------------------------------------


def _finding_out(finding: Finding, study: Study, key: str, model: str, lesion_label: int | None) -> FindingOut:
    return FindingOut(
        id=finding.id,
        analysis_id=finding.analysis_id,
        study_instance_uid=study.study_instance_uid,
        study_date=study.study_date,
        patient_key=key,
        model=model,
        ordinal=finding.ordinal,
        lesion=lesion_name(lesion_label),
        label=finding.label,
        score=finding.score,
        probability=finding.probability,
        nodule_type=finding.nodule_type,
        center_x_mm=finding.center_x_mm,
        center_y_mm=finding.center_y_mm,
        center_z_mm=finding.center_z_mm,
        diameter_mm=finding.diameter_mm,
        long_axis_mm=finding.long_axis_mm,
        short_axis_mm=finding.short_axis_mm,
        volume_mm3=finding.volume_mm3,
        solid_component_mm=finding.solid_component_mm,
        sop_instance_uid=finding.sop_instance_uid,
        frame_number=finding.frame_number,
    )


def list_findings(
    session: Session,
    paging: Paging,
    *,
    study_uid: str | None = None,
    analysis_id: int | None = None,
    patient_id: int | None = None,
    model: str | None = None,
    nodule_type: str | None = None,
    label: str | None = None,
    lesion_status: str | None = None,
    min_diameter_mm: float | None = None,
    max_diameter_mm: float | None = None,
    date_from: date | None = None,
    date_to: date | None = None,
) -> Page[FindingOut]:
    """Findings of done analyses, newest study first, then by ordinal; every argument narrows the list.

    Diameters in mm (inclusive bounds), dates inclusive; ``lesion_status`` (present, resolved) keeps
    findings tracked to a lesion in that status.
    """
    query = (
        select(Finding, Study, Patient.patient_key, Analysis.model, Lesion.label)
        .join(Analysis, Analysis.id == Finding.analysis_id)
        .join(Study, Study.id == Analysis.study_id)
        .join(Patient, Patient.id == Study.patient_id)
        .outerjoin(Lesion, Lesion.id == Finding.lesion_id)
        .where(Analysis.status == AnalysisStatus.DONE)
    )
    for value, condition in (  # conditions built only for the values given
        (study_uid, lambda v: Study.study_instance_uid == v),
        (analysis_id, lambda v: Finding.analysis_id == v),
        (patient_id, lambda v: Study.patient_id == v),
        (model, lambda v: Analysis.model == v),
        (nodule_type, lambda v: Finding.nodule_type == v),
        (label, lambda v: Finding.label == v),
        (lesion_status, lambda v: Lesion.status == v),
        (min_diameter_mm, lambda v: Finding.diameter_mm >= v),
        (max_diameter_mm, lambda v: Finding.diameter_mm <= v),
        (date_from, lambda v: Study.study_date >= v),
        (date_to, lambda v: Study.study_date <= v),
    ):
        if value is not None:
            query = query.where(condition(value))
    query = query.order_by(Study.study_date.desc().nulls_last(), Analysis.id.desc(), Finding.ordinal)
    rows, total = _page(session, query, paging)
    items = [_finding_out(f, study, key, model_ref, lesion) for f, study, key, model_ref, lesion in rows]
    return make_page(items, paging, total)


# --- runs and models ----------------------------------------------------------------------------------


def list_runs(
    session: Session,
    paging: Paging,
    *,
    status: RunStatus | None = None,
    source: str | None = None,
    started_from: datetime | None = None,
    started_to: datetime | None = None,
) -> Page[RunOut]:
    """Scan runs, newest first; ``source`` is matched exactly, start times inclusive."""
    query = select(ScanRun)
    for value, condition in (  # conditions built only for the values given
        (status, lambda v: ScanRun.status == v),
        (source, lambda v: ScanRun.source == v),
        (started_from, lambda v: ScanRun.started_at >= v),
        (started_to, lambda v: ScanRun.started_at <= v),
    ):
        if value is not None:
            query = query.where(condition(value))
    rows, total = _page(session, query.order_by(ScanRun.id.desc()), paging)
    items = [_run_out(run) for (run,) in rows]
    return make_page(items, paging, total)


def _run_out(run: ScanRun) -> RunOut:
    return RunOut(
        id=run.id,
        source=run.source,
        night=run.night,
        started_at=run.started_at,
        finished_at=run.finished_at,
        until=run.until,
        status=run.status.value,
        counts=run.counts,
        error=run.error,
        batches_sent=run.batches_sent,
        batches_done=run.batches_done,
    )


def run_detail(session: Session, run_id: int) -> RunOut | None:
    """One scan run, or None."""
    run = session.get(ScanRun, run_id)
    return None if run is None else _run_out(run)


def list_models(name: str | None = None) -> list[ModelOut]:
    """The registered models (models/registry.json), in registry order; only ``name``'s versions when given."""
    from models.registry import list_entries

    return [
        ModelOut(
            ref=e.ref,
            name=e.name,
            version=e.version,
            sha256=e.sha256,
            categories=list(e.categories),
            score_threshold=e.score_threshold,
            provisional=e.provisional,
            trained_at=e.trained_at,
            metrics=e.metrics,
        )
        for e in list_entries()
        if name is None or e.name == name
    ]


# --- timeline -----------------------------------------------------------------------------------------


def patient_models(session: Session, patient_id: int) -> list[str]:
    """The models that analysed a patient's studies, most recently finished first."""
    rows = session.execute(
        select(Analysis.model, func.max(Analysis.id))
        .join(Study, Study.id == Analysis.study_id)
        .where(Study.patient_id == patient_id, Analysis.status == AnalysisStatus.DONE)
        .group_by(Analysis.model)
        .order_by(func.max(Analysis.id).desc())
    ).all()
    return [model for model, _ in rows]


def timeline(session: Session, patient: Patient, model: str) -> TimelineOut:
    """A patient's history under ``model`` (:func:`db.queries.patient_timeline`): the latest risk, every study
    (oldest first) with this model's assessment, every lesion with its size at each study (mm)."""
    found = queries.patient_timeline(session, patient.id, model)
    if found is None:
        raise LookupError(f"patient {patient.patient_key[:8]} vanished while being read")
    uids = dict(session.execute(select(Study.id, Study.study_instance_uid).where(Study.patient_id == patient.id)).all())
    risk = found.risk
    return TimelineOut(
        patient_key=found.patient_key,
        sex=found.sex,
        model=model,
        risk=None
        if risk is None
        else PatientStatusOut(
            model=model,
            latest_study_date=risk.latest_study_date,
            lungrads=risk.lungrads,
            brock_max=risk.brock_max,
            vdt_min_days=risk.vdt_min_days,
            follow_up_due=risk.follow_up_due,
            n_lesions=risk.n_lesions,
        ),
        studies=[
            TimelineStudyOut(
                study_instance_uid=uids[s.study_id],
                study_date=s.study_date,
                analysis_id=s.analysis_id,
                analysis_status=s.analysis_status,
                lungrads=s.lungrads,
                reason=s.reason,
                brock_max=s.brock_max,
                vdt_min_days=s.vdt_min_days,
                follow_up_due=s.follow_up_due,
            )
            for s in found.studies
        ],
        lesions=[
            LesionOut(
                label=lesion.name,
                status=lesion.status,
                nodule_type=lesion.nodule_type,
                first_seen=lesion.first_seen,
                last_seen=lesion.last_seen,
                diameter_mm=lesion.diameter_mm,
                vdt_days=lesion.vdt_days,
                vdt_shortest_days=lesion.vdt_shortest_days,
                vdt_longest_days=lesion.vdt_longest_days,
                brock_probability=lesion.brock_probability,
                points=[
                    LesionPointOut(
                        study_instance_uid=uids[o.study_id],
                        study_date=o.study_date,
                        analysis_id=o.analysis_id,
                        finding_id=o.finding_id,
                        diameter_mm=o.diameter_mm,
                        long_axis_mm=o.long_axis_mm,
                        short_axis_mm=o.short_axis_mm,
                        volume_mm3=o.volume_mm3,
                        nodule_type=o.nodule_type,
                        center_x_mm=o.centre_mm[0],
                        center_y_mm=o.centre_mm[1],
                        center_z_mm=o.centre_mm[2],
                    )
                    for o in lesion.observations
                ],
            )
            for lesion in found.lesions
        ],
    )


# --- worklist -----------------------------------------------------------------------------------------


def worklist_page(
    session: Session,
    paging: Paging,
    *,
    model: str,
    today: date,
    min_category: LungRads | str = LungRads.CAT4A,
    vdt_days: float = 400.0,
) -> Page[WorklistItemOut]:
    """Patients who need attention under ``model`` (:func:`db.queries.worklist`), most urgent first: latest
    category ``min_category`` or more, a present lesion's VDT under ``vdt_days`` days, or a follow-up due
    before ``today``. The page is not counted (``total`` None); ``next_offset`` says whether more follow."""
    entries = queries.worklist(
        session, model, today, vdt_days, min_category=min_category, limit=paging.limit + 1, offset=paging.offset
    )
    items = [
        WorklistItemOut(
            patient_key=e.patient_key,
            model=model,
            latest_study_date=e.latest_study_date,
            lungrads=e.lungrads,
            brock_max=e.brock_max,
            vdt_min_days=e.vdt_min_days,
            follow_up_due=e.follow_up_due,
            n_lesions=e.n_lesions,
            reasons=list(e.reasons),
        )
        for e in entries[: paging.limit]
    ]
    return make_page(items, paging, None, more=len(entries) > paging.limit)


# --- audit --------------------------------------------------------------------------------------------


def list_audit(
    session: Session,
    paging: Paging,
    *,
    token_name: str | None = None,
    route: str | None = None,
    status_code: int | None = None,
    at_from: datetime | None = None,
    at_to: datetime | None = None,
) -> Page[AuditOut]:
    """Recorded API requests, newest first; times inclusive."""
    query = select(ApiAudit)
    for value, condition in (  # conditions built only for the values given
        (token_name, lambda v: ApiAudit.token_name == v),
        (route, lambda v: ApiAudit.route == v),
        (status_code, lambda v: ApiAudit.status_code == v),
        (at_from, lambda v: ApiAudit.at >= v),
        (at_to, lambda v: ApiAudit.at <= v),
    ):
        if value is not None:
            query = query.where(condition(value))
    rows, total = _page(session, query.order_by(ApiAudit.id.desc()), paging)
    items = [AuditOut.model_validate(row) for (row,) in rows]
    return make_page(items, paging, total)


__all__ = [
    "Paging",
    "lesion_name",
    "list_audit",
    "list_findings",
    "list_models",
    "list_runs",
    "list_studies",
    "make_page",
    "patient_by_key",
    "patient_models",
    "patient_summary",
    "run_detail",
    "study_detail",
    "timeline",
    "worklist_page",
]
