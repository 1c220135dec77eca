"""Planning: recorded series decisions, quiet time, priority, backpressure, the overnight window, the reconciler."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from db.engine import transaction
from db.models import Analysis, AnalysisStatus, RunStatus, ScanRun, Series, SeriesSelection, utcnow
from nightscan.runtime import session_factory
from nightscan.settings import Settings
from nightscan.storage import open_storage
from scheduler.planning import plan_analyses
from scheduler.scan import scan
from synth.archive import ArchiveOptions, generate_archive
from synth.messy import Mess

SMALL = ArchiveOptions(shape_zyx=(20, 48, 48), spacing_zyx_mm=(2.5, 7.0, 7.0))


@pytest.fixture
def archive(tmp_path: Path, sqlite_url: str):
    settings = Settings(data_dir=tmp_path, database_url=sqlite_url, series_quiet_s=0)
    storage = open_storage(settings.resolved_archive_url)
    truth = generate_archive(storage.put, n_patients=3, seed=3, options=SMALL)
    return settings, storage, truth, session_factory(settings)


def _statuses(factory) -> list[AnalysisStatus]:
    with factory() as session:
        return list(session.scalars(select(Analysis.status).order_by(Analysis.id)))


def test_every_series_decision_is_recorded_with_its_reason(tmp_path: Path, sqlite_url: str) -> None:
    settings = Settings(data_dir=tmp_path, database_url=sqlite_url, series_quiet_s=0)
    storage = open_storage(settings.resolved_archive_url)
    generate_archive(
        storage.put,
        n_patients=1,
        seed=1,
        options=ArchiveOptions(shape_zyx=(20, 48, 48), spacing_zyx_mm=(2.5, 7.0, 7.0), mess=Mess(localizer=True)),
    )
    thick = ArchiveOptions(shape_zyx=(20, 48, 48), spacing_zyx_mm=(5.0, 7.0, 7.0))
    generate_archive(storage.put, n_patients=1, seed=2, options=thick)
    factory = session_factory(settings)
    report = scan(settings.resolved_archive_url, settings, factory, send=None)
    assert report.planned == 1
    with factory() as session:
        decisions = [(s.selected, s.reason) for s in session.scalars(select(SeriesSelection))]
        assert len(decisions) == len(session.scalars(select(Series)).all()) == 3  # CT, localizer, thick CT
    assert sorted(decisions) == [
        (False, "image type LOCALIZER"),
        (False, "slices 5 mm thick, more than 3 mm"),
        (True, "20 axial CT slices of 2.5 mm"),
    ]


def test_a_series_still_changing_waits_for_the_quiet_time(archive) -> None:
    settings, _, truth, factory = archive
    quiet = Settings(**{**settings.model_dump(), "series_quiet_s": 3600})
    report = scan(settings.resolved_archive_url, quiet, factory, send=None)
    assert (report.planned, report.waiting) == (0, len(truth.studies))
    with transaction(factory) as session:
        later = plan_analyses(session, "lung-ct", settings.detector, quiet_s=3600, now=utcnow() + timedelta(hours=2))
    assert len(later.planned) == len(truth.studies)


def test_backpressure_keeps_at_most_k_outstanding_and_the_next_run_resumes(archive) -> None:
    settings, _, truth, factory = archive
    limited = Settings(**{**settings.model_dump(), "max_outstanding": 2})
    sent: list[int] = []
    first = scan(settings.resolved_archive_url, limited, factory, sent.append)
    assert (first.enqueued, first.remaining, first.stopped) == (2, len(truth.studies) - 2, "backpressure")
    with transaction(factory) as session:  # the worker finishes them
        session.execute(update(Analysis).where(Analysis.id.in_(sent)).values(status=AnalysisStatus.DONE))
    second = scan(settings.resolved_archive_url, limited, factory, sent.append)
    assert second.enqueued == len(truth.studies) - 2 and second.remaining == 0
    assert sorted(sent) == sorted(set(sent)) and len(sent) == len(truth.studies)  # each sent exactly once


def test_the_window_closes_and_the_next_run_resumes(archive) -> None:
    settings, _, truth, factory = archive
    sent: list[int] = []
    closed = scan(settings.resolved_archive_url, settings, factory, sent.append, until=utcnow() - timedelta(minutes=1))
    assert (closed.enqueued, closed.remaining, closed.stopped) == (0, len(truth.studies), "window_closed")
    resumed = scan(settings.resolved_archive_url, settings, factory, sent.append)
    assert resumed.enqueued == len(truth.studies) and len(set(sent)) == len(sent) == len(truth.studies)
    with factory() as session:
        runs = session.scalars(select(ScanRun).order_by(ScanRun.id)).all()
    assert [r.status for r in runs] == [RunStatus.WINDOW_CLOSED, RunStatus.FINISHED]
    assert runs[1].counts["enqueued"] == len(truth.studies)


def test_the_reconciler_sends_again_what_outlived_its_lease(archive) -> None:
    settings, _, truth, factory = archive
    sent: list[int] = []
    scan(settings.resolved_archive_url, settings, factory, sent.append)
    with transaction(factory) as session:
        session.execute(update(Analysis).values(queued_at=utcnow() - timedelta(seconds=settings.analysis_lease_s + 60)))
    again = scan(settings.resolved_archive_url, settings, factory, sent.append)
    assert again.reconciled == again.enqueued == len(truth.studies)
    assert _statuses(factory) == [AnalysisStatus.QUEUED] * len(truth.studies)


def test_patients_with_earlier_findings_come_first_then_the_newest(tmp_path: Path, sqlite_url: str) -> None:
    from db.models import Finding, Study

    settings = Settings(data_dir=tmp_path, database_url=sqlite_url, series_quiet_s=0)
    storage = open_storage(settings.resolved_archive_url)
    options = ArchiveOptions(shape_zyx=(20, 48, 48), spacing_zyx_mm=(2.5, 7.0, 7.0), studies_per_patient=(2, 2))
    truth = generate_archive(storage.put, n_patients=2, seed=8, options=options)
    factory = session_factory(settings)
    baseline = {s.study_uid for s in truth.studies if s.study_index == 0}
    followups = [s for s in truth.studies if s.study_index == 1]
    scan(settings.resolved_archive_url, settings, factory, send=None)
    with transaction(factory) as session:  # the baselines were analysed before; one of them had a finding
        for analysis in session.scalars(select(Analysis).join(Study)):
            if analysis.study.study_instance_uid in baseline:
                analysis.status = AnalysisStatus.DONE
        suspicious = next(s for s in truth.studies if s.study_index == 0 and s.patient_id == "NS0002")
        analysis = session.scalars(
            select(Analysis).join(Study).where(Study.study_instance_uid == suspicious.study_uid)
        ).one()
        session.add(
            Finding(
                analysis_id=analysis.id,
                ordinal=0,
                label="nodule",
                score=0.9,
                center_x_mm=0.0,
                center_y_mm=0.0,
                center_z_mm=0.0,
                diameter_mm=9.0,
                extent_mm=[9.0, 9.0, 9.0],
            )
        )
    order: list[str] = []

    def send(analysis_id: int) -> None:
        with factory() as session:
            order.append(session.get(Analysis, analysis_id).study.patient.patient_key)

    scan(settings.resolved_archive_url, settings, factory, send)
    with factory() as session:
        keys = {s.study_instance_uid: s.patient.patient_key for s in session.scalars(select(Study))}
    assert len(order) == len(followups) == 2
    # NS0001's follow-up is the newer study (seed 8): NS0002 goes first only because of its earlier finding.
    assert max(followups, key=lambda s: s.study_date).patient_id == "NS0001"
    assert order[0] == keys[next(s.study_uid for s in followups if s.patient_id == "NS0002")]


def _twice_at_once(work: Callable[[], None]) -> list[BaseException]:
    """Run ``work`` in two threads released together; the exceptions they raised."""
    start, errors = threading.Barrier(2), []

    def run() -> None:
        start.wait()
        try:
            work()
        except BaseException as exc:  # the caller asserts there are none
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


def test_two_schedulers_at_once_send_each_analysis_once(tmp_path: Path, postgres_url: str) -> None:
    from scheduler.planning import enqueue_planned

    settings = Settings(data_dir=tmp_path, database_url=postgres_url, series_quiet_s=0)
    storage = open_storage(settings.resolved_archive_url)
    truth = generate_archive(storage.put, n_patients=6, seed=4, options=SMALL)
    factory = session_factory(settings)
    scan(settings.resolved_archive_url, settings, factory, send=None)
    sent: list[int] = []  # list.append is atomic: a thread-safe recorder

    def scheduler() -> None:
        with factory() as session:
            enqueue_planned(session, sent.append)

    assert _twice_at_once(scheduler) == []
    assert sorted(sent) == sorted(set(sent)) and len(sent) == len(truth.studies)


def test_the_night_is_claimed_once(archive) -> None:
    from datetime import datetime, time

    from scheduler.nightly import night_of, parse_clock, run_night

    settings, _, truth, factory = archive
    sent: list[int] = []
    # tonight, 22:00: the window (until 06:00) must still be open by the real clock, which sending checks
    evening = datetime.combine(datetime.now().date(), time(22, 0)).astimezone()
    first = run_night(settings, factory, sent.append, now=evening)
    assert first is not None and first.enqueued == len(truth.studies)
    assert run_night(settings, factory, sent.append, now=evening + timedelta(hours=3)) is None  # same night
    assert len(sent) == len(truth.studies)
    assert night_of(evening + timedelta(hours=4), parse_clock("06:00", "night_end")) == evening.date()
    with factory() as session:
        run = session.scalars(select(ScanRun).where(ScanRun.night.is_not(None))).one()
    assert run.status == RunStatus.FINISHED and run.night == evening.date()


def test_beat_starts_the_nightly_run_on_the_cpu_queue(tmp_path: Path) -> None:
    from workers.app import NIGHTLY_SCAN, create_app

    app = create_app(Settings(data_dir=tmp_path, night_start="21:30"))
    entry = app.conf.beat_schedule["nightly-scan"]
    assert entry["task"] == NIGHTLY_SCAN and entry["options"]["queue"] == "cpu"
    assert entry["schedule"].hour == {21} and entry["schedule"].minute == {30}
    assert NIGHTLY_SCAN in app.tasks


def test_two_full_scans_at_once_index_and_send_everything_once(tmp_path: Path, postgres_url: str) -> None:
    from db.models import ArchiveObject

    settings = Settings(data_dir=tmp_path, database_url=postgres_url, series_quiet_s=0, list_parallel=1)
    storage = open_storage(settings.resolved_archive_url)
    truth = generate_archive(storage.put, n_patients=4, seed=9, options=SMALL)
    factory = session_factory(settings)
    sent: list[int] = []

    assert _twice_at_once(lambda: scan(settings.resolved_archive_url, settings, factory, sent.append)) == []
    assert sorted(sent) == sorted(set(sent)) and len(sent) == len(truth.studies)
    with factory() as session:
        assert len(session.scalars(select(ArchiveObject)).all()) == sum(s.n_instances for s in truth.studies)
        assert len(session.scalars(select(Analysis)).all()) == len(truth.studies)


def test_status_and_selections_commands_show_runs_and_reasons(tmp_path: Path, sqlite_url: str) -> None:
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT

    settings = Settings(data_dir=tmp_path, database_url=sqlite_url, series_quiet_s=0)
    storage = open_storage(settings.resolved_archive_url)
    options = ArchiveOptions(shape_zyx=(20, 48, 48), spacing_zyx_mm=(2.5, 7.0, 7.0), mess=Mess(localizer=True))
    generate_archive(storage.put, n_patients=1, seed=1, options=options)
    scan(settings.resolved_archive_url, settings, session_factory(settings), send=None)
    env = {**os.environ, "NIGHTSCAN_DATABASE_URL": sqlite_url, "COLUMNS": "200"}
    outputs = {
        command: subprocess.run(
            [sys.executable, "-m", "nightscan.cli", command], env=env, cwd=ROOT, capture_output=True, text=True
        )
        for command in ("status", "selections")
    }
    assert all(result.returncode == 0 for result in outputs.values()), outputs
    assert "finished" in outputs["status"].stdout and "planned" in outputs["status"].stdout
    assert "image type LOCALIZER" in outputs["selections"].stdout
