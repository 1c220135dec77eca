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
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from db.migrate import upgrade
from db.models import Analysis, AnalysisStatus, Assessment, Finding, Study
from nightscan.progress import progress_bar
from nightscan.runtime import session_factory, task_sender
from nightscan.settings import Settings
from nightscan.storage import open_storage
from nightscan.tables import results_table
from scheduler.scan import scan
from synth.archive import GroundTruth, generate_archive

log = logging.getLogger(__name__)

DEMO_SEED = 7
DEMO_SHAPE_ZYX = (100, 256, 256)  # voxels per study: 250 x 358 x 358 mm
DEMO_SPACING_ZYX_MM = (2.5, 1.4, 1.4)  # a chest CT's slices and pixels (the detector's validated range)
LARGE_MM = 8.0  # Lung-RADS 4A at baseline starts here


def run_demo(settings: Settings, *, patients: int, studies: int = 2, timeout_s: float) -> int:
    """Run the demo in ``<data_dir>/demo``; return a process exit code (0 when every study is done)."""
    data_dir = (settings.data_dir / "demo").resolve()
    shutil.rmtree(data_dir, ignore_errors=True)
    demo = Settings(data_dir=data_dir, archive_url="", database_url="", broker_url="", series_quiet_s=0)
    console = Console(width=max(Console().width, 120))
    archive = open_storage(demo.resolved_archive_url, demo)
    truth = generate_archive(
        archive.put,
        n_patients=patients,
        seed=DEMO_SEED,
        studies_per_patient=studies,
        shape_zyx=DEMO_SHAPE_ZYX,
        spacing_zyx_mm=DEMO_SPACING_ZYX_MM,
    )
    console.print(f"synthetic archive: {len(truth.studies)} studies in {demo.resolved_archive_url}")
    upgrade(demo.resolved_database_url)
    factory = session_factory(demo)

    worker_log = data_dir / "worker.log"
    worker = _start_worker(data_dir, worker_log)
    try:
        report = scan(demo.resolved_archive_url, demo, factory, task_sender(demo))
        console.print(f"scan: {report.listed} objects, {report.planned} studies planned, {report.enqueued} enqueued")
        finished = _wait(factory, report.enqueued, worker, timeout_s)
        finished = finished and _wait_for_follow_up(factory, worker, timeout_s=120)
    finally:
        _stop_worker(worker)
    score = _score_against_truth(factory, truth)
    console.print(results_table(factory, score.per_study))
    console.print(
        f"ground truth: found {score.found_large} of {score.large} nodules of {LARGE_MM:g} mm or more and "
        f"{score.found_small} of {score.small} smaller ones (a hit: centre within the nodule's radius); "
        f"{score.other_findings} findings hit no nodule. The models and their measured performance: "
        "models/MODEL_CARD.md."
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
            [sys.executable, "-m", "nightscan.cli", "worker", "--queues", "gpu,cpu"],  # cpu: the follow-up
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


def _wait_for_follow_up(factory: sessionmaker[Session], worker: subprocess.Popen[bytes], *, timeout_s: float) -> bool:
    """Wait until every done analysis has its Lung-RADS assessment (the per-patient step, on the cpu queue)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and worker.poll() is None:
        with factory() as session:
            done = session.scalar(
                select(func.count()).select_from(Analysis).where(Analysis.status == AnalysisStatus.DONE)
            )
            assessed = session.scalar(select(func.count()).select_from(Assessment))
        if (assessed or 0) >= (done or 0):
            return True
        time.sleep(0.5)
    log.error("the per-patient follow-up did not assess every study within %.0f s", timeout_s)
    return False


@dataclass
class TruthScore:
    """How the findings compare with the synthetic ground truth."""

    per_study: dict[str, tuple[int, int]] = field(default_factory=dict)  # study UID -> (nodules, found)
    large: int = 0
    found_large: int = 0
    small: int = 0
    found_small: int = 0
    other_findings: int = 0


def _score_against_truth(factory: sessionmaker[Session], truth: GroundTruth) -> TruthScore:
    """Compare findings with the truth; a finding hits a nodule when its centre lies within its radius (LUNA16)."""
    with factory() as session:
        rows = session.execute(
            select(Study.study_instance_uid, Finding.center_x_mm, Finding.center_y_mm, Finding.center_z_mm)
            .join(Analysis, Analysis.study_id == Study.id)
            .join(Finding, Finding.analysis_id == Analysis.id)
        ).all()
    found: dict[str, list[tuple[float, float, float]]] = {}
    for uid, x, y, z in rows:
        found.setdefault(uid, []).append((x, y, z))
    score = TruthScore()
    for study in truth.studies:
        centres = found.get(study.study_uid, [])
        hit = [[math.dist(n.center_xyz_mm, c) <= n.diameter_mm / 2 for c in centres] for n in study.nodules]
        for nodule, row in zip(study.nodules, hit, strict=True):
            if nodule.diameter_mm >= LARGE_MM:
                score.large += 1
                score.found_large += any(row)
            else:
                score.small += 1
                score.found_small += any(row)
        score.other_findings += sum(not any(column) for column in zip(*hit, strict=True)) if hit else len(centres)
        score.per_study[study.study_uid] = (len(study.nodules), sum(any(row) for row in hit))
    return score
