"""The thin path on real parts: archive -> scan -> broker -> worker subprocess -> findings in SQL.

Once on production parts (moto's S3 server over HTTP, Redis, PostgreSQL) and once on the embedded
default (a folder, the filesystem broker, SQLite) through ``nightscan demo``.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select

from db.engine import transaction
from db.models import Analysis, AnalysisStatus, ArchiveObject, Finding, ObjectStatus, Study
from db.results import claim_analysis, write_findings
from nightscan.runtime import session_factory, task_sender
from nightscan.settings import Settings
from nightscan.storage import open_storage
from scheduler.scan import scan
from synth.archive import generate_archive
from tests.conftest import ROOT, wait_for_analyses, with_settings


def test_s3_redis_postgres_worker_end_to_end(
    s3_settings: Settings, redis_url: str, postgres_url: str, start_worker
) -> None:
    settings = with_settings(s3_settings, database_url=postgres_url, broker_url=redis_url)
    archive = open_storage(settings.archive_url, settings)
    truth = generate_archive(archive.put, n_patients=2, seed=11)
    archive.put("notes/readme.txt", b"not a DICOM file")
    factory = session_factory(settings)

    report = scan(settings.archive_url, settings, factory, task_sender(settings))
    n_instances = sum(s.n_instances for s in truth.studies)
    assert report.listed == n_instances + 1
    assert report.status == {"indexed": n_instances, "rejected": 1}
    assert report.planned == report.enqueued == len(truth.studies)

    start_worker(settings)
    counts = wait_for_analyses(postgres_url, len(truth.studies), timeout_s=240)
    assert counts == {"done": len(truth.studies)}

    large = found = 0
    with factory() as session:
        rejected = session.scalars(select(ArchiveObject).where(ArchiveObject.status == ObjectStatus.REJECTED)).one()
        assert rejected.key == "notes/readme.txt" and "DICOM" in rejected.reason
        for analysis in session.scalars(select(Analysis).join(Study)):
            study = truth.study(analysis.study.study_instance_uid)
            assert len(analysis.inputs) == study.n_instances
            assert set(analysis.timings_s) == {
                "fetch",
                "decode",
                "device_wait",
                "preprocess",
                "inference",
                "classify",
                "spiculation",
                "measure",
                "lungs",
                "write",
            }
            assert "lung_centroid_mm" in analysis.volume  # recorded (None where the lungs reach the slices' edges)
            assert analysis.model_sha256 and len(analysis.model_sha256) == 64
            # the candidate classifier scored every finding; the study score is the highest probability
            assert analysis.classifier == settings.classifier and len(analysis.classifier_sha256) == 64
            # the spiculation model gave each measured finding's spiculation, and the analysis names it
            assert analysis.spiculation_model == settings.spiculation and len(analysis.spiculation_sha256) == 64
            probabilities = [f.probability for f in analysis.findings]
            assert all(p is not None and 0.0 <= p <= 1.0 for p in probabilities)
            assert analysis.study_score == pytest.approx(max(probabilities, default=0.0), abs=1e-4)
            for nodule in (n for n in study.nodules if n.diameter_mm >= 10):
                large += 1
                hits = [
                    f
                    for f in analysis.findings
                    if math.dist(nodule.center_xyz_mm, (f.center_x_mm, f.center_y_mm, f.center_z_mm))
                    <= nodule.diameter_mm
                ]
                found += bool(hits)
                # a found nodule is measured from its segmentation: Lung-RADS mean diameter and type
                for f in (f for f in hits if f.long_axis_mm is not None):
                    assert abs(f.diameter_mm - nodule.diameter_mm) <= 1.5, (f.diameter_mm, nodule.diameter_mm)
                    assert f.nodule_type and f.volume_mm3 > 0
    # Findings land where the nodules are, in patient coordinates (detection quality is test_detector's).
    assert large == 0 or found >= max(1, large // 2), f"{found} of {large} nodules of 10 mm or more found"

    again = scan(settings.archive_url, settings, factory, task_sender(settings))
    assert (again.unchanged, again.planned, again.enqueued, again.status) == (again.listed, 0, 0, {})


def test_a_second_write_of_the_same_analysis_changes_nothing(sqlite_url: str, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, database_url=sqlite_url, series_quiet_s=0)
    archive = open_storage(settings.resolved_archive_url, settings)
    generate_archive(archive.put, n_patients=1, seed=2, shape_zyx=(20, 64, 64))
    factory = session_factory(settings)
    report = scan(settings.resolved_archive_url, settings, factory, send=None)
    assert report.planned == 1
    with transaction(factory) as session:
        analysis_id = session.scalar(select(Analysis.id))
        job = claim_analysis(session, analysis_id, max_attempts=3)
    assert job is not None

    def write() -> bool:
        with transaction(factory) as session:
            finding = Finding(
                label="nodule",
                score=0.9,
                center_x_mm=1.0,
                center_y_mm=2.0,
                center_z_mm=3.0,
                diameter_mm=8.0,
                extent_mm=[8.0, 8.0, 8.0],
            )
            return write_findings(session, job, [finding], timings_s={}, model_sha256="0" * 64, preprocessing="p")

    assert write() is True
    assert write() is False
    with factory() as session:
        assert session.scalar(select(func.count()).select_from(Finding)) == 1
        assert session.get(Analysis, analysis_id).status == AnalysisStatus.DONE
    with transaction(factory) as session:
        assert claim_analysis(session, analysis_id, max_attempts=3) is None


def test_demo_on_the_embedded_default(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NIGHTSCAN_")}
    env["NIGHTSCAN_DATA_DIR"] = str(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "nightscan.cli", "demo", "--patients", "2", "--timeout", "240"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stdout.count("done") >= 4  # 2 patients x 2 studies
    assert "ground truth: found" in result.stdout and "Lung-RADS" in result.stdout


def test_headers_indexed_by_ingest_workers(
    s3_settings: Settings, redis_url: str, postgres_url: str, start_worker
) -> None:
    from collections import Counter

    from nightscan.runtime import ingest_sender
    from synth.archive import ArchiveOptions
    from synth.messy import Mess

    settings = with_settings(
        s3_settings, database_url=postgres_url, broker_url=redis_url, index_on_workers=True, ingest_batch_size=25
    )
    archive = open_storage(settings.archive_url, settings)
    options = ArchiveOptions(shape_zyx=(30, 48, 48), spacing_zyx_mm=(2.5, 7.0, 7.0), mess=Mess.everything())
    truth = generate_archive(archive.put, n_patients=3, seed=12, options=options)
    start_worker(settings, queues="ingest")
    factory = session_factory(settings)
    report = scan(settings.archive_url, settings, factory, send=None, ingest=ingest_sender(settings))
    roles = Counter(o.role for s in truth.studies for o in s.objects)
    # batches of at most 25 objects of each listed page (one page per patient prefix here)
    assert report.batches_sent == report.batches_done >= math.ceil(report.listed / 25)
    with factory() as session:
        statuses = Counter(row.status.value for row in session.scalars(select(ArchiveObject)))
    assert statuses == {
        "indexed": roles["image"] + roles["localizer"],
        "duplicate": roles["duplicate"],
        "rejected": roles["truncated"] + roles["structured_report"],
    }
    assert report.planned == len(truth.studies)
