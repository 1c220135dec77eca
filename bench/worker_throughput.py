"""Worker throughput: end-to-end studies/s over model-only studies/s, side by side in one run.

End to end: the studies lie as DICOM files in moto's S3 server (real HTTP); their analyses go through Redis
to a real ``nightscan worker`` on the gpu queue, which fetches, decodes, preprocesses, runs the detector and
the classifier, measures and writes findings to PostgreSQL. Model-only: the same models, loaded the same way
(:class:`workers.context.WorkerContext`), on the same studies already decoded into memory (preprocessing to
the model's grid, the detector's network and the classifier). The ratio of the two says how much of the
device's time the rest of the system costs. Each ``--prefetch`` value runs the end-to-end pass again with
that many studies fetched and decoded ahead per device (``NIGHTSCAN_PREFETCH_STUDIES``), on the same
archive. Warm-up studies (one per worker process) are analysed before the clock starts.

    python -m bench.worker_throughput --studies 12 --prefetch 0,1

Needs PostgreSQL on 127.0.0.1:5432 and Redis on 127.0.0.1:6379 (database 14, flushed).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import redis
from sqlalchemy import create_engine, delete, select, update

from bench.common import S3_KEY, machine, moto_s3, scratch_database, write_result
from db.models import Analysis, AnalysisStatus, Finding, utcnow
from nightscan.logs import configure_logging
from nightscan.progress import progress_bar
from nightscan.runtime import session_factory, task_sender
from nightscan.settings import Settings, settings_env
from nightscan.storage import open_storage
from scheduler.scan import scan
from synth.archive import generate_archive
from workers.context import WorkerContext
from workers.pipeline import describe_study, detect_and_classify
from workers.series import load_series
from workers.volume import IrregularSeries, Volume

REDIS_URL = "redis://127.0.0.1:6379/14"
ROOT = Path(__file__).resolve().parent.parent
STAGES = ("fetch", "decode", "device_wait", "preprocess", "inference", "classify", "measure", "lungs", "write")
log = logging.getLogger("bench")


def _triple(text_value: str, kind: type) -> tuple:
    parts = tuple(kind(v) for v in text_value.lower().split("x"))
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"expected three values like 100x256x256, got {text_value!r}")
    return parts


def model_only(settings: Settings, analyses: list[tuple[int, list[str]]]) -> dict[str, float]:
    """Seconds per stage of the models alone, summed over the studies already decoded in memory (after one
    warm-up study): preprocess, inference (the detector's network), classify, measure (segmentation), spiculation
    (the spiculation model on the measured nodules), lungs (their centroid, workers.lungs)."""
    ctx = WorkerContext(settings)
    storage = ctx.storage(settings.archive_url)
    volumes = []
    with progress_bar("decoding into memory", len(analyses), "studies") as advance:
        for _, keys in analyses:
            volume, _stats = load_series(
                keys,
                storage.get,
                fetch_threads=settings.fetch_threads,
                pool=ctx.decode_pool,
                policy=IrregularSeries(settings.irregular_series),
            )
            volumes.append(volume)
            advance(1)
    ctx.decode_pool.close()
    detector = ctx.detector(settings.detector)
    classifier = ctx.classifier(settings.classifier) if settings.classifier else None
    spiculation = ctx.spiculation(settings.spiculation) if settings.spiculation else None

    def models(volume: Volume) -> dict[str, float]:
        """Seconds per stage of the models on one volume, as the worker runs them (workers.pipeline)."""
        stages: dict[str, float] = {}
        candidates, classifications, _ = detect_and_classify(
            volume,
            detector,
            classifier,
            batch_slices=ctx.batch_slices,
            finding_min_score=settings.finding_min_score,
            timings=stages,
        )
        describe_study(volume, candidates, classifications, spiculation, stages)
        return stages

    models(volumes[0])  # warm-up
    totals = dict.fromkeys(("preprocess", "inference", "classify", "measure", "spiculation", "lungs"), 0.0)
    with progress_bar("models only", len(volumes), "studies") as advance:
        for volume in volumes:
            for stage, seconds in models(volume).items():
                if stage in totals:
                    totals[stage] += seconds
            advance(1)
    return totals


def end_to_end(settings: Settings, url: str, ids: list[int], warmup: int, log_path: Path) -> dict[str, object]:
    """Studies/s through Redis and a real worker, from the send to the last study's commit, after ``warmup``."""
    engine = create_engine(url)
    with engine.begin() as conn:  # every analysis planned again, no findings: the same work for every pass
        conn.execute(delete(Finding))
        conn.execute(
            update(Analysis).values(
                status=AnalysisStatus.PLANNED, attempts=0, error=None, timings_s=None, finished_at=None
            )
        )
    redis.Redis.from_url(settings.broker_url).flushdb()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "nightscan.cli", "worker", "--queues", "gpu"],
            env=settings_env(settings),
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        factory = session_factory(settings)
        send = task_sender(settings)
        _send(factory, send, ids[:warmup])
        _wait(engine, ids[:warmup], worker, "warm-up")
        start_wall = time.time()  # compared with the workers' finished_at: the same machine's clock
        _send(factory, send, ids[warmup:])
        _wait(engine, ids[warmup:], worker, f"end to end, prefetch {settings.prefetch_studies}")
        with engine.connect() as conn:
            rows = conn.execute(
                select(Analysis.status, Analysis.timings_s, Analysis.started_at, Analysis.finished_at).where(
                    Analysis.id.in_(ids[warmup:])
                )
            ).all()
        last = max(r.finished_at for r in rows).timestamp()
        elapsed = last - start_wall
    finally:
        worker.terminate()  # a soft shutdown: an idle worker exits at once
        try:
            worker.wait(timeout=settings.worker_soft_shutdown_s + 30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
        engine.dispose()
    failed = [r for r in rows if r.status != AnalysisStatus.DONE]
    if failed:
        raise RuntimeError(f"{len(failed)} analyses did not finish done; see {log_path}")
    per_study = [(r.finished_at - r.started_at).total_seconds() for r in rows]
    stage_means = {s: statistics.fmean(r.timings_s.get(s, 0.0) for r in rows) for s in STAGES}
    mean_study = statistics.fmean(per_study)
    return {
        "prefetch_studies": settings.prefetch_studies,
        "studies": len(rows),
        "seconds": round(elapsed, 2),
        "studies_per_s": len(rows) / elapsed,
        "mean_seconds_per_study_in_worker": round(mean_study, 3),
        "stage_mean_s": {s: round(v, 3) for s, v in stage_means.items()},
        "stage_share_of_study": {s: round(v / mean_study, 3) for s, v in stage_means.items()},
        "other_share_of_study": round(1 - sum(stage_means.values()) / mean_study, 3),
    }


def _send(factory, send, ids: list[int]) -> None:  # type: ignore[no-untyped-def]
    """Enqueue exactly ``ids`` (the rest stay planned) as the scheduler does: queued and committed, then sent."""
    with factory() as session:
        session.execute(
            update(Analysis).where(Analysis.id.in_(ids)).values(status=AnalysisStatus.QUEUED, queued_at=utcnow())
        )
        session.commit()
    for analysis_id in ids:
        send(analysis_id)


def _wait(engine, ids: list[int], worker: subprocess.Popen[bytes], label: str) -> None:  # type: ignore[no-untyped-def]
    ended = (AnalysisStatus.DONE, AnalysisStatus.FAILED)
    with progress_bar(label, len(ids), "studies") as advance:
        seen = 0
        while seen < len(ids):
            if worker.poll() is not None:
                raise RuntimeError(f"the worker exited with {worker.returncode}")
            with engine.connect() as conn:
                done = conn.execute(select(Analysis.id).where(Analysis.id.in_(ids), Analysis.status.in_(ended))).all()
            advance(len(done) - seen)
            seen = len(done)
            time.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", type=int, default=12, help="studies timed, warm-up excluded")
    parser.add_argument("--prefetch", default="0,1", help="comma-separated NIGHTSCAN_PREFETCH_STUDIES values")
    parser.add_argument("--shape", type=lambda v: _triple(v, int), default=(100, 256, 256), help="voxels, z x y x x")
    parser.add_argument("--spacing", type=lambda v: _triple(v, float), default=(2.5, 1.4, 1.4), help="mm")
    parser.add_argument("--port", type=int, default=5098, help="moto server port")
    parser.add_argument("--name", default="worker_throughput", help="bench/results/NAME.json")
    args = parser.parse_args()
    prefetches = [int(v) for v in args.prefetch.split(",")]
    configure_logging("WARNING")
    log.setLevel("INFO")
    warmup = 1 + max(prefetches)

    data_dir = ROOT / ".nightscan" / "bench-worker"
    with moto_s3(args.port, "archive") as endpoint, scratch_database() as url:
        settings = Settings(
            data_dir=data_dir,
            archive_url="s3://archive/ct",
            database_url=url,
            broker_url=REDIS_URL,
            s3_endpoint_url=endpoint,
            s3_access_key_id=S3_KEY,
            s3_secret_access_key=S3_KEY,
            series_quiet_s=0,
            log_level="WARNING",
        )
        storage = open_storage(settings.archive_url, settings)
        total = args.studies + warmup
        with ThreadPoolExecutor(max_workers=16) as uploads, progress_bar("writing", total, "studies") as advance:
            pending = []
            generate_archive(
                lambda k, d: pending.append(uploads.submit(storage.put, k, d)),
                n_patients=total,
                seed=11,
                shape_zyx=args.shape,
                spacing_zyx_mm=args.spacing,
                on_study=advance,
            )
            for future in pending:
                future.result()
        factory = session_factory(settings)
        report = scan(settings.archive_url, settings, factory, None)
        if report.planned != total:
            raise RuntimeError(f"planned {report.planned} analyses, expected {total}")
        with factory() as session:
            planned = session.execute(select(Analysis.id, Analysis.inputs).order_by(Analysis.id)).all()
        ids = [row.id for row in planned]
        keys = _keys_of(factory, ids)

        n = args.studies
        stages = model_only(settings, [(i, keys[i]) for i in ids[warmup:]])
        full = n / sum(stages.values())  # everything the worker does to a decoded volume
        networks = n / (stages["preprocess"] + stages["inference"] + stages["classify"])
        log.info("models only: %.4f studies/s (networks alone %.4f)", full, networks)
        passes = []
        for prefetch in prefetches:
            configured = Settings(**{**settings.model_dump(), "prefetch_studies": prefetch})
            result = end_to_end(configured, url, ids, warmup, data_dir / f"worker-prefetch-{prefetch}.log")
            result["ratio_end_to_end_over_model_only"] = round(result["studies_per_s"] / full, 3)
            result["ratio_end_to_end_over_networks_only"] = round(result["studies_per_s"] / networks, 3)
            result["studies_per_s"] = round(result["studies_per_s"], 4)
            log.info("prefetch %d: %s studies/s", prefetch, result["studies_per_s"])
            passes.append(result)
        write_result(
            args.name,
            {
                "command": "python -m bench.worker_throughput " + " ".join(sys.argv[1:]),
                "study_shape_zyx": list(args.shape),
                "study_spacing_zyx_mm": list(args.spacing),
                "detector": settings.detector,
                "classifier": settings.classifier,
                "torch_threads": machine()["cores"],
                "model_only_studies_per_s": round(full, 4),
                "model_only_stage_mean_s": {k: round(v / n, 3) for k, v in stages.items()},
                "networks_only_studies_per_s": round(networks, 4),
                "end_to_end": passes,
            },
        )


def _keys_of(factory, ids: list[int]) -> dict[int, list[str]]:  # type: ignore[no-untyped-def]
    """Each analysis's object keys in the order the worker fetches them."""
    from db.results import claim_analysis

    keys = {}
    with factory() as session:
        for analysis_id in ids:
            job = claim_analysis(session, analysis_id, max_attempts=1000)
            assert job is not None, f"analysis {analysis_id} could not be read"
            keys[analysis_id] = [key for key, _ in job.objects]
        session.rollback()  # nothing claimed for real
    return keys


if __name__ == "__main__":
    main()
