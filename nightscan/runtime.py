"""Wiring for commands: a session factory and a task sender built from the settings."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.orm import Session, sessionmaker

from db.engine import make_engine, make_sessionmaker
from nightscan.settings import Settings


def session_factory(settings: Settings) -> sessionmaker[Session]:
    """Sessions on the configured database."""
    return make_sessionmaker(make_engine(settings.resolved_database_url))


def task_sender(settings: Settings) -> Callable[[int], None]:
    """A function that enqueues ``analyze_study(analysis_id)`` on the gpu queue."""
    from workers.app import ANALYZE_STUDY, create_app

    app = create_app(settings)

    def send(analysis_id: int) -> None:
        app.send_task(ANALYZE_STUDY, args=[analysis_id], queue=settings.queue_gpu)

    return send


def ingest_sender(settings: Settings) -> Callable[[int, str, list[list[str | int]]], None] | None:
    """Sends header-indexing batches to the ingest queue when ``index_on_workers`` is set, else None."""
    if not settings.index_on_workers:
        return None
    from workers.app import INDEX_OBJECTS, create_app

    app = create_app(settings)

    def send(run_id: int, source: str, batch: list[list[str | int]]) -> None:
        app.send_task(INDEX_OBJECTS, args=[run_id, source, batch], queue=settings.queue_ingest)

    return send
