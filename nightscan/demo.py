"""``make demo``: the whole thin path on one machine with nothing installed but Python.

A synthetic archive in a ``file://`` folder, a SQLite database, the embedded filesystem broker and
one real Celery worker subprocess: the same code that runs against S3, PostgreSQL and Redis.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from db.migrate import upgrade
from db.models import Analysis, AnalysisStatus, Finding, Study
from nightscan.progress import progress_bar
from nightscan.runtime import session_factory, task_sender
from nightscan.settings import Settings
from nightscan.storage import open_storage
from nightscan.tables import results_table
from scheduler.scan import scan
from synth.archive import GroundTruth, generate_archive

log = logging.getLogger(__name__)

DEMO_SEED = 7


def run_demo(settings: Settings, *, patients: int, timeout_s: float) -> int:
    """Run the demo in ``<data_dir>/demo``; return a process exit code (0 when every study is done)."""
    data_dir = (settings.data_dir / "demo").resolve()
    shutil.rmtree(data_dir, ignore_errors=True)
    demo = Settings(data_dir=data_dir, archive_url="", database_url="", broker_url="")
    console = Console(width=max(Console().width, 120))
    archive = open_storage(demo.resolved_archive_url, demo)
    truth = generate_archive(archive.put, n_patients=patients, seed=DEMO_SEED)
    console.print(f"synthetic archive: {len(truth.studies)} studies in {demo.resolved_archive_url}")
    upgrade(demo.resolved_database_url)
    factory = session_factory(demo)

    worker_log = data_dir / "worker.log"
    worker = _start_worker(data_dir, worker_log)
    try:
        report = scan(demo.resolved_archive_url, demo, factory, task_sender(demo))
        console.print(f"scan: {report.listed} objects, {report.planned} studies planned, {report.enqueued} enqueued")
        finished = _wait(factory, report.enqueued, worker, timeout_s)
    finally:
        _stop_worker(worker)
    per_study = _score_against_truth(factory, truth)
    console.print(results_table(factory, {uid: (total, hits) for uid, (total, hits, _) in per_study.items()}))
    total, hits, others = (sum(v) for v in zip(*per_study.values(), strict=True))
    console.print(
        f"ground truth: {hits} of {total} synthetic nodules found (a hit: centre within the nodule's radius); "
        f"{others} findings hit no nodule"
    )
    console.print(f"worker log: {worker_log}")
    if not finished:
        console.print(f"[red]not every study finished within {timeout_s:.0f} s; see the worker log[/red]")
        return 1
    return 0


def _start_worker(data_dir: Path, log_path: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "NIGHTSCAN_DATA_DIR": str(data_dir),
        "NIGHTSCAN_ARCHIVE_URL": "",
        "NIGHTSCAN_DATABASE_URL": "",
        "NIGHTSCAN_BROKER_URL": "",
    }
    with log_path.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "nightscan.cli", "worker", "--queues", "gpu"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _stop_worker(worker: subprocess.Popen[bytes]) -> None:
    worker.terminate()
    try:
        worker.wait(timeout=60)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()


def _wait(factory: sessionmaker[Session], expected: int, worker: subprocess.Popen[bytes], timeout_s: float) -> bool:
    """Wait behind a progress bar until ``expected`` analyses are done or failed; True if they all are."""
    deadline = time.monotonic() + timeout_s
    finished_states = (AnalysisStatus.DONE, AnalysisStatus.FAILED)
    seen = 0
    with progress_bar("analysing", total=expected, unit="studies") as advance:
        while seen < expected and time.monotonic() < deadline:
            if worker.poll() is not None:
                log.error("the worker exited with code %s", worker.returncode)
                return False
            with factory() as session:
                count = session.scalar(
                    select(func.count()).select_from(Analysis).where(Analysis.status.in_(finished_states))
                )
            advance((count or 0) - seen)
            seen = count or 0
            time.sleep(0.5)
    return seen >= expected


def _score_against_truth(factory: sessionmaker[Session], truth: GroundTruth) -> dict[str, tuple[int, int, int]]:
    """StudyInstanceUID -> (true nodules, nodules found, findings that hit no nodule).

    A finding hits a nodule when its centre lies within the nodule's radius (LUNA16).
    """
    with factory() as session:
        rows = session.execute(
            select(Study.study_instance_uid, Finding.center_x_mm, Finding.center_y_mm, Finding.center_z_mm)
            .join(Analysis, Analysis.study_id == Study.id)
            .join(Finding, Finding.analysis_id == Analysis.id)
        ).all()
    found: dict[str, list[tuple[float, float, float]]] = {}
    for uid, x, y, z in rows:
        found.setdefault(uid, []).append((x, y, z))
    scores = {}
    for study in truth.studies:
        centres = found.get(study.study_uid, [])
        hit = [[math.dist(n.center_xyz_mm, c) <= n.diameter_mm / 2 for c in centres] for n in study.nodules]
        found_nodules = sum(any(row) for row in hit)
        misses = sum(not any(column) for column in zip(*hit, strict=True)) if hit else len(centres)
        scores[study.study_uid] = (len(study.nodules), found_nodules, misses)
    return scores
