"""Scanning: incremental, every object accounted for, duplicates counted once, commit before enqueue."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select

from db.models import Analysis, AnalysisStatus, ArchiveObject, Instance, ObjectStatus, Patient, Study
from nightscan.runtime import session_factory
from nightscan.settings import Settings
from nightscan.storage import open_storage
from scheduler.scan import scan
from synth.archive import generate_archive


@pytest.fixture
def setup(tmp_path: Path, sqlite_url: str):
    settings = Settings(data_dir=tmp_path, database_url=sqlite_url, series_quiet_s=0)
    archive = open_storage(settings.resolved_archive_url)
    truth = generate_archive(archive.put, n_patients=2, seed=4, shape_zyx=(20, 64, 64))
    return settings, archive, truth, session_factory(settings)


def _statuses(factory) -> dict[str, int]:
    with factory() as session:
        rows = session.execute(select(ArchiveObject.status, func.count()).group_by(ArchiveObject.status)).all()
    return {status.value: n for status, n in rows}


def test_scan_enqueues_each_new_study_once_after_commit(setup) -> None:
    settings, _, truth, factory = setup
    sent: list[int] = []

    def send(analysis_id: int) -> None:
        with factory() as session:  # the analysis is committed (claimed as queued) before its task is sent
            assert session.get(Analysis, analysis_id).status == AnalysisStatus.QUEUED
        sent.append(analysis_id)

    first = scan(settings.resolved_archive_url, settings, factory, send)
    assert first.enqueued == len(sent) == len(truth.studies)
    second = scan(settings.resolved_archive_url, settings, factory, send)
    assert second.unchanged == second.listed and second.enqueued == 0 and len(sent) == len(truth.studies)
    with factory() as session:
        assert session.scalar(select(func.count()).select_from(Study)) == len(truth.studies)
        keys = session.scalars(select(Patient.patient_key)).all()
        assert all(len(k) == 64 for k in keys) and not any(s.patient_id in keys for s in truth.studies)
        statuses = session.scalars(select(Analysis.status)).all()
        assert statuses == [AnalysisStatus.QUEUED] * len(truth.studies)


def test_duplicate_upload_is_counted_once_and_recorded(setup) -> None:
    settings, archive, truth, factory = setup
    first_key = next(iter(archive.list()))[0].key
    archive.put("other-prefix/copy.dcm", archive.get(first_key))
    report = scan(settings.resolved_archive_url, settings, factory, send=None)
    assert report.status == {"indexed": sum(s.n_instances for s in truth.studies), "duplicate": 1}
    with factory() as session:
        dup = session.scalars(select(ArchiveObject).where(ArchiveObject.status == ObjectStatus.DUPLICATE)).one()
        # prefixes are listed in parallel: either copy may be the one indexed, the other names it
        assert {dup.key, dup.reason.split("'")[1]} == {"other-prefix/copy.dcm", first_key}


def test_changed_and_deleted_objects(setup) -> None:
    settings, archive, _, factory = setup
    scan(settings.resolved_archive_url, settings, factory, send=None)
    objects = [o for page in archive.list() for o in page]
    changed, deleted = objects[0], objects[1]
    archive.put(changed.key, b"overwritten with something that is not DICOM")
    (Path(archive.root) / deleted.key).unlink()
    report = scan(settings.resolved_archive_url, settings, factory, send=None)
    assert report.status == {"rejected": 1} and report.deleted == 1
    assert report.unchanged == len(objects) - 2
    with factory() as session:
        rows = {o.key: o for o in session.scalars(select(ArchiveObject))}
        assert rows[changed.key].status == ObjectStatus.REJECTED and rows[changed.key].instance is None
        assert rows[deleted.key].status == ObjectStatus.DELETED
        assert session.scalar(select(func.count()).select_from(Instance)) == len(objects) - 2
    assert _statuses(factory) == {"indexed": len(objects) - 2, "rejected": 1, "deleted": 1}


def test_logs_carry_no_patient_id(setup, caplog: pytest.LogCaptureFixture) -> None:
    settings, archive, truth, factory = setup
    patient_id = truth.studies[0].patient_id
    archive.put(f"{patient_id}/notes.txt", b"not DICOM")  # keys often start with the PatientID
    with caplog.at_level("DEBUG"):
        report = scan(settings.resolved_archive_url, settings, factory, send=None)
    assert report.status["rejected"] == 1 and "notes.txt" in caplog.text
    assert patient_id not in caplog.text


def test_include_and_exclude_patterns(setup, monkeypatch: pytest.MonkeyPatch) -> None:
    settings, archive, truth, factory = setup
    archive.put("notes/readme.txt", b"not DICOM")
    archive.put("tmp/partial.dcm", b"half an upload")
    first_patient = truth.studies[0].patient_id
    limited = Settings(
        **{
            **settings.model_dump(),
            "archive_include": [f"{first_patient}/*", "notes/*", "tmp/*"],
            "archive_exclude": ["*.txt", "tmp/*"],
        }
    )
    report = scan(settings.resolved_archive_url, limited, factory, send=None)
    first_study = truth.studies[0]
    assert report.listed == first_study.n_instances and report.status == {"indexed": first_study.n_instances}
    assert report.excluded == sum(s.n_instances for s in truth.studies[1:]) + 2
    monkeypatch.setenv("NIGHTSCAN_ARCHIVE_EXCLUDE", '["*.txt"]')
    assert Settings().archive_exclude == ["*.txt"]


def test_a_narrower_scan_does_not_mark_the_rest_deleted(setup) -> None:
    settings, _, truth, factory = setup
    scan(settings.resolved_archive_url, settings, factory, send=None)
    first_patient = truth.studies[0].patient_id
    narrow = Settings(**{**settings.model_dump(), "archive_include": [f"{first_patient}/*"]})
    assert scan(settings.resolved_archive_url, narrow, factory, send=None).deleted == 0
    assert _statuses(factory) == {"indexed": sum(s.n_instances for s in truth.studies)}
