"""On a synthetic longitudinal archive, the API's worklist holds exactly the patients the ground truth says need
attention.

The archive is written by ``synth``, indexed and planned by the real scanner, and each analysis gets the true
nodules as its findings (a perfect detector: the detector's own accuracy is measured by ``models evaluate``
and ``follow-up evaluate``); the longitudinal step then runs for every patient, and the worklist is read
through the HTTP API with a ``worklist:read`` token, page by page. The truth: the latest study's true
Lung-RADS category is 4A or more, or a true lesion present in it and seen before doubles in under 400
days, or its follow-up (the true category's interval, ``screening.longitudinal.FOLLOW_UP_DAYS``) fell
due before the day asked about. Spiculation is not measured, so a true 4X may be reported 4B: both are
on the worklist, for the same reason.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import select

from db.engine import make_engine, make_sessionmaker, transaction
from db.models import Analysis, AnalysisStatus, Finding, Patient, Study
from nightscan.pseudonym import patient_key
from nightscan.settings import Settings
from nightscan.storage import open_storage
from reports.api import create_app
from reports.tokens import Scope, create_token
from scheduler.scan import scan
from screening.longitudinal import FOLLOW_UP_DAYS
from screening.types import LungRads
from synth.archive import ArchiveOptions, GroundTruth, StudyTruth, generate_archive
from workers.followup import update_patient

SECRET = "worklist-truth-secret"
VDT_DAYS = 400.0


def _date(study: StudyTruth) -> dt.date:
    return dt.datetime.strptime(study.study_date, "%Y%m%d").date()


def truth_worklist(truth: GroundTruth, as_of: dt.date) -> dict[str, list[str]]:
    """Patient key -> why the ground truth puts the patient on the worklist on ``as_of``."""
    latest: dict[str, StudyTruth] = {}
    for study in truth.studies:
        if study.patient_id not in latest or _date(study) > _date(latest[study.patient_id]):
            latest[study.patient_id] = study
    need = {}
    for patient, study in latest.items():
        reasons = []
        category = LungRads(study.lung_rads)
        if category >= LungRads.CAT4A:
            reasons.append(f"Lung-RADS {category.value}")
        present = {n.nodule_id for n in study.nodules}
        for track in truth.tracks:
            mine = track.patient_id == patient and track.track_id in present and len(track.study_uids) >= 2
            if mine and track.vdt_days is not None and track.vdt_days < VDT_DAYS:
                reasons.append(f"VDT {track.vdt_days:.0f} days")
        if _date(study) + dt.timedelta(days=FOLLOW_UP_DAYS[category]) < as_of:
            reasons.append("overdue")
        if reasons:
            need[patient_key(patient, SECRET)] = reasons
    return need


def test_worklist_is_exactly_the_patients_the_ground_truth_names(postgres_url: str, tmp_path: Path) -> None:
    archive = open_storage((tmp_path / "archive").as_uri())
    (tmp_path / "archive").mkdir()
    options = ArchiveOptions(shape_zyx=(64, 96, 96), spacing_zyx_mm=(2.5, 3.5, 3.5), studies_per_patient=(2, 3))
    truth = generate_archive(archive.put, n_patients=16, seed=7, options=options)
    settings = Settings(database_url=postgres_url, data_dir=tmp_path, series_quiet_s=0, pseudonym_key=SECRET)
    engine = make_engine(postgres_url)
    factory = make_sessionmaker(engine)
    scan(archive.url, settings, factory, None)
    by_uid = {s.study_uid: s for s in truth.studies}
    with transaction(factory) as session:
        analyses = session.execute(
            select(Analysis, Study.study_instance_uid).join(Study, Study.id == Analysis.study_id)
        ).all()
        assert len(analyses) == len(truth.studies)
        for analysis, uid in analyses:
            for n, nodule in enumerate(by_uid[uid].nodules):  # a perfect detector
                x, y, z = nodule.center_xyz_mm
                session.add(
                    Finding(
                        analysis_id=analysis.id,
                        ordinal=n,
                        label="nodule",
                        score=1.0,
                        probability=1.0,
                        center_x_mm=x,
                        center_y_mm=y,
                        center_z_mm=z,
                        diameter_mm=nodule.diameter_mm,
                        extent_mm=[nodule.diameter_mm] * 3,
                        nodule_type=nodule.kind,
                        long_axis_mm=nodule.long_axis_mm or None,
                        short_axis_mm=nodule.short_axis_mm or None,
                        volume_mm3=nodule.volume_mm3 or None,
                        solid_component_mm=nodule.solid_component_mm,
                    )
                )
            analysis.status = AnalysisStatus.DONE
        patients = list(session.scalars(select(Patient.id)))
    for patient in patients:
        update_patient(factory, patient, settings.detector)
    with transaction(factory) as session:
        token, _ = create_token(session, "worklist-reader", [Scope.WORKLIST_READ])
    dates = sorted(
        {max(_date(s) for s in truth.studies if s.patient_id == p) for p in {s.patient_id for s in truth.studies}}
    )
    with TestClient(create_app(settings, factory)) as client:
        for as_of in (dates[0], dates[len(dates) // 2], dates[-1] + dt.timedelta(days=1)):
            expected = truth_worklist(truth, as_of)
            got: dict[str, list[str]] = {}
            offset: int | None = 0
            while offset is not None:
                page = client.get(
                    "/worklist",
                    params={"as_of": as_of.isoformat(), "limit": 5, "offset": offset},
                    headers={"Authorization": f"Bearer {token}"},
                )
                assert page.status_code == 200, page.text
                got.update({item["patient_key"]: item["reasons"] for item in page.json()["items"]})
                offset = page.json()["next_offset"]
            assert set(got) == set(expected), (as_of, expected, got)
            for key, reasons in expected.items():  # the same kind of reason, category by category
                high = any(r.startswith("Lung-RADS") for r in reasons)
                assert high == any(r.startswith("Lung-RADS") for r in got[key]), (key, reasons, got[key])
    assert 0 < len(truth_worklist(truth, dates[0])) < len(patients)  # the truth is not everyone or no one
    engine.dispose()
