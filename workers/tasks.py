"""Celery tasks: thin wrappers that validate the payload (IDs only) and call the pipeline."""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery, Task
from celery.exceptions import TimeLimitExceeded
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from nightscan.settings import Settings
from workers.app import ANALYZE_STUDY, INDEX_OBJECTS, NIGHTLY_SCAN, UPDATE_PATIENT, time_limits

log = logging.getLogger(__name__)

NIGHT_TIME_LIMIT_S = 24 * 3600


def register(app: Celery, settings: Settings) -> None:
    """Register nightscan's tasks on ``app``."""

    class AnalysisTask(Task):
        """Records a study killed at the hard time limit as failed (called in the worker's main process)."""

        def on_failure(self, exc: Exception, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
            if isinstance(exc, TimeLimitExceeded) and args and isinstance(args[0], int):
                record_hard_time_limit(settings, args[0])

    @app.task(
        name=ANALYZE_STUDY,
        base=AnalysisTask,
        bind=True,
        shared=False,
        acks_late=True,
        reject_on_worker_lost=True,  # a killed pool process: the message goes back, the attempts counter bounds it
        acks_on_timeout=False,  # killed at the hard limit: back too; the next delivery finds it failed
        max_retries=None,  # retries are bounded by settings.retry_backoff_s
    )
    def analyze_study(self: Task, analysis_id: int) -> str:
        """Analyse one study (by analysis ID) on the gpu queue: done, duplicate, skipped, failed, busy or planned.

        Transient errors are retried after each wait of ``retry_backoff_s``; after the last, the analysis goes
        back to planned (or, when another worker runs it, is left to that worker). A study done (or found done
        by a redelivery, whose first delivery may have died before sending it) sends the patient's longitudinal
        step, ``update_patient``, to the cpu queue: after the findings' commit.
        """
        if not isinstance(analysis_id, int) or isinstance(analysis_id, bool):
            raise TypeError(f"analysis_id must be an int, got {analysis_id!r}")
        from workers.context import get_context
        from workers.pipeline import AnalysisBusyError, TransientError, run_analysis

        ctx = get_context(settings)
        try:
            outcome = run_analysis(analysis_id, ctx)
        except TransientError as exc:
            waits = settings.retry_backoff_s
            retries = self.request.retries
            if retries < len(waits):
                log.info(
                    "analysis %d: retry %d of %d in %s s (%s)",
                    analysis_id,
                    retries + 1,
                    len(waits),
                    waits[retries],
                    exc,
                )
                raise self.retry(exc=exc, countdown=waits[retries]) from exc
            if isinstance(exc, AnalysisBusyError):
                log.info(
                    "analysis %d: still run by another worker after %d retries; it is left to it", analysis_id, retries
                )
                return "busy"
            from db.engine import transaction
            from db.results import return_to_planned

            log.warning(
                "analysis %d: %s after %d retries; back to planned for the next scan", analysis_id, exc, retries
            )
            with transaction(ctx.factory) as session:
                return_to_planned(session, analysis_id, f"{exc} (after {retries} retries; planned again)")
            return "planned"
        if outcome in ("done", "duplicate"):
            send_follow_up(self.app, ctx.factory, analysis_id, queue=settings.queue_cpu)
        return outcome

    @app.task(
        name=UPDATE_PATIENT,
        shared=False,
        acks_late=True,
        reject_on_worker_lost=True,
        autoretry_for=(OperationalError, IntegrityError),  # database away, or a concurrent writer on SQLite
        retry_backoff=True,
        max_retries=5,
    )
    def update_patient(patient_id: int, model: str) -> str:
        """Run the longitudinal step for one patient and model (name@version) on the cpu queue; idempotent.

        Returns the patient's latest Lung-RADS category ('' when the patient has no dated study).
        """
        if not isinstance(patient_id, int) or isinstance(patient_id, bool):
            raise TypeError(f"patient_id must be an int, got {patient_id!r}")
        if not isinstance(model, str) or "@" not in model:
            raise ValueError(f"model must be name@version, got {model!r}")
        from workers.context import get_context
        from workers.followup import update_patient as follow_up

        report = follow_up(get_context(settings).factory, patient_id, model)
        return report.lungrads or ""

    @app.task(name=NIGHTLY_SCAN, shared=False, acks_late=False, time_limit=NIGHT_TIME_LIMIT_S, soft_time_limit=None)
    def nightly_scan() -> str:
        """Claim tonight and keep the gpu queue fed until the window closes (on the cpu queue).

        Acknowledged on receipt: if its worker dies, the analyses it planned stay in SQL and the
        next night, or a manual ``nightscan scan``, sends them.
        """
        from nightscan.runtime import ingest_sender, session_factory, task_sender
        from scheduler.nightly import run_night

        report = run_night(settings, session_factory(settings), task_sender(settings), ingest=ingest_sender(settings))
        return "claimed by another scheduler" if report is None else report.stopped

    @app.task(
        name=INDEX_OBJECTS,
        bind=True,
        shared=False,
        acks_late=True,
        reject_on_worker_lost=True,
        autoretry_for=(OperationalError, IntegrityError),  # a race on a new series or study: the retry finds it
        retry_backoff=True,
        max_retries=5,
    )
    def index_objects(self: Task, run_id: int, source: str, items: list[list[str | int]]) -> dict[str, int]:
        """Read and record the headers of a batch of archive objects (on the ingest queue).

        Idempotent: a redelivered batch records the same rows again. Unreadable objects are recorded
        as rejected with their reason; transient read errors leave them for the next scan.
        """
        if not isinstance(run_id, int) or not isinstance(source, str) or not isinstance(items, list):
            raise TypeError(f"index_objects(run_id, source, items) got {type(run_id)}, {type(source)}, {type(items)}")
        from concurrent.futures import ThreadPoolExecutor

        from sqlalchemy import update

        from db.engine import transaction
        from db.models import ScanRun
        from scheduler.indexing import read_headers, record_page
        from scheduler.scan import object_from_payload
        from workers.context import get_context

        ctx = get_context(settings)
        objects = [object_from_payload(item) for item in items]
        with ThreadPoolExecutor(max_workers=settings.fetch_threads) as pool:
            results = read_headers(ctx.storage(source), objects, settings.header_bytes, pool)
        with transaction(ctx.factory) as session:
            counts = record_page(session, results, source, settings.pseudonym_key.get_secret_value())
            session.execute(update(ScanRun).where(ScanRun.id == run_id).values(batches_done=ScanRun.batches_done + 1))
        return dict(counts)


def send_follow_up(app: Celery, factory: sessionmaker[Session], analysis_id: int, *, queue: str) -> None:
    """Send ``update_patient`` for the patient and model of ``analysis_id`` to ``queue`` (the cpu queue).

    The findings are committed already: a failure to send is logged, not raised (the analysis stays done,
    and ``nightscan follow-up`` catches the patient up).
    """
    from db.longitudinal import patient_of_analysis

    try:
        with factory() as session:
            patient_id, model = patient_of_analysis(session, analysis_id)
        app.send_task(UPDATE_PATIENT, args=[patient_id, model], queue=queue)
    except Exception:
        log.exception("analysis %d: could not send the longitudinal step; run nightscan follow-up", analysis_id)


def record_hard_time_limit(settings: Settings, analysis_id: int) -> None:
    """Mark ``analysis_id`` failed: its pool process was killed at the hard time limit.

    Runs in the worker's main process, which forks pool processes: its engine is made here and disposed
    before returning, so no connection outlives the call into a later fork. If the database is down the
    analysis stays running, and its redelivered message (see ``acks_on_timeout``) claims it again.
    """
    from db.engine import make_engine, make_sessionmaker, transaction
    from db.results import record_failure

    soft, hard = time_limits(settings)
    engine = make_engine(settings.resolved_database_url)
    try:
        with transaction(make_sessionmaker(engine)) as session:
            record_failure(
                session,
                analysis_id,
                f"killed at the hard time limit of {hard} s: it did not stop at the soft limit of {soft} s",
            )
        log.warning("analysis %d: killed at the hard time limit of %d s; recorded failed", analysis_id, hard)
    except Exception:
        log.exception("analysis %d: killed at the hard time limit; could not record it", analysis_id)
    finally:
        engine.dispose()
