"""One study, end to end: fetch its objects, decode, build the volume, detect, classify, measure, write the findings."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from sqlalchemy.exc import OperationalError

from db.engine import transaction
from db.results import AnalysisJob, claim_analysis, record_failure, write_findings
from nightscan.storage import StorageError
from workers.context import WorkerContext
from workers.decode import DecodeError
from workers.findings import Classification, describe_candidates
from workers.series import load_series
from workers.volume import IrregularSeries, Volume, VolumeError

if TYPE_CHECKING:
    from models.candidates import Candidate
    from models.classifier import CandidateClassifier

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
    classifier = ctx.classifier(ctx.settings.classifier) if ctx.settings.classifier else None
    classifications, study_score = None, None
    if classifier is not None:
        start = time.perf_counter()
        classifications, study_score = _classify(classifier, volume, candidates)
        timings["classify"] = time.perf_counter() - start
    start = time.perf_counter()
    findings = describe_candidates(volume, candidates, classifications)
    timings["measure"] = time.perf_counter() - start
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
            classifier=f"{classifier.name}@{classifier.version}" if classifier is not None else None,
            classifier_sha256=classifier.sha256 if classifier is not None else None,
            study_score=study_score,
        )
    log.info(
        "analysis %d: %d slices, %d findings, study score %s, %s s before the write",
        job.analysis_id,
        len(keys),
        len(findings),
        "n/a" if study_score is None else f"{study_score:.3f}",
        {k: round(v, 3) for k, v in timings.items()},
    )
    return "done" if written else "duplicate"


def _classify(
    classifier: CandidateClassifier, volume: Volume, candidates: Sequence[Candidate]
) -> tuple[list[Classification], float]:
    """The classifier's verdict on every candidate (nodule probability 0..1 and type), in the candidates' order,
    and the study score (0..1, the highest probability; 0 without candidates). No candidate is dropped."""
    from models.classifier import study_score

    verdicts = classifier.classify(volume.hu, volume.spacing_zyx_mm, [c.center_zyx_vox for c in candidates])
    classifications = [Classification(v.nodule_probability, v.nodule_type.value) for v in verdicts]
    return classifications, study_score(verdicts)
