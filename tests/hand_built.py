"""Hand-built rows for tests of planning and of the read queries: patients, studies, analyses, findings,
lesions, assessments and patient status, with only the columns a test cares about to give.

Patient keys are sha256 hex digests of a name the test chooses (never a real PatientID).
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

LONG_AGO = datetime(2020, 1, 1, tzinfo=UTC)  # archive objects last changed then: past any quiet time


def key_of(name: str) -> str:
    """The 64-hex patient key the helpers give the patient called ``name``."""
    return hashlib.sha256(name.encode()).hexdigest()


def add_patient(session: Session, name: str, sex: str | None = "F") -> Patient:
    patient = Patient(patient_key=key_of(name), sex=sex)
    session.add(patient)
    session.flush()
    return patient


def add_study(session: Session, patient: Patient, study_date: date | None, *, slices: int = 40) -> tuple[Study, Series]:
    """A study with one axial CT series of ``slices`` slices, 2.5 mm thick."""
    n = session.query(Study).count() + 1
    study = Study(study_instance_uid=f"1.2.3.{n}", patient_id=patient.id, study_date=study_date)
    session.add(study)
    session.flush()
    return study, add_series(session, study, slices=slices)


def add_series(session: Session, study: Study, *, slices: int = 40, thickness_mm: float = 2.5) -> Series:
    """An axial CT series of the study: one multi-frame instance of ``slices`` frames, changed long ago."""
    n = session.query(Series).count() + 1
    series = Series(
        series_instance_uid=f"1.2.4.{n}",
        study_id=study.id,
        modality="CT",
        image_type=["ORIGINAL", "PRIMARY", "AXIAL"],
        image_orientation=[1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
        slice_thickness_mm=thickness_mm,
    )
    session.add(series)
    session.flush()
    obj = ArchiveObject(
        source="file:///archive",
        key=f"s{n}.dcm",
        etag=f"e{n}",
        size=1,
        last_modified=LONG_AGO,
        status=ObjectStatus.INDEXED,
    )
    session.add(obj)
    session.flush()
    session.add(
        Instance(
            sop_instance_uid=f"1.2.4.{n}.1",
            object_id=obj.id,
            series_id=series.id,
            sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
            n_frames=slices,
        )
    )
    session.flush()
    return series


def add_analysis(
    session: Session,
    study: Study,
    series: Series,
    model: str,
    status: AnalysisStatus = AnalysisStatus.DONE,
    pipeline: str = "lung-ct",
) -> Analysis:
    analysis = Analysis(
        study_id=study.id, series_id=series.id, pipeline=pipeline, model=model, status=status, attempts=1
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
    **values: object,
) -> Finding:
    """A finding at ``centre_mm`` (x, y, z); measured axes and the like in ``values``."""
    ordinal = session.query(Finding).filter(Finding.analysis_id == analysis.id).count()
    x, y, z = centre_mm
    finding = Finding(
        analysis_id=analysis.id,
        ordinal=ordinal,
        label="nodule",
        score=0.9,
        center_x_mm=x,
        center_y_mm=y,
        center_z_mm=z,
        diameter_mm=diameter_mm,
        extent_mm=[diameter_mm] * 3,
        lesion_id=None if lesion is None else lesion.id,
        **values,
    )
    session.add(finding)
    session.flush()
    return finding


def add_assessment(
    session: Session, analysis: Analysis, study: Study, lungrads: str, reason: str = "", **values: object
) -> Assessment:
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
