"""Celery tasks: thin wrappers that validate the payload (IDs only) and call the pipeline."""

from __future__ import annotations

import logging

from celery import Celery, Task

from nightscan.settings import Settings
from workers.app import ANALYZE_STUDY, NIGHTLY_SCAN

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
        from nightscan.runtime import session_factory, task_sender
        from scheduler.nightly import run_night

        report = run_night(settings, session_factory(settings), task_sender(settings))
        return "claimed by another scheduler" if report is None else report.stopped
