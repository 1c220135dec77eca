"""Celery tasks: thin wrappers that validate the payload (IDs only) and call the pipeline."""

from __future__ import annotations

import logging

from celery import Celery, Task
from sqlalchemy.exc import IntegrityError, OperationalError

from nightscan.settings import Settings
from workers.app import ANALYZE_STUDY, INDEX_OBJECTS, NIGHTLY_SCAN

log = logging.getLogger(__name__)

RETRY_BACKOFF_S = (10, 60, 300)
NIGHT_TIME_LIMIT_S = 24 * 3600


def register(app: Celery, settings: Settings) -> None:
    """Register nightscan's tasks on ``app``."""

    @app.task(name=ANALYZE_STUDY, bind=True, shared=False, acks_late=True, reject_on_worker_lost=True, max_retries=None)
    def analyze_study(self: Task, analysis_id: int) -> str:
        """Analyse one study (by analysis ID) on the gpu queue; retries only transient errors."""
        if not isinstance(analysis_id, int) or isinstance(analysis_id, bool):
            raise TypeError(f"analysis_id must be an int, got {analysis_id!r}")
        from workers.context import get_context
        from workers.pipeline import TransientError, run_analysis

        try:
            return run_analysis(analysis_id, get_context(settings))
        except TransientError as exc:
            countdown = RETRY_BACKOFF_S[min(self.request.retries, len(RETRY_BACKOFF_S) - 1)]
            raise self.retry(exc=exc, countdown=countdown) from exc

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
