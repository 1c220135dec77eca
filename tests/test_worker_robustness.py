"""The worker never loses or duplicates a study: redelivery, SIGKILL, bad input, crashes, outages, time limits.

Every test runs real parts: ``celery worker`` processes (through ``nightscan worker``) on Redis, PostgreSQL
and moto's S3 server; faults come from ``tests/faults.py`` (a test-only entry point) or from the real
parts themselves (a corrupt object in the bucket, a TCP gate in front of S3 or PostgreSQL). Studies are
tiny (16 x 48 x 48 voxels) and the classifier is off, to keep each study a few seconds.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import pytest
import redis
from sqlalchemy import create_engine, select
from sqlalchemy.engine import make_url

from db.models import Analysis, ArchiveObject, Finding, Instance
from db.results import analysis_lock
from nightscan.runtime import session_factory, task_sender
from nightscan.settings import Settings
from nightscan.storage import open_storage
from scheduler.planning import enqueue_planned
from scheduler.scan import scan
from synth.archive import generate_archive
from tests.conftest import ROOT, free_port, settings_env, with_settings
from workers.app import ANALYZE_STUDY, WorkerPlan, create_app, time_limits, visible_devices, worker_plan
from workers.context import WorkerContext, _contexts
from workers.pipeline import AnalysisBusyError, run_analysis

SHAPE_ZYX = (16, 48, 48)
OUTCOME = re.compile(r"succeeded in [\d.]+s: '(\w+)'")


@pytest.fixture
def base(s3_settings: Settings, redis_url: str, postgres_url: str) -> Settings:
    """Settings on the real services, for tiny studies: classifier off, decoding in threads, quick retries.

    The provisional detector 0.1.0 (2.5 mm grid) is pinned: it is fast on these 120 mm studies, and the
    vessels it takes for nodules give every analysis findings, so "exactly one set of findings" is never
    vacuous (the workers' default 0.3.0 rightly finds nothing in most of them).
    """
    return with_settings(
        s3_settings,
        database_url=postgres_url,
        broker_url=redis_url,
        detector="nodule-detector@0.1.0",
        classifier=None,
        decode_processes=1,
        fetch_threads=4,
        retry_backoff_s=[0.5] * 40,
    )


class Workers:
    """``nightscan worker`` processes, each in its own process group (the main process and its pool)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, settings: Settings, *faults: str) -> subprocess.Popen[bytes]:
        """Start a gpu-queue worker with the default pool, with ``faults`` (tests/faults.py options)."""
        log = (self.folder / f"worker-{len(self.procs)}.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.faults", *faults, "--", "worker", "--queues", "gpu"],
            env=settings_env(settings),
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs.append(proc)
        return proc

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGKILL the worker's whole process group: nothing is cleaned up, nothing acknowledged."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)

    def outcomes(self) -> Counter[str]:
        """How the analyze_study tasks ended, from every worker's log (done, skipped, failed, ...)."""
        return Counter(m for log in self.folder.glob("worker-*.log") for m in OUTCOME.findall(log.read_text()))

    def log_text(self) -> str:
        return "".join(log.read_text(errors="replace") for log in sorted(self.folder.glob("worker-*.log")))


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    """Worker processes, SIGKILLed after the test (they are disposable; their Redis db is flushed)."""
    started = Workers(tmp_path)
    yield started
    for proc in started.procs:
        started.kill(proc)
    for log in sorted(tmp_path.glob("worker-*.log")):
        sys.stderr.write(f"--- {log.name} (last 3000 bytes) ---\n{log.read_bytes()[-3000:].decode(errors='replace')}\n")


def plan(settings: Settings, n_patients: int, *, send: bool = True) -> list[int]:
    """Write ``n_patients`` tiny studies to the archive, scan them and (with ``send``) enqueue their analyses."""
    archive = open_storage(settings.archive_url, settings)
    generate_archive(archive.put, n_patients=n_patients, seed=31, shape_zyx=SHAPE_ZYX)
    factory = session_factory(settings)
    report = scan(settings.archive_url, settings, factory, task_sender(settings) if send else None)
    assert report.planned == n_patients
    with factory() as session:
        return list(session.scalars(select(Analysis.id).order_by(Analysis.id)))


@dataclass(frozen=True)
class Row:
    status: str
    attempts: int
    error: str | None
    findings: tuple[tuple[int, int], ...]  # (id, ordinal) of each finding


def rows(url: str) -> dict[int, Row]:
    """Every analysis and its findings, read straight from SQL."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            findings: dict[int, list[tuple[int, int]]] = {}
            for f in conn.execute(select(Finding.analysis_id, Finding.id, Finding.ordinal).order_by(Finding.id)):
                findings.setdefault(f.analysis_id, []).append((f.id, f.ordinal))
            return {
                a.id: Row(a.status.value, a.attempts, a.error, tuple(findings.get(a.id, [])))
                for a in conn.execute(select(Analysis.id, Analysis.status, Analysis.attempts, Analysis.error))
            }
    finally:
        engine.dispose()


def wait_until(url: str, condition: Callable[[dict[int, Row]], bool], timeout_s: float) -> dict[int, Row]:
    """Poll the analyses until ``condition`` holds; the rows as they are at the end (checked by the caller)."""
    deadline = time.monotonic() + timeout_s
    while True:
        current = rows(url)
        if condition(current) or time.monotonic() > deadline:
            return current
        time.sleep(0.3)


def finished(current: dict[int, Row]) -> bool:
    return all(r.status in ("done", "failed") for r in current.values())


def one_set(row: Row) -> bool:
    """The findings of one write: ordinals 0..n-1, each once."""
    return [ordinal for _, ordinal in row.findings] == list(range(len(row.findings)))


class Gate:
    """A TCP proxy to ``target`` that is closed (each connection accepted, then dropped) until opened."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.is_open = threading.Event()
        self.dropped = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            if not self.is_open.is_set():
                self.dropped += 1
                conn.close()
                continue
            upstream = socket.create_connection(self.target)
            for src, dst in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()

    def close(self) -> None:
        self.server.close()


@pytest.fixture
def gates() -> Iterator[Callable[[str, int], Gate]]:
    made: list[Gate] = []

    def make(host: str, port: int) -> Gate:
        made.append(Gate((host, port)))
        return made[-1]

    yield make
    for gate in made:
        gate.close()


# 1. A study delivered twice is processed once.


def test_a_study_delivered_twice_is_analysed_once(base: Settings, workers: Workers) -> None:
    base = with_settings(base, retry_backoff_s=[1.0] * 90)  # the busy copy waits for the first to finish
    [analysis_id] = plan(base, 1)
    send = task_sender(base)
    send(analysis_id)  # a second delivery, consumed at the same time by a second worker
    for _ in range(2):
        workers.start(base, "--delay", f"{analysis_id}=5")  # both workers start; one runs, the other waits on it
    after = wait_until(
        base.database_url, lambda r: r[analysis_id].status == "done" and workers.outcomes().total() == 2, 120
    )
    row = after[analysis_id]
    assert row.status == "done" and row.error is None, row
    assert row.attempts == 1, "the second delivery claimed the analysis"
    assert row.findings and one_set(row)
    assert workers.outcomes() == {"done": 1, "skipped": 1}
    assert f"analysis {analysis_id} is being run by another worker" in workers.log_text()  # at the same time

    send(analysis_id)  # a third, after it is done: skipped, nothing rewritten
    wait_until(base.database_url, lambda r: workers.outcomes().total() == 3, 60)
    assert workers.outcomes() == {"done": 1, "skipped": 2}
    assert rows(base.database_url)[analysis_id] == row


def test_a_delivery_while_another_worker_runs_the_study_is_busy(base: Settings) -> None:
    [analysis_id] = plan(base, 1, send=False)
    ctx = WorkerContext(base)
    with analysis_lock(ctx.engine, analysis_id) as locked:  # as a worker that runs it holds it
        assert locked
        with pytest.raises(AnalysisBusyError, match=f"analysis {analysis_id} is being run by another worker"):
            run_analysis(analysis_id, ctx)
        other = create_engine(base.database_url)  # another process's engine
        with analysis_lock(other, analysis_id) as second:
            assert not second
        other.dispose()
    assert rows(base.database_url)[analysis_id].attempts == 0
    assert run_analysis(analysis_id, ctx) == "done"
    assert run_analysis(analysis_id, ctx) == "skipped"
    row = rows(base.database_url)[analysis_id]
    assert (row.status, row.attempts) == ("done", 1) and one_set(row)


# 2. SIGKILL mid-study, then another worker.


def test_sigkill_mid_study_then_another_worker_finishes_it_once(base: Settings, workers: Workers) -> None:
    visibility = 30
    settings = with_settings(
        base, broker_visibility_timeout_s=visibility, task_time_limit_s=visibility - 5, task_soft_time_limit_s=20
    )
    [analysis_id] = plan(settings, 1)
    first = workers.start(settings, "--hang", str(analysis_id))
    running = wait_until(settings.database_url, lambda r: r[analysis_id].status == "running", 90)
    assert running[analysis_id].status == "running"
    killed_at = time.time()
    workers.kill(first)
    broker = redis.Redis.from_url(settings.broker_url)
    try:
        assert broker.hlen("unacked") == 1, "the message of the killed worker is not waiting, unacked, in Redis"
    finally:
        broker.close()

    # Redis hands the message out again once the visibility timeout has passed (kombu checks when a worker starts).
    time.sleep(max(0.0, killed_at + visibility + 1 - time.time()))
    workers.start(settings)
    after = wait_until(settings.database_url, lambda r: finished(r) and workers.outcomes().total() == 1, 120)
    row = after[analysis_id]
    assert row.status == "done" and row.error is None, row
    assert row.attempts == 2
    assert row.findings and one_set(row)
    assert workers.outcomes() == {"done": 1}


def test_sigterm_mid_study_returns_it_to_the_queue_at_once_for_another_worker(base: Settings, workers: Workers) -> None:
    settings = with_settings(base, worker_soft_shutdown_s=2)  # the visibility timeout stays 7200 s
    [analysis_id] = plan(settings, 1)
    first = workers.start(settings, "--hang", str(analysis_id))
    wait_until(settings.database_url, lambda r: r[analysis_id].status == "running", 90)
    stopped_at = time.monotonic()
    first.send_signal(signal.SIGTERM)  # to the main process only, as docker stop and systemd do
    first.wait(timeout=60)
    broker = redis.Redis.from_url(settings.broker_url)
    try:
        assert broker.hlen("unacked") == 0, "the message of the stopped study is still held, unacked"
        assert broker.llen(settings.queue_gpu) == 1, "the stopped study is not back in the gpu queue"
    finally:
        broker.close()
    assert "soft shutdown" in workers.log_text().lower()

    workers.start(settings)
    # the commit comes before the worker logs the outcome: wait for both
    after = wait_until(settings.database_url, lambda r: finished(r) and workers.outcomes().total() == 1, 120)
    row = after[analysis_id]
    assert row.status == "done" and row.attempts == 2, row
    assert row.findings and one_set(row)
    assert workers.outcomes() == {"done": 1}
    assert time.monotonic() - stopped_at < 150  # not after the visibility timeout


# 3. A corrupt slice fails its study with the reason; the next study completes.


def test_a_corrupt_slice_fails_its_study_with_the_reason_and_the_next_completes(
    base: Settings, workers: Workers
) -> None:
    corrupt, clean = plan(base, 2)
    factory = session_factory(base)
    with factory() as session:
        key = session.scalars(
            select(ArchiveObject.key)
            .join(Instance, Instance.object_id == ArchiveObject.id)
            .join(Analysis, Analysis.series_id == Instance.series_id)
            .where(Analysis.id == corrupt)
            .order_by(ArchiveObject.key)
        ).first()
    archive = open_storage(base.archive_url, base)
    data = archive.get(key)
    archive.put(key, data[: len(data) - 3000])  # cut inside the pixel data, as an interrupted upload would
    workers.start(base)
    after = wait_until(base.database_url, finished, 120)
    assert after[corrupt].status == "failed" and after[corrupt].findings == ()
    assert key in after[corrupt].error and "pixel data" in after[corrupt].error.lower(), after[corrupt].error
    assert after[corrupt].attempts == 1  # bad input is not retried
    assert after[clean].status == "done" and one_set(after[clean])


# 4. A study that kills its worker every time fails after max_attempts; the others complete.


def test_a_study_that_kills_its_worker_every_time_fails_after_max_attempts(base: Settings, workers: Workers) -> None:
    settings = with_settings(base, max_attempts=2)
    deadly, healthy = plan(settings, 2)
    proc = workers.start(settings, "--crash", str(deadly))
    after = wait_until(settings.database_url, finished, 180)
    assert after[deadly].status == "failed"
    assert after[deadly].error == (
        "gave up after 2 attempts; last error: attempt 2 ended without an outcome: its worker process died "
        "(a crash, out of memory or killed)"
    )
    assert after[deadly].attempts == 2 and after[deadly].findings == ()
    assert after[healthy].status == "done" and after[healthy].attempts == 1 and one_set(after[healthy])
    assert proc.poll() is None, "the worker itself must survive its pool processes"
    assert "Worker exited prematurely: signal 9 (SIGKILL)" in workers.log_text()


# 5. Transient errors: storage or database unavailable, retried with backoff.


def test_storage_unreachable_for_a_while_is_retried_until_it_is_back(
    base: Settings, workers: Workers, gates: Callable[[str, int], Gate]
) -> None:
    [analysis_id] = plan(base, 1)
    moto = urlparse(base.s3_endpoint_url)
    gate = gates(moto.hostname, moto.port)
    workers.start(with_settings(base, s3_endpoint_url=f"http://127.0.0.1:{gate.port}"))
    waiting = wait_until(base.database_url, lambda r: "storage unavailable" in (r[analysis_id].error or ""), 120)
    assert waiting[analysis_id].status in ("queued", "running"), waiting[analysis_id]
    assert waiting[analysis_id].error.startswith("attempt 1: storage unavailable: cannot read")
    gate.is_open.set()
    after = wait_until(base.database_url, finished, 120)
    row = after[analysis_id]
    assert row.status == "done" and row.error is None and one_set(row), row
    assert row.attempts == 1, "a transient error must not use up an attempt"
    assert "Retry in 0.5s" in workers.log_text()


def test_database_unreachable_for_a_while_is_retried_until_it_is_back(
    base: Settings, workers: Workers, gates: Callable[[str, int], Gate]
) -> None:
    [analysis_id] = plan(base, 1)
    url = make_url(base.database_url)
    gate = gates(url.host, url.port)
    workers.start(with_settings(base, database_url=url.set(port=gate.port).render_as_string(hide_password=False)))
    deadline = time.monotonic() + 90
    while gate.dropped < 3 and time.monotonic() < deadline:  # the worker tried, and tried again
        time.sleep(0.2)
    assert gate.dropped >= 3
    assert rows(base.database_url)[analysis_id].status == "queued"
    gate.is_open.set()
    after = wait_until(base.database_url, finished, 120)
    row = after[analysis_id]
    assert row.status == "done" and row.error is None and row.attempts == 1 and one_set(row), row
    assert "database unavailable" in workers.log_text()


def test_storage_down_past_the_last_retry_sends_the_study_back_to_planned(base: Settings) -> None:
    [analysis_id] = plan(base, 1, send=False)
    settings = with_settings(base, s3_endpoint_url=f"http://127.0.0.1:{free_port()}", retry_backoff_s=[0.1])
    task = create_app(settings).tasks[ANALYZE_STUDY]
    try:
        assert task.apply(args=[analysis_id], retries=1).get() == "planned"  # the last retry, run in this process
    finally:
        _contexts.pop(os.getpid(), None)  # this process's worker context, on the unreachable endpoint
    row = rows(base.database_url)[analysis_id]
    assert (row.status, row.attempts) == ("planned", 0), row
    assert row.error.startswith("storage unavailable: cannot read") and row.error.endswith("planned again)")
    # the next scan sends it again, and with storage back it completes
    factory = session_factory(base)
    sent: list[int] = []
    with factory() as session:
        enqueue_planned(session, sent.append)
    assert sent == [analysis_id]
    assert run_analysis(analysis_id, WorkerContext(base)) == "done"


def test_an_object_deleted_since_indexing_fails_the_study_with_the_reason(base: Settings) -> None:
    [analysis_id] = plan(base, 1, send=False)
    factory = session_factory(base)
    with factory() as session:
        key = session.scalars(select(ArchiveObject.key).order_by(ArchiveObject.key)).first()
    s3 = open_storage(base.archive_url, base)
    s3.client.delete_object(Bucket=s3.bucket, Key=s3.prefix + key)
    assert run_analysis(analysis_id, WorkerContext(base)) == "failed"
    row = rows(base.database_url)[analysis_id]
    assert row.status == "failed" and row.attempts == 1
    assert row.error.startswith("an input object is missing from the archive") and key in row.error


# 6. Time limits: a study past the soft limit fails with the reason; one that ignores it, at the hard limit.


def test_studies_past_their_time_limits_are_recorded_failed(base: Settings, workers: Workers) -> None:
    settings = with_settings(base, task_soft_time_limit_s=3, task_time_limit_s=7, broker_visibility_timeout_s=30)
    slow, stubborn = plan(settings, 2)
    workers.start(settings, "--hang", str(slow), "--stubborn", str(stubborn))
    after = wait_until(settings.database_url, lambda r: finished(r) and workers.outcomes().total() == 2, 120)
    assert after[slow].status == "failed"
    assert after[slow].error == "stopped at the soft time limit of 3 s (hard limit 7 s): the study takes too long"
    assert after[stubborn].status == "failed"
    assert after[stubborn].error == "killed at the hard time limit of 7 s: it did not stop at the soft limit of 3 s"
    assert (after[slow].attempts, after[stubborn].attempts) == (1, 1)
    # the killed study's message came back (not acknowledged on a timeout) and found it failed
    assert workers.outcomes() == {"failed": 1, "skipped": 1}


def test_time_limits_are_checked_against_each_other_and_the_visibility_timeout(tmp_path: Path) -> None:
    assert time_limits(Settings(data_dir=tmp_path)) == (1740, 1800)
    assert time_limits(Settings(data_dir=tmp_path, task_soft_time_limit_s=100, task_time_limit_s=200)) == (100, 200)
    with pytest.raises(ValueError, match="task_soft_time_limit_s=300 must be above 0 and below"):
        time_limits(Settings(data_dir=tmp_path, task_soft_time_limit_s=300, task_time_limit_s=200))
    with pytest.raises(ValueError, match=r"retry_backoff_s=\[10.0, 8000.0\]"):
        create_app(Settings(data_dir=tmp_path, retry_backoff_s=[10, 8000], broker_visibility_timeout_s=7200))
    app = create_app(Settings(data_dir=tmp_path, task_soft_time_limit_s=100, task_time_limit_s=200))
    assert (app.conf.task_soft_time_limit, app.conf.task_time_limit) == (100, 200)
    task = app.tasks[ANALYZE_STUDY]
    assert task.acks_late and task.reject_on_worker_lost and task.acks_on_timeout is False


# 7. `nightscan worker`: pool and concurrency by queue.


def test_worker_defaults_by_queue(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, prefetch_studies=0)
    assert worker_plan(["gpu"], settings, devices=[], cpus=16) == WorkerPlan("prefork", 1, ())
    assert worker_plan(["gpu"], settings, devices=["0", "1", "3"], cpus=16) == WorkerPlan("prefork", 3, ("0", "1", "3"))
    assert worker_plan(["cpu"], settings, devices=["0", "1"], cpus=16) == WorkerPlan("prefork", 16, ())
    assert worker_plan(["ingest", "cpu"], settings, devices=[], cpus=8) == WorkerPlan("prefork", 8, ())
    assert worker_plan(["gpu", "cpu"], settings, devices=["0"], cpus=8) == WorkerPlan("prefork", 1, ("0",))
    assert worker_plan(["gpu"], settings, devices=["0", "1"], cpus=8, concurrency=1, pool="solo") == WorkerPlan(
        "solo", 1, ("0", "1")
    )
    assert worker_plan(["cpu"], settings, devices=[], cpus=8, concurrency=3) == WorkerPlan("prefork", 3, ())
    with pytest.raises(ValueError, match="concurrency must be >= 1, got 0"):
        worker_plan(["cpu"], settings, devices=[], cpus=8, concurrency=0)
    default = Settings(data_dir=tmp_path)  # prefetch 1
    assert worker_plan(["gpu"], default, devices=[], cpus=8) == WorkerPlan("prefork", 2, ())
    assert worker_plan(["gpu"], default, devices=["0", "1"], cpus=8) == WorkerPlan("prefork", 4, ("0", "1"))
    prefetching = Settings(data_dir=tmp_path, prefetch_studies=2)
    assert worker_plan(["gpu"], prefetching, devices=[], cpus=8) == WorkerPlan("prefork", 3, ())
    assert worker_plan(["gpu"], prefetching, devices=["0", "1"], cpus=8) == WorkerPlan("prefork", 6, ("0", "1"))
    assert worker_plan(["cpu"], prefetching, devices=[], cpus=8) == WorkerPlan("prefork", 8, ())


def test_visible_devices_come_from_cuda_visible_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2, 3")
    assert visible_devices() == ["2", "3"]
    for none in ("", "-1"):
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", none)
        assert visible_devices() == []
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    gpus = Path("/proc/driver/nvidia/gpus")
    assert visible_devices() == ([str(i) for i in range(len(list(gpus.iterdir())))] if gpus.is_dir() else [])


def test_worker_help_shows_the_defaults() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "nightscan.cli", "worker", "--help"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    assert "gpu -> one per GPU" in text and "1 + NIGHTSCAN_PREFETCH_STUDIES" in text
    assert "ingest and cpu -> one per CPU core" in text
    assert "[default: prefork]" in text and "[default: gpu]" in text
