"""One study, end to end: fetch its objects, decode, build the volume, detect, write the findings."""

from __future__ import annotations

import logging
import time

from sqlalchemy.exc import OperationalError

from db.engine import transaction
from db.models import Finding
from db.results import AnalysisJob, claim_analysis, record_failure, write_findings
from nightscan.storage import StorageError
from workers.context import WorkerContext
from workers.decode import DecodeError
from workers.series import load_series
from workers.volume import IrregularSeries, Volume, VolumeError

log = logging.getLogger(__name__)


class TransientError(RuntimeError):
    """A failure worth retrying (storage or database unavailable)."""


def run_analysis(analysis_id: int, ctx: WorkerContext) -> str:
    """Run analysis ``analysis_id``; return its outcome: done, duplicate, skipped or failed.

    Bad input (an undecodable slice, an irregular series) fails the analysis with the reason and
    is not retried; storage and database errors raise :class:`TransientError` for a retry.
    """
    with transaction(ctx.factory) as session:
        job = claim_analysis(session, analysis_id, ctx.settings.max_attempts)
    if job is None:
        log.info("analysis %d: already finished or out of attempts, skipped", analysis_id)
        return "skipped"
    try:
        return _run(job, ctx)
    except (DecodeError, VolumeError) as exc:
        log.warning("analysis %d failed (%s); the reason is recorded on it", analysis_id, type(exc).__name__)
        with transaction(ctx.factory) as session:
            record_failure(session, analysis_id, str(exc), final=True)
        return "failed"
    except (StorageError, OperationalError) as exc:
        log.warning("analysis %d attempt %d: transient %s", analysis_id, job.attempt, type(exc).__name__)
        with transaction(ctx.factory) as session:
            record_failure(session, analysis_id, f"attempt {job.attempt}: {exc}", final=False)
        raise TransientError(str(exc)) from exc
    except Exception as exc:
        log.exception("analysis %d: unexpected error", analysis_id)
        with transaction(ctx.factory) as session:
            record_failure(session, analysis_id, f"internal error: {type(exc).__name__}: {exc}", final=True)
        raise


def _run(job: AnalysisJob, ctx: WorkerContext) -> str:
    storage = ctx.storage(job.source)
    keys = [key for key, _ in job.objects]
    volume, stats = load_series(
        keys,
        storage.get,
        fetch_threads=ctx.settings.fetch_threads,
        pool=ctx.decode_pool,
        policy=IrregularSeries(ctx.settings.irregular_series),
    )
    timings = {"fetch": stats.fetch_s, "decode": stats.decode_s}
    detector = ctx.detector(job.model)
    start = time.perf_counter()
    candidates = detector.detect(volume.hu, volume.spacing_zyx_mm)
    timings["inference"] = time.perf_counter() - start
    findings = [_finding(volume, c) for c in candidates]
    with transaction(ctx.factory) as session:
        written = write_findings(
            session,
            job,
            findings,
            timings_s=timings,
            model_sha256=detector.sha256,
            preprocessing=detector.preprocessing_version,
            volume={
                "shape": list(volume.hu.shape),
                "spacing_mm": [round(v, 4) for v in volume.spacing_zyx_mm],
                "corrections": list(volume.corrections),
                "padded_pixels": stats.padded_pixels,
            },
        )
    log.info(
        "analysis %d: %d slices, %d findings, %s s before the write",
        job.analysis_id,
        len(keys),
        len(findings),
        {k: round(v, 3) for k, v in timings.items()},
    )
    return "done" if written else "duplicate"


def _finding(volume: Volume, candidate: object) -> Finding:
    """A Finding row at the candidate's centre in patient coordinates (mm)."""
    z, y, x = candidate.center_zyx_vox  # type: ignore[attr-defined]
    px, py, pz = volume.to_patient((z, y, x))
    _, sop_instance_uid, frame_number = volume.source_of(z)
    return Finding(
        label="nodule",
        score=float(candidate.score),  # type: ignore[attr-defined]
        center_x_mm=px,
        center_y_mm=py,
        center_z_mm=pz,
        diameter_mm=round(float(candidate.diameter_mm), 1),  # type: ignore[attr-defined]
        extent_mm=[round(float(v), 1) for v in candidate.extent_zyx_mm],  # type: ignore[attr-defined]
        sop_instance_uid=sop_instance_uid,
        frame_number=frame_number,
    )
