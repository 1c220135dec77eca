"""The Celery app: three queues, JSON only, at-least-once delivery tuned for long GPU tasks.

Built by :func:`create_app` (never at import). The embedded default broker is kombu's filesystem
transport: messages are files in ``<data_dir>/broker``, shared by every process on one machine, so
``make demo`` needs no server. Production sets ``NIGHTSCAN_BROKER_URL=redis://...``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from celery import Celery
from celery.schedules import crontab
from celery.signals import worker_process_init
from celery.utils.log import current_process_index
from kombu import Exchange, Queue

from nightscan.settings import EMBEDDED_BROKER, Settings
from scheduler.nightly import parse_clock

ANALYZE_STUDY = "nightscan.analyze_study"
NIGHTLY_SCAN = "nightscan.nightly_scan"
INDEX_OBJECTS = "nightscan.index_objects"
UPDATE_PATIENT = "nightscan.update_patient"

log = logging.getLogger(__name__)


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


def time_limits(settings: Settings) -> tuple[int, int]:
    """The (soft, hard) time limits of a study task in seconds, checked against the visibility timeout.

    The soft limit stops the study, which is recorded failed with the reason; the hard limit kills a pool
    process that did not stop. Both stay below the Redis visibility timeout, and so does every retry wait
    (a retry waits in the worker, unacked), or Redis hands a message still in hand to a second worker.
    """
    hard = settings.task_time_limit_s
    soft = settings.task_soft_time_limit_s if settings.task_soft_time_limit_s is not None else max(hard - 60, 1)
    visibility = settings.broker_visibility_timeout_s
    if not 0 < soft < hard:
        raise ValueError(f"task_soft_time_limit_s={soft} must be above 0 and below task_time_limit_s={hard}")
    if hard >= visibility:
        raise ValueError(
            f"task_time_limit_s={hard} must be below broker_visibility_timeout_s={visibility}, "
            "or Redis redelivers tasks that are still running"
        )
    if any(not 0 <= wait < visibility for wait in settings.retry_backoff_s):
        raise ValueError(
            f"retry_backoff_s={settings.retry_backoff_s} must be between 0 and broker_visibility_timeout_s="
            f"{visibility}, or Redis redelivers a retry while it waits"
        )
    return soft, hard


def create_app(settings: Settings, *, devices: Sequence[str] = ()) -> Celery:
    """Build the Celery app for ``settings`` and register nightscan's tasks on it.

    ``devices``: the GPUs a worker's pool shares (CUDA_VISIBLE_DEVICES entries); with more than one,
    each pool process sees only the one its index picks, so N processes use N GPUs.
    """
    app = Celery("nightscan", broker=settings.resolved_broker_url, set_as_current=False)
    embedded = settings.resolved_broker_url == EMBEDDED_BROKER
    soft_limit, hard_limit = time_limits(settings)
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
            UPDATE_PATIENT: {"queue": settings.queue_cpu, "routing_key": settings.queue_cpu},
        },
        beat_schedule={
            "nightly-scan": {
                "task": NIGHTLY_SCAN,
                "schedule": crontab(hour=night_start.hour, minute=night_start.minute),
                "options": {"queue": settings.queue_cpu},
            }
        },
        beat_schedule_filename=str(settings.data_dir / "celerybeat-schedule"),
        task_time_limit=hard_limit,
        task_soft_time_limit=soft_limit,
        broker_transport_options=transport_options,
        result_backend_transport_options=transport_options,
        visibility_timeout=settings.broker_visibility_timeout_s,
        broker_connection_retry_on_startup=True,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        worker_soft_shutdown_timeout=settings.worker_soft_shutdown_s,  # see nightscan worker: SIGTERM -> soft
        worker_enable_soft_shutdown_on_idle=False,  # an idle worker stops at once; held retries go back to Redis
        worker_enable_remote_control=not embedded,  # no pidbox reply files piling up in the folder
        worker_send_task_events=False,
        worker_hijack_root_logger=False,
    )
    if len(devices) > 1:
        worker_process_init.connect(partial(_pin_device, devices=tuple(devices)), weak=False, dispatch_uid="pin")
    from workers import tasks

    tasks.register(app, settings)
    return app


def _pin_device(*, devices: tuple[str, ...], **_: object) -> None:
    """In a new pool process, before anything touches CUDA: see only the GPU of this process's index."""
    index = current_process_index(base=0) or 0
    os.environ["CUDA_VISIBLE_DEVICES"] = devices[index % len(devices)]
    log.info("pool process %d uses GPU %s", index, devices[index % len(devices)])


@dataclass(frozen=True, slots=True)
class WorkerPlan:
    """How ``nightscan worker`` runs: the pool, its processes, and the GPUs they share (empty on CPU)."""

    pool: str
    concurrency: int
    devices: tuple[str, ...]


def worker_plan(
    queues: Sequence[str],
    settings: Settings,
    *,
    devices: Sequence[str],
    cpus: int,
    pool: str | None = None,
    concurrency: int | None = None,
) -> WorkerPlan:
    """Defaults by queue, each overridable: the gpu queue gets ``1 + prefetch_studies`` prefork processes per
    GPU in ``devices`` (per machine without a GPU, where torch uses every core), which take turns on their
    device (:mod:`workers.device_turn`) while the others fetch, decode, measure and write. Ingest and cpu
    queues: one process per CPU core. A worker that consumes the gpu queue and others follows the gpu rule."""
    if concurrency is not None and concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    gpu = settings.queue_gpu in queues
    default = max(1, len(devices)) * (1 + settings.prefetch_studies) if gpu else max(1, cpus)
    return WorkerPlan(
        pool=pool or "prefork",
        concurrency=concurrency or default,
        devices=tuple(devices) if gpu else (),
    )


def visible_devices() -> list[str]:
    """The GPUs this machine shows, without a CUDA call (CUDA does not survive the pool's fork).

    CUDA_VISIBLE_DEVICES when set (empty or -1: none), else one entry per GPU the NVIDIA driver lists
    in /proc/driver/nvidia/gpus; none without the driver.
    """
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        entries = [d.strip() for d in visible.split(",") if d.strip()]
        return [] if entries[:1] == ["-1"] else entries
    gpus = Path("/proc/driver/nvidia/gpus")
    return [str(i) for i in range(len(list(gpus.iterdir())))] if gpus.is_dir() else []
