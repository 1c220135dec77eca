"""The read queries the reports need: a patient's timeline, the worklist, cohort summaries, version pairs.

Plain SQLAlchemy, one or a few statements each, returning frozen dataclasses (never ORM objects, so a
result outlives its session). They read what the longitudinal step wrote (``assessments``,
``lesions``, ``patient_status``, ``findings.lesion_id``) and decide nothing: the thresholds (a
category, a VDT in days, today's date) are the caller's arguments. Patients are named by their
pseudonymous ``patient_key`` (a keyed hash), never by anything from the DICOM headers.

Units: sizes in mm, volumes in mm3, VDT in days, Brock probabilities 0..1, dates as ``date``.
The indexes they rely on (migrations 0001 and 0005): ``studies.patient_id``, ``analyses.study_id``,
``assessments.analysis_id`` (unique) and ``.patient_id``, ``lesions.patient_id``, ``findings.lesion_id``,
``patient_status`` (patient_id, model) (unique) and (model, lungrads | follow_up_due | vdt_min_days).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from sqlalchemy import and_, case, func, or_, select
from sqlalchemy.orm import Session, aliased

from db.models import Analysis, Assessment, Finding, Lesion, Patient, PatientStatus, Study
from nightscan.enums import to_enum
from screening.types import LungRads

CATEGORY_ORDER: tuple[str, ...] = ("0", *(c.value for c in LungRads))
"""Every value of ``lungrads`` columns, in display order ('0': incomplete exam, first)."""


def categories_from(minimum: LungRads | str) -> tuple[str, ...]:
    """The Lung-RADS categories at ``minimum`` or more suspicious ('4A' -> '4A', '4B', '4X')."""
    floor = to_enum(LungRads, minimum, "minimum")
    return tuple(c.value for c in LungRads if c >= floor)


@dataclass(frozen=True)
class RiskSummary:
    """A patient's latest state under one model (``patient_status``): category, risk, follow-up, lesions."""

    lungrads: str
    brock_max: float | None  # 0..1
    vdt_min_days: float | None  # shortest finite VDT among present lesions, days
    follow_up_due: date | None
    n_lesions: int  # present lesions
    latest_study_date: date | None
    latest_analysis_id: int


@dataclass(frozen=True)
class TimelineStudy:
    """One study of the patient and, where the model analysed it, the analysis and its assessment."""

    study_id: int
    study_date: date | None
    analysis_id: int | None  # None: this model has no analysis of the study
    analysis_status: str | None
    lungrads: str | None  # None: not assessed (yet)
    reason: str | None
    brock_max: float | None  # 0..1
    vdt_min_days: float | None  # days
    follow_up_due: date | None


@dataclass(frozen=True)
class LesionObservation:
    """A lesion as one study's finding measured it: sizes in mm, volume in mm3, centre (x, y, z) in mm."""

    study_id: int
    study_date: date | None
    analysis_id: int
    finding_id: int
    diameter_mm: float  # the detector's box diameter
    long_axis_mm: float | None
    short_axis_mm: float | None
    volume_mm3: float | None
    nodule_type: str | None
    centre_mm: tuple[float, float, float]


@dataclass(frozen=True)
class TimelineLesion:
    """A tracked lesion (``L<label>``) with its latest values and its observations in date order."""

    lesion_id: int
    label: int
    status: str  # present or resolved
    nodule_type: str | None
    first_seen: date | None
    last_seen: date | None
    diameter_mm: float | None  # latest mean diameter, mm
    vdt_days: float | None
    brock_probability: float | None  # 0..1
    observations: tuple[LesionObservation, ...]
    vdt_shortest_days: float | None = None  # the VDT range its two volumes allow (days)
    vdt_longest_days: float | None = None  # None: growth within the measurements' noise (or no VDT)

    @property
    def name(self) -> str:
        """How reports name the lesion: ``L1``, ``L2``, ..."""
        return f"L{self.label}"


@dataclass(frozen=True)
class PatientTimeline:
    """One patient under one model: studies (oldest first), lesions (by label) and the latest risk."""

    patient_id: int
    patient_key: str
    sex: str | None
    model: str
    studies: tuple[TimelineStudy, ...]
    lesions: tuple[TimelineLesion, ...]
    risk: RiskSummary | None  # None: the longitudinal step has not run for this patient and model


def patient_timeline(session: Session, patient_id: int, model: str) -> PatientTimeline | None:
    """The timeline of ``patient_id`` under ``model`` (name@version); None when there is no such patient.

    Three statements: the patient with its status; its studies with this model's analyses and
    assessments; its lesions with their findings.
    """
    head = session.execute(
        select(
            Patient.patient_key,
            Patient.sex,
            PatientStatus.id,
            PatientStatus.lungrads,
            PatientStatus.brock_max,
            PatientStatus.vdt_min_days,
            PatientStatus.follow_up_due,
            PatientStatus.n_lesions,
            PatientStatus.latest_study_date,
            PatientStatus.latest_analysis_id,
        )
        .outerjoin(PatientStatus, and_(PatientStatus.patient_id == Patient.id, PatientStatus.model == model))
        .where(Patient.id == patient_id)
    ).first()
    if head is None:
        return None
    key, sex, status_id, lungrads, brock, vdt, due, n_lesions, latest_date, latest_analysis = head
    risk = None
    if status_id is not None:
        risk = RiskSummary(
            lungrads=lungrads,
            brock_max=brock,
            vdt_min_days=vdt,
            follow_up_due=due,
            n_lesions=n_lesions,
            latest_study_date=latest_date,
            latest_analysis_id=latest_analysis,
        )
    rows = session.execute(
        select(
            Study.id,
            Study.study_date,
            Analysis.id,
            Analysis.status,
            Assessment.lungrads,
            Assessment.reason,
            Assessment.brock_max,
            Assessment.vdt_min_days,
            Assessment.follow_up_due,
        )
        .outerjoin(Analysis, and_(Analysis.study_id == Study.id, Analysis.model == model))
        .outerjoin(Assessment, Assessment.analysis_id == Analysis.id)
        .where(Study.patient_id == patient_id)
        .order_by(Study.study_date.asc().nulls_last(), Study.id, Analysis.id)
    ).all()
    studies = tuple(
        TimelineStudy(
            study_id=r[0],
            study_date=r[1],
            analysis_id=r[2],
            analysis_status=None if r[3] is None else str(r[3].value),
            lungrads=r[4],
            reason=r[5],
            brock_max=r[6],
            vdt_min_days=r[7],
            follow_up_due=r[8],
        )
        for r in rows
    )
    return PatientTimeline(
        patient_id=patient_id,
        patient_key=key,
        sex=sex,
        model=model,
        studies=studies,
        lesions=_lesions(session, patient_id, model),
        risk=risk,
    )


def _lesions(session: Session, patient_id: int, model: str) -> tuple[TimelineLesion, ...]:
    lesion_columns = (
        Lesion.id,
        Lesion.label,
        Lesion.status,
        Lesion.nodule_type,
        Lesion.first_seen,
        Lesion.last_seen,
        Lesion.diameter_mm,
        Lesion.vdt_days,
        Lesion.brock_probability,
        Lesion.vdt_shortest_days,
        Lesion.vdt_longest_days,
    )
    rows = session.execute(
        select(
            *lesion_columns,
            Analysis.study_id,
            Study.study_date,
            Finding.analysis_id,
            Finding.id,
            Finding.diameter_mm,
            Finding.long_axis_mm,
            Finding.short_axis_mm,
            Finding.volume_mm3,
            Finding.nodule_type,
            Finding.center_x_mm,
            Finding.center_y_mm,
            Finding.center_z_mm,
        )
        .outerjoin(Finding, Finding.lesion_id == Lesion.id)
        .outerjoin(Analysis, Analysis.id == Finding.analysis_id)
        .outerjoin(Study, Study.id == Analysis.study_id)
        .where(Lesion.patient_id == patient_id, Lesion.model == model)
        .order_by(Lesion.label, Study.study_date.asc().nulls_last(), Finding.id)
    ).all()
    n = len(lesion_columns)
    lesions: dict[int, tuple[tuple[Any, ...], list[LesionObservation]]] = {}
    for row in rows:
        _, observations = lesions.setdefault(row[0], (tuple(row[:n]), []))
        study_id, study_date, analysis_id, finding_id, diameter, long_axis, short_axis, volume, kind, x, y, z = row[n:]
        if finding_id is not None:
            observations.append(
                LesionObservation(
                    study_id=study_id,
                    study_date=study_date,
                    analysis_id=analysis_id,
                    finding_id=finding_id,
                    diameter_mm=diameter,
                    long_axis_mm=long_axis,
                    short_axis_mm=short_axis,
                    volume_mm3=volume,
                    nodule_type=kind,
                    centre_mm=(x, y, z),
                )
            )
    timeline = []
    for values, observations in lesions.values():
        lesion_id, label, status, nodule_type, first_seen, last_seen, diameter, vdt, brock, shortest, longest = values
        timeline.append(
            TimelineLesion(
                lesion_id=lesion_id,
                label=label,
                status=status,
                nodule_type=nodule_type,
                first_seen=first_seen,
                last_seen=last_seen,
                diameter_mm=diameter,
                vdt_days=vdt,
                brock_probability=brock,
                observations=tuple(observations),
                vdt_shortest_days=shortest,
                vdt_longest_days=longest,
            )
        )
    return tuple(timeline)


@dataclass(frozen=True)
class WorklistEntry:
    """A patient who needs attention, and why (one or more reasons, in words)."""

    patient_id: int
    patient_key: str
    lungrads: str
    brock_max: float | None  # 0..1
    vdt_min_days: float | None  # days
    follow_up_due: date | None
    latest_study_date: date | None
    n_lesions: int
    reasons: tuple[str, ...]


def worklist(
    session: Session,
    model: str,
    today: date,
    vdt_days: float = 400.0,
    *,
    min_category: LungRads | str = LungRads.CAT4A,
    limit: int | None = None,
    offset: int = 0,
) -> list[WorklistEntry]:
    """Patients whose latest category under ``model`` is ``min_category`` or more, or who have a present
    lesion with a VDT under ``vdt_days`` days, or whose follow-up was due before ``today``.

    Most urgent first: higher category, then shorter VDT, then the longest overdue. ``limit`` and
    ``offset`` page through it. One statement (PostgreSQL: a bitmap OR of the three status indexes).
    """
    high = categories_from(min_category)
    if not vdt_days > 0:
        raise ValueError(f"vdt_days must be > 0, got {vdt_days!r}")
    rank = case({c: i for i, c in enumerate(CATEGORY_ORDER)}, value=PatientStatus.lungrads, else_=-1)
    query = (
        select(
            PatientStatus.patient_id,
            Patient.patient_key,
            PatientStatus.lungrads,
            PatientStatus.brock_max,
            PatientStatus.vdt_min_days,
            PatientStatus.follow_up_due,
            PatientStatus.latest_study_date,
            PatientStatus.n_lesions,
        )
        .join(Patient, Patient.id == PatientStatus.patient_id)
        .where(
            PatientStatus.model == model,
            or_(
                PatientStatus.lungrads.in_(high),
                PatientStatus.vdt_min_days < vdt_days,
                PatientStatus.follow_up_due < today,
            ),
        )
        .order_by(
            rank.desc(),
            PatientStatus.vdt_min_days.asc().nulls_last(),
            PatientStatus.follow_up_due.asc().nulls_last(),
            PatientStatus.patient_id,
        )
        .offset(offset)
    )
    if limit is not None:
        query = query.limit(limit)
    entries = []
    for patient_id, key, lungrads, brock, vdt, due, latest, n_lesions in session.execute(query):
        reasons = []
        if lungrads in high:
            reasons.append(f"Lung-RADS {lungrads}")
        if vdt is not None and vdt < vdt_days:
            reasons.append(f"VDT {vdt:.0f} days (under {vdt_days:.0f})")
        if due is not None and due < today:
            reasons.append(f"follow-up overdue since {due.isoformat()}")
        entries.append(
            WorklistEntry(
                patient_id=patient_id,
                patient_key=key,
                lungrads=lungrads,
                brock_max=brock,
                vdt_min_days=vdt,
                follow_up_due=due,
                latest_study_date=latest,
                n_lesions=n_lesions,
                reasons=tuple(reasons),
            )
        )
    return entries


@dataclass(frozen=True)
class CohortSummary:
    """Counts over every patient the longitudinal step has assessed under ``model``.

    ``by_category`` lists every category in :data:`CATEGORY_ORDER`, 0 where none; ``overdue`` counts
    follow-ups due before ``today``; ``fast_growing`` present lesions' VDT under ``vdt_days`` days;
    ``high_brock`` a Brock probability of ``brock_threshold`` (0..1) or more; ``analyses`` the model's
    analyses by status (planned, queued, running, done, failed).
    """

    model: str
    today: date
    patients: int
    by_category: dict[str, int]
    overdue: int
    fast_growing: int
    vdt_days: float
    high_brock: int
    brock_threshold: float
    lesions_present: int
    analyses: dict[str, int] = field(default_factory=dict)


def cohort_summary(
    session: Session,
    model: str,
    today: date | None = None,
    *,
    vdt_days: float = 400.0,
    brock_threshold: float = 0.10,
) -> CohortSummary:
    """Counts by category, overdue, fast-growing, high Brock, lesions, analyses by status (two statements).

    ``today`` defaults to the local date.
    """
    today = today or date.today()
    rows = session.execute(
        select(
            PatientStatus.lungrads,
            func.count(),
            func.sum(case((PatientStatus.follow_up_due < today, 1), else_=0)),
            func.sum(case((PatientStatus.vdt_min_days < vdt_days, 1), else_=0)),
            func.sum(case((PatientStatus.brock_max >= brock_threshold, 1), else_=0)),
            func.sum(PatientStatus.n_lesions),
        )
        .where(PatientStatus.model == model)
        .group_by(PatientStatus.lungrads)
    ).all()
    by_category = dict.fromkeys(CATEGORY_ORDER, 0)
    totals = [0, 0, 0, 0]
    for category, count, overdue, fast, brock, lesions in rows:
        by_category[category] = by_category.get(category, 0) + count
        for i, value in enumerate((overdue, fast, brock, lesions)):
            totals[i] += int(value or 0)
    analyses = {
        str(getattr(status, "value", status)): count
        for status, count in session.execute(
            select(Analysis.status, func.count()).where(Analysis.model == model).group_by(Analysis.status)
        )
    }
    return CohortSummary(
        model=model,
        today=today,
        patients=sum(by_category.values()),
        by_category=by_category,
        overdue=totals[0],
        fast_growing=totals[1],
        vdt_days=vdt_days,
        high_brock=totals[2],
        brock_threshold=brock_threshold,
        lesions_present=totals[3],
        analyses=analyses,
    )


@dataclass(frozen=True)
class AssessedPair:
    """The same study assessed by two models: each one's analysis, category and reason."""

    patient_id: int
    patient_key: str
    study_id: int
    study_date: date | None
    analysis_a: int
    lungrads_a: str
    reason_a: str
    analysis_b: int
    lungrads_b: str
    reason_b: str


def latest_common_assessments(session: Session, model_a: str, model_b: str) -> list[AssessedPair]:
    """For each patient assessed by both models on a common study: that pair on the latest such study.

    Comparing on the same study keeps a new study (seen by one version only) from passing for a change
    of version. Patients in patient-key order.
    """
    assessment_b = aliased(Assessment)
    analysis_a = aliased(Analysis)
    analysis_b = aliased(Analysis)
    rows = session.execute(
        select(
            Assessment.patient_id,
            Patient.patient_key,
            analysis_a.study_id,
            Study.study_date,
            Assessment.analysis_id,
            Assessment.lungrads,
            Assessment.reason,
            assessment_b.analysis_id,
            assessment_b.lungrads,
            assessment_b.reason,
        )
        .join(analysis_a, analysis_a.id == Assessment.analysis_id)
        .join(analysis_b, and_(analysis_b.study_id == analysis_a.study_id, analysis_b.model == model_b))
        .join(assessment_b, assessment_b.analysis_id == analysis_b.id)
        .join(Study, Study.id == analysis_a.study_id)
        .join(Patient, Patient.id == Assessment.patient_id)
        .where(Assessment.model == model_a)
        .order_by(Patient.patient_key, Study.study_date.desc().nulls_last(), Study.id.desc())
    ).all()
    latest: dict[int, AssessedPair] = {}
    for r in rows:
        if r[0] not in latest:  # the first row of each patient is its latest common study
            latest[r[0]] = AssessedPair(*r)
    return list(latest.values())


def assessed_patients(session: Session, model: str) -> set[int]:
    """IDs of the patients with at least one assessment by ``model``."""
    return set(session.scalars(select(Assessment.patient_id).where(Assessment.model == model).distinct()))


@dataclass(frozen=True)
class TrackedFinding:
    """A finding the longitudinal step tracked to a lesion: the lesion's label, its centre (x, y, z) and sizes, mm."""

    analysis_id: int
    finding_id: int
    label: int
    centre_mm: tuple[float, float, float]
    diameter_mm: float
    long_axis_mm: float | None
    short_axis_mm: float | None


def tracked_findings(session: Session, analysis_ids: Iterable[int]) -> dict[int, list[TrackedFinding]]:
    """The findings linked to a lesion of each analysis, by analysis ID (every ID present), by label."""
    ids: Sequence[int] = list(dict.fromkeys(analysis_ids))
    found: dict[int, list[TrackedFinding]] = {i: [] for i in ids}
    for start in range(0, len(ids), 1000):
        rows = session.execute(
            select(Finding, Lesion.label)
            .join(Lesion, Lesion.id == Finding.lesion_id)
            .where(Finding.analysis_id.in_(ids[start : start + 1000]))
            .order_by(Finding.analysis_id, Lesion.label)
        ).all()
        for finding, label in rows:
            found[finding.analysis_id].append(
                TrackedFinding(
                    analysis_id=finding.analysis_id,
                    finding_id=finding.id,
                    label=label,
                    centre_mm=(finding.center_x_mm, finding.center_y_mm, finding.center_z_mm),
                    diameter_mm=finding.diameter_mm,
                    long_axis_mm=finding.long_axis_mm,
                    short_axis_mm=finding.short_axis_mm,
                )
            )
    return found
