"""Results written straight into a migrated database, as the workers and the longitudinal step would: for the
report tests (API, exports). Three patients, two studies each, one model; sizes in mm."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime

from db.engine import make_engine, make_sessionmaker, transaction
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
    RunStatus,
    ScanRun,
    Series,
    Study,
)
from nightscan.pseudonym import patient_key

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


def seed(url: str, secret: str = SECRET) -> Seeded:
    """Write the three patients' index rows and results into the database at ``url``."""
    engine = make_engine(url)
    factory = make_sessionmaker(engine)
    out = Seeded()
    with transaction(factory) as session:
        for p, pid in enumerate(PATIENT_IDS):
            dates, lesion_sizes, lungrads, vdt, due = PLAN[pid]
            patient = Patient(patient_key=patient_key(pid, secret), sex="F" if p % 2 else "M")
            session.add(patient)
            session.flush()
            out.keys[pid] = patient.patient_key
            lesions = []
            for n, sizes in enumerate(lesion_sizes, start=1):
                lesion = Lesion(
                    patient_id=patient.id,
                    model=MODEL,
                    label=n,
                    status="present",
                    nodule_type="solid",
                    first_seen=dates[0],
                    last_seen=dates[-1],
                    diameter_mm=sizes[-1],
                    vdt_days=vdt if n == 1 else None,
                    brock_probability=0.02 * sizes[-1],
                    n_observations=len(sizes),
                )
                session.add(lesion)
                lesions.append(lesion)
            session.flush()
            analysis = None
            for s, study_date in enumerate(dates):
                study = Study(
                    study_instance_uid=f"1.2.826.0.1.3680043.10.999.{p}.{s}",
                    patient_id=patient.id,
                    study_date=study_date,
                    patient_age_years=60.0 + s,
                )
                session.add(study)
                session.flush()
                series = Series(
                    series_instance_uid=f"{study.study_instance_uid}.1",
                    study_id=study.id,
                    modality="CT",
                    series_number=1,
                    slice_thickness_mm=1.25,
                    rows=64,
                    columns=64,
                )
                session.add(series)
                session.flush()
                for k in range(3):
                    obj = ArchiveObject(
                        source="file:///archive",
                        key=f"{pid}/{s}/{k}.dcm",
                        etag=f"etag{p}{s}{k}",
                        size=1000,
                        status=ObjectStatus.INDEXED,
                    )
                    session.add(obj)
                    session.flush()
                    session.add(
                        Instance(
                            sop_instance_uid=f"{series.series_instance_uid}.{k}",
                            object_id=obj.id,
                            series_id=series.id,
                            sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
                            instance_number=k + 1,
                            image_position=[0.0, 0.0, float(k)],
                        )
                    )
                analysis = Analysis(
                    study_id=study.id,
                    series_id=series.id,
                    pipeline="lung-ct",
                    model=MODEL,
                    status=AnalysisStatus.DONE,
                    attempts=1,
                    study_score=0.9,
                    finished_at=datetime(study_date.year, study_date.month, study_date.day, 3, tzinfo=UTC),
                )
                session.add(analysis)
                # a second model's analysis of the first study, with one unrelated finding
                if s == 0:
                    other = Analysis(
                        study_id=study.id,
                        series_id=series.id,
                        pipeline="lung-ct",
                        model=OTHER_MODEL,
                        status=AnalysisStatus.DONE,
                        attempts=1,
                    )
                    session.add(other)
                    session.flush()
                    session.add(_finding(other.id, 0, 7.7, None, f"{series.series_instance_uid}.0"))
                session.flush()
                out.studies[(pid, s)] = study.study_instance_uid
                out.analyses[(pid, s)] = analysis.id
                for n, (lesion, sizes) in enumerate(zip(lesions, lesion_sizes, strict=True)):
                    session.add(_finding(analysis.id, n, sizes[s], lesion.id, f"{series.series_instance_uid}.1"))
                session.add(
                    Assessment(
                        analysis_id=analysis.id,
                        patient_id=patient.id,
                        model=MODEL,
                        study_date=study_date,
                        lungrads=lungrads if s == len(dates) - 1 else "2",
                        reason="seeded",
                        brock_max=max(0.02 * sz[s] for sz in lesion_sizes),
                        vdt_min_days=vdt if s else None,
                        follow_up_due=due,
                    )
                )
            assert analysis is not None
            session.add(
                PatientStatus(
                    patient_id=patient.id,
                    model=MODEL,
                    latest_analysis_id=analysis.id,
                    latest_study_date=dates[-1],
                    lungrads=lungrads,
                    brock_max=max(0.02 * sz[-1] for sz in lesion_sizes),
                    vdt_min_days=vdt,
                    follow_up_due=due,
                    n_lesions=len(lesion_sizes),
                )
            )
        for night in (date(2026, 11, 24), date(2026, 11, 25)):
            run = ScanRun(
                source="file:///archive",
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


def _finding(analysis_id: int, ordinal: int, size_mm: float, lesion_id: int | None, sop_uid: str) -> Finding:
    return Finding(
        analysis_id=analysis_id,
        ordinal=ordinal,
        label="nodule",
        score=0.9,
        center_x_mm=-50.0 + 30 * ordinal,
        center_y_mm=10.0,
        center_z_mm=1.0,
        diameter_mm=size_mm,
        extent_mm=[size_mm, size_mm, size_mm],
        sop_instance_uid=sop_uid,
        frame_number=None,
        nodule_type="solid",
        probability=0.95,
        long_axis_mm=size_mm + 0.5,
        short_axis_mm=size_mm - 0.5,
        volume_mm3=round(3.14159 / 6 * size_mm**3, 1),
        lesion_id=lesion_id,
    )
