"""Celery tasks: thin wrappers that validate the payload (IDs only) and call the pipeline."""

from __future__ import annotations

import logging

from celery import Celery, Task

from nightscan.settings import Settings
from workers.app import ANALYZE_STUDY

log = logging.getLogger(__name__)

RETRY_BACKOFF_S = (10, 60, 300)


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
