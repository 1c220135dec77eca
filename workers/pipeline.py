"""One study, end to end: fetch its objects, decode, build the volume, detect, classify, measure, write the findings."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from db.engine import transaction
from db.results import AnalysisJob, analysis_lock, claim_analysis, record_failure, release_for_retry, write_findings
from nightscan.storage import StorageError
from screening.types import NoduleType
from workers.context import WorkerContext
from workers.decode import DecodeError
from workers.findings import Classification, describe_candidates
from workers.lungs import lung_centroid_mm
from workers.series import load_series
from workers.volume import IrregularSeries, Volume, VolumeError

if TYPE_CHECKING:
    from db.models import Finding
    from models.candidates import Candidate
    from models.classifier import CandidateClassifier
    from models.inference import NoduleDetector
    from models.spiculation import SpiculationModel

log = logging.getLogger(__name__)


class TransientError(RuntimeError):
    """A failure worth retrying (storage or database unavailable); the study itself is not at fault."""


class AnalysisBusyError(TransientError):
    """Another worker holds the analysis lock: it is running this analysis now."""


def run_analysis(analysis_id: int, ctx: WorkerContext) -> str:
    """Run analysis ``analysis_id``; return its outcome: done, duplicate, skipped or failed.

    Holds the analysis lock while it runs; another delivery of the same analysis meanwhile raises
    :class:`AnalysisBusyError`. Bad input (an undecodable slice, an irregular series, a missing object) and
    the soft time limit fail the analysis with the reason, for good. Storage or database unavailable
    raises :class:`TransientError` for a retry, and the attempt does not count against ``max_attempts``.
    Any other error fails the analysis as an internal error and propagates.
    """
    try:
        with analysis_lock(ctx.engine, analysis_id) as locked:
            if not locked:
                raise AnalysisBusyError(f"analysis {analysis_id} is being run by another worker")
            with transaction(ctx.factory) as session:
                job = claim_analysis(session, analysis_id, ctx.settings.max_attempts)
            if job is None:
                log.info("analysis %d: already finished or out of attempts, skipped", analysis_id)
                return "skipped"
            return _attempt(job, ctx)
    except DBAPIError as exc:
        if not _database_unavailable(exc):
            raise
        log.warning("analysis %d: database unavailable (%s)", analysis_id, type(exc).__name__)
        raise TransientError(f"database unavailable: {exc}") from exc


def _attempt(job: AnalysisJob, ctx: WorkerContext) -> str:
    """Run a claimed attempt and record how it ended, unless the study did."""
    try:
        return _run(job, ctx)
    except Exception as exc:
        transient, reason = _judge(exc, ctx)
        if transient:
            log.warning("analysis %d attempt %d: %s; it will be retried", job.analysis_id, job.attempt, reason)
            try:
                with transaction(ctx.factory) as session:
                    release_for_retry(session, job.analysis_id, f"attempt {job.attempt}: {reason}")
            except DBAPIError as db_exc:
                log.warning("analysis %d: could not record the transient error (%s)", job.analysis_id, db_exc)
            raise TransientError(reason) from exc
        if reason is None:
            log.exception("analysis %d: unexpected error", job.analysis_id)
            with transaction(ctx.factory) as session:
                record_failure(session, job.analysis_id, f"internal error: {type(exc).__name__}: {exc}")
            raise
        log.warning("analysis %d failed: %s", job.analysis_id, reason)
        with transaction(ctx.factory) as session:
            record_failure(session, job.analysis_id, reason)
        return "failed"


def _judge(exc: Exception, ctx: WorkerContext) -> tuple[bool, str | None]:
    """(transient, reason) of an error that ended an attempt; reason None for an unexpected (internal) error."""
    if isinstance(exc, DecodeError | VolumeError):
        return False, str(exc)
    if isinstance(exc, StorageError):
        if _object_missing(exc):
            return False, f"an input object is missing from the archive: {exc}"
        return True, f"storage unavailable: {exc}"
    if isinstance(exc, DBAPIError) and _database_unavailable(exc):
        return True, f"database unavailable: {exc}"
    if isinstance(exc, SoftTimeLimitExceeded):
        from workers.app import time_limits

        soft, hard = time_limits(ctx.settings)
        return False, f"stopped at the soft time limit of {soft} s (hard limit {hard} s): the study takes too long"
    return False, None


def _database_unavailable(exc: DBAPIError) -> bool:
    """True for errors of the connection (server down, restarting, unreachable), not of the statement."""
    return isinstance(exc, OperationalError | InterfaceError) or exc.connection_invalidated


def _object_missing(exc: BaseException) -> bool:
    """True when a storage error says the object does not exist (deleted since it was indexed)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, FileNotFoundError):
            return True
        response = getattr(seen, "response", None)  # botocore's ClientError
        if isinstance(response, dict) and response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
            return True
        seen = seen.__cause__
    return False


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
    classifier = ctx.classifier(ctx.settings.classifier) if ctx.settings.classifier else None
    spiculation = ctx.spiculation(ctx.settings.spiculation) if ctx.settings.spiculation else None
    with ctx.device_turn.take() as waited:  # meanwhile the other processes of this device fetch and decode
        timings["device_wait"] = waited
        candidates, classifications, study_score = detect_and_classify(
            volume,
            detector,
            classifier,
            batch_slices=ctx.batch_slices,
            finding_min_score=ctx.settings.finding_min_score,
            timings=timings,
        )
    findings, lungs = describe_study(volume, candidates, classifications, spiculation, timings)
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
                "lung_centroid_mm": None if lungs is None else list(lungs),
            },
            classifier=f"{classifier.name}@{classifier.version}" if classifier is not None else None,
            classifier_sha256=classifier.sha256 if classifier is not None else None,
            study_score=study_score,
            spiculation_model=f"{spiculation.name}@{spiculation.version}" if spiculation is not None else None,
            spiculation_sha256=spiculation.sha256 if spiculation is not None else None,
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


def detect_and_classify(
    volume: Volume,
    detector: NoduleDetector,
    classifier: CandidateClassifier | None,
    *,
    batch_slices: int,
    finding_min_score: float | None,
    timings: dict[str, float],
) -> tuple[list[Candidate], list[Classification] | None, float | None]:
    """The models' part of an analysis, as the worker runs it on its device: the detector's candidates (from
    ``finding_min_score`` on when a classifier runs, else from the detector's threshold), the classifier's verdicts
    on them and the candidates it vouches for (:func:`vouched`), and the study score (the highest nodule probability
    kept; None without a classifier). The seconds taken go into ``timings`` (preprocess, inference, classify)."""
    stages: dict[str, float] = {}
    candidates = detector.detect(
        volume.hu,
        volume.spacing_zyx_mm,
        batch_size=batch_slices,
        score_threshold=finding_min_score if classifier is not None else None,
        stages_s=stages,
    )
    timings["preprocess"], timings["inference"] = stages["preprocess"], stages["network"]
    if classifier is None:
        return list(candidates), None, None
    start = time.perf_counter()
    kept, classifications = vouched(candidates, _classify(classifier, volume, candidates), detector)
    timings["classify"] = time.perf_counter() - start
    return kept, classifications, max((c.probability for c in classifications), default=0.0)


def describe_study(
    volume: Volume,
    candidates: Sequence[Candidate],
    classifications: Sequence[Classification] | None,
    spiculation: SpiculationModel | None,
    timings: dict[str, float],
) -> tuple[list[Finding], tuple[float, float, float] | None]:
    """The CPU part of an analysis after the models: every kept candidate measured (and read for spiculation),
    and the lungs' centroid (x, y, z, mm; :func:`workers.lungs.lung_centroid_mm`). The seconds taken go into
    ``timings`` (measure, spiculation, lungs)."""
    start = time.perf_counter()
    findings = describe_candidates(volume, candidates, classifications, spiculation=spiculation, stages_s=timings)
    timings["measure"] = time.perf_counter() - start - timings.get("spiculation", 0.0)
    start = time.perf_counter()
    lungs = lung_centroid_mm(volume)
    timings["lungs"] = time.perf_counter() - start
    return findings, lungs


def _classify(classifier: CandidateClassifier, volume: Volume, candidates: Sequence[Candidate]) -> list[Classification]:
    """The classifier's verdict on every candidate (nodule probability 0..1 and type), in the candidates' order."""
    verdicts = classifier.classify(volume.hu, volume.spacing_zyx_mm, [c.center_zyx_vox for c in candidates])
    return [
        Classification(v.nodule_probability, v.nodule_type.value, v.type_probabilities.get(NoduleType.SOLID))
        for v in verdicts
    ]


VOUCHED_PROBABILITY = 0.5
"""Under the detector's registered threshold (down to ``Settings.finding_min_score``), a candidate becomes a finding
only when the classifier gives it at least this nodule probability (0 to 1). The others could never count as
nodules (``workers.followup.NODULE_CRITERIA`` needs log-odds 7 from both models together), and storing them would
mean measuring about four times as many candidates (on the evaluation archives, 14 a study from score 0.05 against
3.5 kept)."""


def vouched(
    candidates: Sequence[Candidate], classifications: Sequence[Classification], detector: NoduleDetector
) -> tuple[list[Candidate], list[Classification]]:
    """The candidates (and their verdicts, in order) to store: those at or above ``detector``'s registered threshold,
    and those under it that the classifier gives at least :data:`VOUCHED_PROBABILITY`."""
    kept = [
        (candidate, verdict)
        for candidate, verdict in zip(candidates, classifications, strict=True)
        if candidate.score >= detector.score_threshold or verdict.probability >= VOUCHED_PROBABILITY
    ]
    return [c for c, _ in kept], [v for _, v in kept]
