"""Reads and idempotent writes of the longitudinal step: one patient's studies for one model, and its results.

No rules here: :mod:`workers.followup` decides; this module loads rows and writes what it was given.

Writes replace the patient's rows for that model in the caller's transaction, and only the rows that differ:
running the step again on the same findings changes no row (IDs, labels and timestamps stay). Lesion labels
(1, 2, ... per patient and model) stay with the lesion: a lesion of the new result takes the label of the
stored lesion that shares most of its findings. Rows of other models are never touched.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict
from dataclasses import dataclass, field

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from db.models import (
    Analysis,
    AnalysisStatus,
    Assessment,
    Finding,
    Instance,
    Lesion,
    Patient,
    PatientStatus,
    Study,
    utcnow,
)

log = logging.getLogger(__name__)

PATIENT_LOCK_CLASS = 0x6E54
"""First key of the PostgreSQL advisory locks on a patient's longitudinal rows (the second is the patient ID)."""


@dataclass(frozen=True, slots=True)
class FindingRow:
    """One finding as stored: centre (x, y, z, mm), mean diameter and axes (mm), volume (mm3), type, solid
    component (mm), detector score and classifier probability (0 to 1), the lesion it is linked to now, and its
    spiculation score (0 to 1; None: not measured)."""

    id: int
    centre_mm: tuple[float, float, float]
    diameter_mm: float
    long_axis_mm: float | None
    short_axis_mm: float | None
    volume_mm3: float | None
    nodule_type: str | None
    solid_component_mm: float | None
    probability: float | None
    score: float
    lesion_id: int | None
    spiculation: float | None = None


@dataclass(frozen=True, slots=True)
class StudyRow:
    """One done analysis of the patient for the model: its study's date, the patient's age (years) then, the scan
    range along the table (z low and high, mm; None when the instances do not give it), its findings, and the
    centroid of the lungs (x, y, z, mm; None when the analysis did not record it, :mod:`workers.lungs`)."""

    analysis_id: int
    study_id: int
    study_date: dt.date | None
    age_years: float | None
    scan_range_z_mm: tuple[float, float] | None
    findings: tuple[FindingRow, ...]
    lung_centroid_mm: tuple[float, float, float] | None = None


@dataclass(frozen=True, slots=True)
class PatientRows:
    """What the step reads of one patient for one model: the patient's sex ('F', 'M', other or None) and the
    done analyses in study-date order (undated studies last)."""

    patient_id: int
    sex: str | None
    studies: tuple[StudyRow, ...]


@dataclass(frozen=True, slots=True)
class LesionWrite:
    """One lesion to store: its findings (IDs), status, latest type, first and last dates, latest mean diameter
    (mm), VDT from its first observation to its latest (days) and latest Brock probability (0 to 1), and the
    shortest and longest VDT (days) its two volumes allow (longest None: growth within the measurements' noise)."""

    finding_ids: tuple[int, ...]
    status: str
    nodule_type: str | None
    first_seen: dt.date | None
    last_seen: dt.date | None
    diameter_mm: float | None
    vdt_days: float | None
    brock_probability: float | None
    vdt_shortest_days: float | None = None
    vdt_longest_days: float | None = None


@dataclass(frozen=True, slots=True)
class AssessmentWrite:
    """One analysis's assessment to store (see :class:`db.models.Assessment` for the units)."""

    analysis_id: int
    study_date: dt.date | None
    lungrads: str
    reason: str
    brock_max: float | None
    vdt_min_days: float | None
    follow_up_due: dt.date | None
    assumptions: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StatusWrite:
    """The patient's latest state for the model (see :class:`db.models.PatientStatus` for the units)."""

    latest_analysis_id: int
    latest_study_date: dt.date | None
    lungrads: str
    brock_max: float | None
    vdt_min_days: float | None
    follow_up_due: dt.date | None
    n_lesions: int


@dataclass(frozen=True, slots=True)
class WriteCounts:
    """Rows inserted, updated and deleted by one write (all zero when nothing changed)."""

    inserted: int = 0
    updated: int = 0
    deleted: int = 0

    def __add__(self, other: WriteCounts) -> WriteCounts:
        return WriteCounts(self.inserted + other.inserted, self.updated + other.updated, self.deleted + other.deleted)


def lock_patient(session: Session, patient_id: int) -> None:
    """Hold the patient's longitudinal lock until the transaction ends (PostgreSQL; SQLite serialises writers)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(func.pg_advisory_xact_lock(PATIENT_LOCK_CLASS, patient_id)))


def load_patient(session: Session, patient_id: int, model: str) -> PatientRows:
    """The patient's done analyses for ``model`` with their findings, in study-date order (then analysis ID).

    LookupError naming the patient when it does not exist.
    """
    patient = session.get(Patient, patient_id)
    if patient is None:
        raise LookupError(f"patient {patient_id} does not exist")
    analyses = session.execute(
        select(
            Analysis.id,
            Analysis.study_id,
            Analysis.series_id,
            Analysis.volume,
            Study.study_date,
            Study.patient_age_years,
        )
        .join(Study, Study.id == Analysis.study_id)
        .where(Study.patient_id == patient_id, Analysis.model == model, Analysis.status == AnalysisStatus.DONE)
        .order_by(Study.study_date.is_(None), Study.study_date, Analysis.id)
    ).all()
    ids = [row.id for row in analyses]
    findings: dict[int, list[FindingRow]] = defaultdict(list)
    if ids:
        for f in session.scalars(
            select(Finding).where(Finding.analysis_id.in_(ids)).order_by(Finding.analysis_id, Finding.ordinal)
        ):
            findings[f.analysis_id].append(
                FindingRow(
                    id=f.id,
                    centre_mm=(f.center_x_mm, f.center_y_mm, f.center_z_mm),
                    diameter_mm=f.diameter_mm,
                    long_axis_mm=f.long_axis_mm,
                    short_axis_mm=f.short_axis_mm,
                    volume_mm3=f.volume_mm3,
                    nodule_type=f.nodule_type,
                    solid_component_mm=f.solid_component_mm,
                    probability=f.probability,
                    score=f.score,
                    lesion_id=f.lesion_id,
                    spiculation=f.spiculation,
                )
            )
    ranges = scan_ranges_z_mm(session, {row.series_id for row in analyses})
    studies = tuple(
        StudyRow(
            analysis_id=row.id,
            study_id=row.study_id,
            study_date=row.study_date,
            age_years=row.patient_age_years,
            scan_range_z_mm=ranges.get(row.series_id),
            findings=tuple(findings.get(row.id, ())),
            lung_centroid_mm=lung_centroid(row.volume),
        )
        for row in analyses
    )
    return PatientRows(patient_id=patient_id, sex=patient.sex, studies=studies)


def lung_centroid(volume: object) -> tuple[float, float, float] | None:
    """The lung centroid (x, y, z, mm) an analysis recorded in its ``volume`` JSON; None when it has none."""
    value = volume.get("lung_centroid_mm") if isinstance(volume, dict) else None
    if not isinstance(value, list | tuple) or len(value) != 3:
        return None
    return float(value[0]), float(value[1]), float(value[2])


def scan_ranges_z_mm(session: Session, series_ids: set[int]) -> dict[int, tuple[float, float]]:
    """Lowest and highest slice position along z (mm) of each series made of single-frame instances.

    A series holding a multi-frame instance, or an instance without a position, is left out.
    """
    if not series_ids:
        return {}
    positions: dict[int, list[float]] = defaultdict(list)
    unusable: set[int] = set()
    for series_id, position, n_frames in session.execute(
        select(Instance.series_id, Instance.image_position, Instance.n_frames).where(Instance.series_id.in_(series_ids))
    ):
        if n_frames != 1 or not position or len(position) != 3:
            unusable.add(series_id)
        else:
            positions[series_id].append(float(position[2]))
    return {
        series_id: (min(values), max(values))
        for series_id, values in positions.items()
        if series_id not in unusable and max(values) > min(values)
    }


def patients_to_follow(
    session: Session, model: str | None = None, patient_id: int | None = None
) -> list[tuple[int, str]]:
    """(patient ID, model) pairs with at least one done analysis, optionally for one model or one patient."""
    query = (
        select(Study.patient_id, Analysis.model)
        .join(Analysis, Analysis.study_id == Study.id)
        .where(Analysis.status == AnalysisStatus.DONE)
        .distinct()
        .order_by(Study.patient_id, Analysis.model)
    )
    if model is not None:
        query = query.where(Analysis.model == model)
    if patient_id is not None:
        query = query.where(Study.patient_id == patient_id)
    return [(row[0], row[1]) for row in session.execute(query)]


def patient_of_analysis(session: Session, analysis_id: int) -> tuple[int, str]:
    """(patient ID, model) of an analysis; LookupError naming it when it does not exist."""
    row = session.execute(
        select(Study.patient_id, Analysis.model)
        .join(Study, Study.id == Analysis.study_id)
        .where(Analysis.id == analysis_id)
    ).first()
    if row is None:
        raise LookupError(f"analysis {analysis_id} does not exist")
    return row[0], row[1]


def write_patient(
    session: Session,
    *,
    patient_id: int,
    model: str,
    analysis_ids: tuple[int, ...],
    lesions: list[LesionWrite],
    assessments: list[AssessmentWrite],
    status: StatusWrite | None,
) -> WriteCounts:
    """Replace the patient's lesions, assessments and status for ``model`` with these, changing only what differs.

    ``analysis_ids``: the analyses the result covers; their findings not in a lesion are unlinked. Lesions take
    the labels of the stored lesions they share most findings with (new ones: the next free labels).
    ``status`` None deletes the patient's status row for the model.
    """
    counts = _write_lesions(session, patient_id, model, analysis_ids, lesions)
    counts += _write_assessments(session, patient_id, model, assessments)
    counts += _write_status(session, patient_id, model, status)
    return counts


def _write_lesions(
    session: Session, patient_id: int, model: str, analysis_ids: tuple[int, ...], lesions: list[LesionWrite]
) -> WriteCounts:
    stored = list(
        session.scalars(
            select(Lesion).where(Lesion.patient_id == patient_id, Lesion.model == model).order_by(Lesion.label)
        )
    )
    members: dict[int, set[int]] = defaultdict(set)
    if stored:
        for finding_id, lesion_id in session.execute(
            select(Finding.id, Finding.lesion_id).where(Finding.lesion_id.in_([lesion.id for lesion in stored]))
        ):
            members[lesion_id].add(finding_id)
    # Each new lesion takes the stored lesion sharing most findings with it, largest overlaps first.
    overlaps = sorted(
        (
            (-len(members[old.id] & set(new.finding_ids)), old.label, index, old)
            for index, new in enumerate(lesions)
            for old in stored
            if members[old.id] & set(new.finding_ids)
        ),
        key=lambda item: item[:3],
    )
    kept: dict[int, Lesion] = {}
    taken: set[int] = set()
    for _, _, index, old in overlaps:
        if index not in kept and old.id not in taken:
            kept[index] = old
            taken.add(old.id)
    inserted = updated = 0
    next_label = max((lesion.label for lesion in stored), default=0) + 1
    rows: list[Lesion] = []
    for index, new in enumerate(lesions):
        values = {
            "status": new.status,
            "nodule_type": new.nodule_type,
            "first_seen": new.first_seen,
            "last_seen": new.last_seen,
            "diameter_mm": new.diameter_mm,
            "vdt_days": new.vdt_days,
            "vdt_shortest_days": new.vdt_shortest_days,
            "vdt_longest_days": new.vdt_longest_days,
            "brock_probability": new.brock_probability,
            "n_observations": len(new.finding_ids),
        }
        row = kept.get(index)
        if row is None:
            row = Lesion(patient_id=patient_id, model=model, label=next_label, updated_at=utcnow(), **values)
            next_label += 1
            session.add(row)
            inserted += 1
        elif _assign(row, values):
            row.updated_at = utcnow()
            updated += 1
        rows.append(row)
    session.flush()

    # Links: each finding of these analyses to its lesion, or to none; only rows that change are written.
    wanted = {finding_id: row.id for row, new in zip(rows, lesions, strict=True) for finding_id in new.finding_ids}
    current: dict[int, int | None] = {}
    if analysis_ids:
        query = select(Finding.id, Finding.lesion_id).where(Finding.analysis_id.in_(analysis_ids))
        current = {finding_id: lesion_id for finding_id, lesion_id in session.execute(query)}
    unknown = set(wanted) - set(current)
    if unknown:
        raise ValueError(f"findings {sorted(unknown)} are not findings of analyses {list(analysis_ids)}")
    changes: dict[int | None, list[int]] = defaultdict(list)
    for finding_id, lesion_id in current.items():
        if wanted.get(finding_id) != lesion_id:
            changes[wanted.get(finding_id)].append(finding_id)
    orphans = [lesion.id for lesion in stored if lesion.id not in taken]
    if orphans:  # findings of analyses no longer covered (failed since, say) may still point at them
        session.execute(update(Finding).where(Finding.lesion_id.in_(orphans)).values(lesion_id=None))
    for lesion_id, finding_ids in changes.items():
        session.execute(update(Finding).where(Finding.id.in_(finding_ids)).values(lesion_id=lesion_id))
    if orphans:
        session.execute(delete(Lesion).where(Lesion.id.in_(orphans)))
    links = sum(len(ids) for ids in changes.values())
    return WriteCounts(inserted=inserted, updated=updated + links, deleted=len(orphans))


def _write_assessments(
    session: Session, patient_id: int, model: str, assessments: list[AssessmentWrite]
) -> WriteCounts:
    stored = {
        row.analysis_id: row
        for row in session.scalars(
            select(Assessment).where(Assessment.patient_id == patient_id, Assessment.model == model)
        )
    }
    inserted = updated = 0
    for new in assessments:
        values = {
            "study_date": new.study_date,
            "lungrads": new.lungrads,
            "reason": new.reason,
            "brock_max": new.brock_max,
            "vdt_min_days": new.vdt_min_days,
            "follow_up_due": new.follow_up_due,
            "assumptions": new.assumptions,
        }
        row = stored.pop(new.analysis_id, None)
        if row is None:
            session.add(
                Assessment(
                    analysis_id=new.analysis_id, patient_id=patient_id, model=model, assessed_at=utcnow(), **values
                )
            )
            inserted += 1
        elif _assign(row, values):
            row.assessed_at = utcnow()
            updated += 1
    for row in stored.values():
        session.delete(row)
    session.flush()
    return WriteCounts(inserted=inserted, updated=updated, deleted=len(stored))


def _write_status(session: Session, patient_id: int, model: str, status: StatusWrite | None) -> WriteCounts:
    row = session.scalars(
        select(PatientStatus).where(PatientStatus.patient_id == patient_id, PatientStatus.model == model)
    ).one_or_none()
    if status is None:
        if row is None:
            return WriteCounts()
        session.delete(row)
        session.flush()
        return WriteCounts(deleted=1)
    values = {
        "latest_analysis_id": status.latest_analysis_id,
        "latest_study_date": status.latest_study_date,
        "lungrads": status.lungrads,
        "brock_max": status.brock_max,
        "vdt_min_days": status.vdt_min_days,
        "follow_up_due": status.follow_up_due,
        "n_lesions": status.n_lesions,
    }
    if row is None:
        session.add(PatientStatus(patient_id=patient_id, model=model, updated_at=utcnow(), **values))
        session.flush()
        return WriteCounts(inserted=1)
    if _assign(row, values):
        row.updated_at = utcnow()
        session.flush()
        return WriteCounts(updated=1)
    return WriteCounts()


def _assign(row: object, values: dict[str, object]) -> bool:
    """Set the attributes of ``row`` that differ from ``values``; True when any did."""
    changed = False
    for name, value in values.items():
        if getattr(row, name) != value:
            setattr(row, name, value)
            changed = True
    return changed
