"""The Celery app: three queues, JSON only, at-least-once delivery tuned for long GPU tasks.

Built by :func:`create_app` (never at import). The embedded default broker is kombu's filesystem
transport: messages are files in ``<data_dir>/broker``, shared by every process on one machine, so
``make demo`` needs no server. Production sets ``NIGHTSCAN_BROKER_URL=redis://...``.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.schedules import crontab
from kombu import Exchange, Queue

from nightscan.settings import EMBEDDED_BROKER, Settings
from scheduler.nightly import parse_clock

ANALYZE_STUDY = "nightscan.analyze_study"
NIGHTLY_SCAN = "nightscan.nightly_scan"
INDEX_OBJECTS = "nightscan.index_objects"


def broker_options(settings: Settings) -> dict[str, Any]:
    """Transport options: the visibility timeout for Redis, the message folder for the embedded broker."""
    if settings.resolved_broker_url == EMBEDDED_BROKER:
        folder = settings.broker_folder
        (folder / "processed").mkdir(parents=True, exist_ok=True)
        return {
            "data_folder_in": str(folder),
            "data_folder_out": str(folder),
            "processed_folder": str(folder / "processed"),
            "control_folder": str(folder / "control"),
            "store_processed": False,
            "polling_interval": 0.25,
        }
    return {"visibility_timeout": settings.broker_visibility_timeout_s}


def create_app(settings: Settings) -> Celery:
    """Build the Celery app for ``settings`` and register nightscan's tasks on it."""
    app = Celery("nightscan", broker=settings.resolved_broker_url, set_as_current=False)
    embedded = settings.resolved_broker_url == EMBEDDED_BROKER
    if settings.task_time_limit_s >= settings.broker_visibility_timeout_s:
        raise ValueError(
            f"task_time_limit_s={settings.task_time_limit_s} must be below "
            f"broker_visibility_timeout_s={settings.broker_visibility_timeout_s}, "
            "or Redis redelivers tasks that are still running"
        )
    transport_options = broker_options(settings)
    night_start = parse_clock(settings.night_start, "night_start")
    queues = [
        Queue(name, Exchange(name, type="direct"), routing_key=name)
        for name in (settings.queue_ingest, settings.queue_gpu, settings.queue_cpu)
    ]
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        event_serializer="json",
        task_ignore_result=True,  # completion is tracked in SQL, never in a result backend
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_queues=queues,
        task_default_queue=settings.queue_cpu,
        task_routes={
            ANALYZE_STUDY: {"queue": settings.queue_gpu, "routing_key": settings.queue_gpu},
            NIGHTLY_SCAN: {"queue": settings.queue_cpu, "routing_key": settings.queue_cpu},
            INDEX_OBJECTS: {"queue": settings.queue_ingest, "routing_key": settings.queue_ingest},
        },
        beat_schedule={
            "nightly-scan": {
                "task": NIGHTLY_SCAN,
                "schedule": crontab(hour=night_start.hour, minute=night_start.minute),
                "options": {"queue": settings.queue_cpu},
            }
        },
        beat_schedule_filename=str(settings.data_dir / "celerybeat-schedule"),
        task_time_limit=settings.task_time_limit_s,
        task_soft_time_limit=max(settings.task_time_limit_s - 60, 1),
        broker_transport_options=transport_options,
        result_backend_transport_options=transport_options,
        visibility_timeout=settings.broker_visibility_timeout_s,
        broker_connection_retry_on_startup=True,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        worker_soft_shutdown_timeout=60.0,
        worker_enable_soft_shutdown_on_idle=True,
        worker_enable_remote_control=not embedded,  # no pidbox reply files piling up in the folder
        worker_send_task_events=False,
        worker_hijack_root_logger=False,
    )
    from workers import tasks

    tasks.register(app, settings)
    return app
