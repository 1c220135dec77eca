"""The longitudinal step on real parts: a study analysed by a gpu worker sends ``update_patient`` to the cpu queue,
where another worker process writes the patient's assessments (Redis, PostgreSQL, folder archive)."""

from __future__ import annotations

import time
from pathlib import Path

from sqlalchemy import func, select

from db.models import Analysis, Assessment, PatientStatus
from nightscan.runtime import session_factory, task_sender
from nightscan.settings import Settings
from nightscan.storage import open_storage
from scheduler.scan import scan
from synth.archive import generate_archive
from tests.conftest import wait_for_analyses


def test_a_done_analysis_leads_to_assessments_written_by_a_cpu_worker(
    redis_url: str, postgres_url: str, tmp_path: Path, start_worker
) -> None:
    settings = Settings(
        data_dir=tmp_path,
        archive_url=(tmp_path / "archive").resolve().as_uri(),
        database_url=postgres_url,
        broker_url=redis_url,
        series_quiet_s=0,
    )
    archive = open_storage(settings.archive_url, settings)
    truth = generate_archive(archive.put, n_patients=1, seed=5, studies_per_patient=2, shape_zyx=(48, 96, 96))
    factory = session_factory(settings)
    report = scan(settings.archive_url, settings, factory, task_sender(settings))
    assert report.enqueued == len(truth.studies) == 2

    start_worker(settings, queues="gpu")
    start_worker(settings, queues="cpu")
    assert wait_for_analyses(postgres_url, 2, timeout_s=240) == {"done": 2}
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with factory() as session:
            assessed = session.scalar(select(func.count()).select_from(Assessment))
            status = session.scalars(select(PatientStatus)).one_or_none()
        if assessed == 2 and status is not None and status.latest_study_date is not None:
            break
        time.sleep(0.5)
    with factory() as session:
        rows = session.execute(select(Assessment, Analysis).join(Analysis, Analysis.id == Assessment.analysis_id)).all()
        status = session.scalars(select(PatientStatus)).one()
    assert len(rows) == 2
    assert {assessment.model for assessment, _ in rows} == {settings.detector}
    assert all(assessment.lungrads in ("1", "2", "3", "4A", "4B") for assessment, _ in rows)
    assert status.latest_analysis_id == max(rows, key=lambda row: row[0].study_date)[1].id
    logs = {path.name: path.read_text(errors="replace") for path in tmp_path.glob("worker-*.log")}
    received = "Task nightscan.update_patient["
    assert received in logs["worker-1.log"]  # the cpu worker ran the step ...
    assert received not in logs["worker-0.log"]  # ... not the gpu worker
