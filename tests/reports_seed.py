"""Results written straight into a migrated database, as the workers and the longitudinal step would: for the
report tests (API, exports). Three patients, two studies each, one model; sizes in mm."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
from sqlalchemy.orm import Session

from db.engine import make_engine, make_sessionmaker, transaction
from db.models import Analysis, Lesion, RunStatus, ScanRun
from nightscan.pseudonym import patient_key
from tests.hand_built import (
    ARCHIVE,
    add_analysis,
    add_assessment,
    add_finding,
    add_instance,
    add_lesion,
    add_patient,
    add_series,
    add_study_row,
    set_status,
)

MODEL = "nodule-detector@0.3.0"
OTHER_MODEL = "nodule-detector@0.2.0"
SECRET = "report-tests-secret"
TODAY = date(2026, 11, 26)

# real PatientIDs: one with a slash and a quote, to go through URLs and SQL unharmed
PATIENT_IDS = ("PAT-0001", "PAT-0002", "O'Brien/77")


@dataclass
class Seeded:
    """What :func:`seed` wrote: keys by real PatientID, study UIDs and analysis ids by (PatientID, index)."""

    keys: dict[str, str] = field(default_factory=dict)
    studies: dict[tuple[str, int], str] = field(default_factory=dict)
    analyses: dict[tuple[str, int], int] = field(default_factory=dict)
    runs: list[int] = field(default_factory=list)


# per patient: (study dates, lesion diameters per study (mm), latest Lung-RADS, VDT days, follow-up due)
PLAN = {
    "PAT-0001": ((date(2025, 5, 1), date(2026, 5, 1)), ((6.0, 9.5),), "4A", 180.0, date(2026, 8, 1)),
    "PAT-0002": ((date(2025, 6, 1), date(2026, 6, 1)), ((4.0, 4.1), (3.0, 3.0)), "2", None, date(2027, 6, 1)),
    "O'Brien/77": ((date(2025, 7, 1), date(2026, 7, 1)), ((5.0, 5.2),), "2", None, date(2026, 10, 1)),
}
"""PAT-0001 is 4A (on the worklist), PAT-0002 category 2 and due next year (not), O'Brien/77 category 2 but
overdue on TODAY (on the worklist)."""


def seed(url: str, secret: str = SECRET, archive: Path | None = None) -> Seeded:
    """Write the three patients' index rows and results into the database at ``url``; with ``archive``, also
    each instance as a DICOM CT slice in that folder (a ``file://`` archive), the nodules drawn in."""
    source = archive.resolve().as_uri() if archive is not None else ARCHIVE
    engine = make_engine(url)
    factory = make_sessionmaker(engine)
    out = Seeded()
    with transaction(factory) as session:
        for p, pid in enumerate(PATIENT_IDS):
            dates, lesion_sizes, lungrads, vdt, due = PLAN[pid]
            patient = add_patient(session, pid, "F" if p % 2 else "M", key=patient_key(pid, secret))
            out.keys[pid] = patient.patient_key
            lesions = [
                add_lesion(
                    session,
                    patient,
                    MODEL,
                    n,
                    nodule_type="solid",
                    first_seen=dates[0],
                    last_seen=dates[-1],
                    diameter_mm=sizes[-1],
                    vdt_days=vdt if n == 1 else None,
                    brock_probability=0.02 * sizes[-1],
                    n_observations=len(sizes),
                )
                for n, sizes in enumerate(lesion_sizes, start=1)
            ]
            for s, study_date in enumerate(dates):
                study = add_study_row(
                    session, patient, study_date, uid=f"1.2.826.0.1.3680043.10.999.{p}.{s}", age_years=60.0 + s
                )
                uid = f"{study.study_instance_uid}.1"
                series = add_series(session, study, slices=0, thickness_mm=1.25, uid=uid, number=1, rows=64, columns=64)
                for k in range(3):
                    key = f"{pid}/{s}/{k}.dcm"
                    if archive is not None:
                        write_slice(
                            archive / key,
                            patient_id=pid,
                            study_uid=study.study_instance_uid,
                            series_uid=uid,
                            sop_uid=f"{uid}.{k}",
                            z_mm=float(k),
                            nodules=[(_centre(n), sizes[s]) for n, sizes in enumerate(lesion_sizes)],
                        )
                    etag = f"etag{p}{s}{k}"
                    add_instance(
                        session, series, f"{uid}.{k}", key, source=source, etag=etag, number=k + 1, z_mm=float(k)
                    )
                finished = datetime(study_date.year, study_date.month, study_date.day, 3, tzinfo=UTC)
                analysis = add_analysis(session, study, series, MODEL, study_score=0.9, finished_at=finished)
                if s == 0:  # a second model's analysis of the first study, with one unrelated finding
                    _add_finding(session, add_analysis(session, study, series, OTHER_MODEL), 0, 7.7, None, f"{uid}.0")
                out.studies[(pid, s)] = study.study_instance_uid
                out.analyses[(pid, s)] = analysis.id
                for n, (lesion, sizes) in enumerate(zip(lesions, lesion_sizes, strict=True)):
                    _add_finding(session, analysis, n, sizes[s], lesion, f"{uid}.1")
                add_assessment(
                    session,
                    analysis,
                    study,
                    lungrads if s == len(dates) - 1 else "2",
                    "seeded",
                    brock_max=max(0.02 * sz[s] for sz in lesion_sizes),
                    vdt_min_days=vdt if s else None,
                    follow_up_due=due,
                )
            set_status(
                session,
                patient,
                analysis,
                lungrads,
                latest_study_date=dates[-1],
                brock_max=max(0.02 * sz[-1] for sz in lesion_sizes),
                vdt_min_days=vdt,
                follow_up_due=due,
                n_lesions=len(lesion_sizes),
            )
        for night in (date(2026, 11, 24), date(2026, 11, 25)):
            run = ScanRun(
                source=source,
                night=night,
                started_at=datetime(night.year, night.month, night.day, 22, tzinfo=UTC),
                status=RunStatus.FINISHED,
                counts={"listed": 18, "planned": 6, "enqueued": 6, "remaining": 0},
            )
            session.add(run)
            session.flush()
            out.runs.append(run.id)
    engine.dispose()
    return out


def _centre(ordinal: int) -> tuple[float, float, float]:
    """Where finding ``ordinal`` of a study sits: (x, y, z) in mm, on the middle slice."""
    return (-50.0 + 30 * ordinal, 10.0, 1.0)


def _add_finding(
    session: Session, analysis: Analysis, ordinal: int, size_mm: float, lesion: Lesion | None, sop_uid: str
) -> None:
    """A solid nodule of ``size_mm`` (mm) at finding ``ordinal``'s place, measured as the workers would."""
    add_finding(
        session,
        analysis,
        _centre(ordinal),
        size_mm,
        lesion,
        sop_instance_uid=sop_uid,
        nodule_type="solid",
        probability=0.95,
        long_axis_mm=size_mm + 0.5,
        short_axis_mm=size_mm - 0.5,
        volume_mm3=round(3.14159 / 6 * size_mm**3, 1),
    )


SLICE_SHAPE = (128, 128)
"""Rows, columns of each written slice; 1 mm pixels, the first pixel's centre at (-64, -64) mm."""
ORIGIN_MM = (-64.0, -64.0)


def write_slice(
    path: Path,
    *,
    patient_id: str,
    study_uid: str,
    series_uid: str,
    sop_uid: str,
    z_mm: float,
    nodules: list[tuple[tuple[float, float, float], float]],
) -> None:
    """A 128 x 128 axial CT slice (1 mm pixels, HU): air, a body, two lungs, and a disk of each nodule's
    diameter (mm) around its centre (x, y in mm)."""
    rows, cols = np.mgrid[0 : SLICE_SHAPE[0], 0 : SLICE_SHAPE[1]]
    y_mm, x_mm = rows + ORIGIN_MM[1], cols + ORIGIN_MM[0]
    hu = np.full(SLICE_SHAPE, -1000, np.int16)
    hu[(x_mm / 60) ** 2 + (y_mm / 58) ** 2 <= 1] = 20
    for cx in (-30.0, 30.0):
        hu[((x_mm - cx) / 25) ** 2 + (y_mm / 40) ** 2 <= 1] = -850
    for (cx, cy, _), diameter in nodules:
        hu[(x_mm - cx) ** 2 + (y_mm - cy) ** 2 <= (diameter / 2) ** 2] = 30
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = f"{study_uid}.9"
    ds.PatientID = patient_id
    ds.PatientName = "Test^Patient"
    ds.PatientBirthDate = "19600101"
    ds.PatientSex = "M"
    ds.StudyDate = "20260501"
    ds.StudyTime = "120000"
    ds.StudyID = "1"
    ds.AccessionNumber = "A1"
    ds.ReferringPhysicianName = ""
    ds.Modality = "CT"
    ds.Manufacturer = "nightscan tests"
    ds.SeriesNumber = 1
    ds.InstanceNumber = int(sop_uid.rsplit(".", 1)[1]) + 1
    ds.ImagePositionPatient = [ORIGIN_MM[0], ORIGIN_MM[1], z_mm]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [1.0, 1.0]
    ds.SliceThickness = 1.0
    ds.Rows, ds.Columns = SLICE_SHAPE
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleIntercept = 0
    ds.RescaleSlope = 1
    ds.PixelData = hu.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
