"""Hand-built rows for the tests, the one place they are built: patients, studies, series, instances, analyses,
findings, lesions, assessments and patient status, with only the columns a test cares about to give.

Patient keys are sha256 hex digests of a name the test chooses (never a real PatientID) unless a test gives one.
Sizes and positions are in mm, volumes in mm³, volume doubling times (VDT) in days.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, date, datetime

from sqlalchemy.orm import Session

from db.models import (
    Analysis,
    AnalysisStatus,
    ArchiveObject,
    Assessment,
    Finding,
    Instance,
    Lesion,
    ObjectStatus,
    Patient,
    PatientStatus,
    Series,
    Study,
)

ARCHIVE = "file:///archive"  # where hand-built archive objects are, unless a test gives another source
LONG_AGO = datetime(2020, 1, 1, tzinfo=UTC)  # archive objects last changed then: past any quiet time


def key_of(name: str) -> str:
    """The 64-hex patient key the helpers give the patient called ``name``."""
    return hashlib.sha256(name.encode()).hexdigest()


def add_patient(session: Session, name: str, sex: str | None = "F", *, key: str | None = None) -> Patient:
    """The patient called ``name``, keyed ``key`` (by default :func:`key_of` the name)."""
    patient = Patient(patient_key=key or key_of(name), sex=sex)
    session.add(patient)
    session.flush()
    return patient


def add_study(session: Session, patient: Patient, study_date: date | None, *, slices: int = 40) -> tuple[Study, Series]:
    """A study with one axial CT series of ``slices`` slices, 2.5 mm thick."""
    study = add_study_row(session, patient, study_date)
    return study, add_series(session, study, slices=slices)


def add_study_row(
    session: Session,
    patient: Patient,
    study_date: date | None,
    *,
    uid: str | None = None,
    age_years: float | None = None,
) -> Study:
    """A study without series: UID ``uid`` (by default ``1.2.3.<n>``), the patient ``age_years`` old then."""
    study = Study(
        study_instance_uid=uid or f"1.2.3.{session.query(Study).count() + 1}",
        patient_id=patient.id,
        study_date=study_date,
        patient_age_years=age_years,
    )
    session.add(study)
    session.flush()
    return study


def add_series(
    session: Session,
    study: Study,
    *,
    slices: int = 40,
    thickness_mm: float = 2.5,
    uid: str | None = None,
    number: int | None = None,
    rows: int | None = None,
    columns: int | None = None,
) -> Series:
    """An axial CT series of the study, UID ``uid`` (by default ``1.2.4.<n>``), slices ``thickness_mm`` thick of
    ``rows`` x ``columns`` pixels: one multi-frame instance of ``slices`` frames, or with ``slices=0`` none
    (give them with :func:`add_instance`)."""
    n = session.query(Series).count() + 1
    series = Series(
        series_instance_uid=uid or f"1.2.4.{n}",
        study_id=study.id,
        modality="CT",
        series_number=number,
        image_type=["ORIGINAL", "PRIMARY", "AXIAL"],
        image_orientation=[1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
        slice_thickness_mm=thickness_mm,
        rows=rows,
        columns=columns,
    )
    session.add(series)
    session.flush()
    if slices:
        add_instance(session, series, f"{series.series_instance_uid}.1", f"s{n}.dcm", etag=f"e{n}", frames=slices)
    return series


def add_instance(
    session: Session,
    series: Series,
    uid: str,
    key: str,
    *,
    source: str = ARCHIVE,
    etag: str = "e",
    number: int | None = None,
    z_mm: float | None = None,
    frames: int = 1,
) -> Instance:
    """Instance ``uid`` of the series, in the indexed archive object ``key`` of ``source`` (changed long ago):
    ``frames`` CT frames, or one slice at table position ``z_mm`` (image position (0, 0, z) in mm)."""
    obj = ArchiveObject(source=source, key=key, etag=etag, size=1, last_modified=LONG_AGO, status=ObjectStatus.INDEXED)
    session.add(obj)
    session.flush()
    instance = Instance(
        sop_instance_uid=uid,
        object_id=obj.id,
        series_id=series.id,
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        instance_number=number,
        image_position=None if z_mm is None else [0.0, 0.0, z_mm],
        n_frames=frames,
    )
    session.add(instance)
    session.flush()
    return instance


def add_analysis(
    session: Session,
    study: Study,
    series: Series,
    model: str,
    status: AnalysisStatus = AnalysisStatus.DONE,
    pipeline: str = "lung-ct",
    *,
    study_score: float | None = None,
    finished_at: datetime | None = None,
) -> Analysis:
    """The ``model``'s analysis of the series, tried once; ``study_score`` from 0 to 1."""
    analysis = Analysis(
        study_id=study.id,
        series_id=series.id,
        pipeline=pipeline,
        model=model,
        status=status,
        attempts=1,
        study_score=study_score,
        finished_at=finished_at,
    )
    session.add(analysis)
    session.flush()
    return analysis


def add_lesion(session: Session, patient: Patient, model: str, label: int, **values: object) -> Lesion:
    """A lesion ``L<label>``; ``values`` set its other columns (status defaults to present)."""
    lesion = Lesion(patient_id=patient.id, model=model, label=label, **{"status": "present", **values})
    session.add(lesion)
    session.flush()
    return lesion


def add_finding(
    session: Session,
    analysis: Analysis,
    centre_mm: tuple[float, float, float],
    diameter_mm: float,
    lesion: Lesion | None = None,
    *,
    score: float = 0.9,
    probability: float | None = None,
    nodule_type: str | None = None,
    long_axis_mm: float | None = None,
    short_axis_mm: float | None = None,
    volume_mm3: float | None = None,
    solid_component_mm: float | None = None,
    spiculation: float | None = None,
    sop_instance_uid: str | None = None,
) -> Finding:
    """The analysis' next nodule, centred at ``centre_mm`` (x, y, z), ``diameter_mm`` across (mean) and as much
    along each axis; detector ``score``, classifier ``probability`` and ``spiculation`` from 0 to 1, axes and solid
    component in mm, volume in mm³, on slice ``sop_instance_uid``."""
    x, y, z = centre_mm
    finding = Finding(
        analysis_id=analysis.id,
        ordinal=session.query(Finding).filter(Finding.analysis_id == analysis.id).count(),
        label="nodule",
        score=score,
        center_x_mm=x,
        center_y_mm=y,
        center_z_mm=z,
        diameter_mm=diameter_mm,
        extent_mm=[diameter_mm] * 3,
        sop_instance_uid=sop_instance_uid,
        nodule_type=nodule_type,
        probability=probability,
        long_axis_mm=long_axis_mm,
        short_axis_mm=short_axis_mm,
        volume_mm3=volume_mm3,
        solid_component_mm=solid_component_mm,
        spiculation=spiculation,
        lesion_id=None if lesion is None else lesion.id,
    )
    session.add(finding)
    session.flush()
    return finding


def add_assessment(
    session: Session, analysis: Analysis, study: Study, lungrads: str, reason: str = "", **values: object
) -> Assessment:
    """The analysis' Lung-RADS assessment of the study; ``values`` set its other columns (follow-up due a date)."""
    assessment = Assessment(
        analysis_id=analysis.id,
        patient_id=study.patient_id,
        model=analysis.model,
        study_date=study.study_date,
        lungrads=lungrads,
        reason=reason or f"category {lungrads}",
        **values,
    )
    session.add(assessment)
    session.flush()
    return assessment


def set_status(
    session: Session, patient: Patient, analysis: Analysis, lungrads: str, **values: object
) -> PatientStatus:
    """The patient's status after the analysis; ``values`` set its other columns (VDT in days)."""
    status = PatientStatus(
        patient_id=patient.id,
        model=analysis.model,
        latest_analysis_id=analysis.id,
        lungrads=lungrads,
        **{"n_lesions": 0, **values},
    )
    session.add(status)
    session.flush()
    return status
