"""``nightscan scan``: list an archive, index what is new or changed, plan, commit, then enqueue.

Incremental: an object already recorded with the same key, ETag and size is never fetched again,
so a second scan of an unchanged archive reads no object and enqueues nothing.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime
from fnmatch import fnmatchcase
from functools import partial

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from db.engine import retry_on_conflict, transaction
from db.models import Analysis, AnalysisStatus, RunStatus, ScanRun, utcnow
from nightscan.settings import Settings
from nightscan.storage import ObjectInfo, Storage, open_storage
from scheduler.discovery import list_pages
from scheduler.indexing import HeaderResult, known_objects, mark_deleted, mark_seen, read_headers, record_page
from scheduler.planning import enqueue_planned, plan_analyses, reconcile
from scheduler.reanalysis import follow_new_studies

log = logging.getLogger(__name__)


@dataclass
class ScanReport:
    """Counts of one scan, and how its enqueueing ended."""

    listed: int = 0  # objects considered (after include and exclude patterns)
    excluded: int = 0
    unchanged: int = 0
    status: dict[str, int] = field(default_factory=dict)
    errors: int = 0  # transient read errors: left unrecorded, retried by the next scan
    deleted: int = 0
    planned: int = 0
    waiting: int = 0  # studies whose series changed within the quiet time
    reconciled: int = 0
    batches_sent: int = 0  # ingest tasks sent, when headers are read by workers
    batches_done: int = 0
    enqueued: int = 0
    remaining: int = 0  # planned but not sent: the window closed, or enqueueing was not asked for
    stopped: str = "done"


def scan(
    source_url: str,
    settings: Settings,
    factory: sessionmaker[Session],
    send: Callable[[int], None] | None,
    on_page: Callable[[int, ScanReport], None] | None = None,
    *,
    until: datetime | None = None,
    wait_while_full: bool = False,
    run_id: int | None = None,
    storage: Storage | None = None,
    ingest: Callable[[int, str, list[list[str | int]]], None] | None = None,
) -> ScanReport:
    """Scan ``source_url``, plan, then enqueue with ``send(analysis_id)`` (None: plan only).

    At most ``settings.max_outstanding`` analyses are queued or running at once; nothing is sent
    at or after ``until``. With ``wait_while_full`` the scan keeps sending as analyses finish, until
    everything planned is sent or the window closes; otherwise it sends one round and returns. The
    run and its counts are recorded in ``scan_runs`` (in row ``run_id`` when the caller claimed one).
    ``storage`` replaces the one opened from ``source_url`` (a benchmark counts requests with it).
    With ``ingest(run_id, source, batch)``, headers are read by workers on the ingest queue, a batch
    of objects per task, and planning waits (up to ``settings.ingest_wait_s``) until they are recorded.
    """
    if run_id is None:
        with transaction(factory) as session:
            run = ScanRun(source=source_url, status=RunStatus.RUNNING, until=until)
            session.add(run)
        run_id = run.id
    report = ScanReport()
    try:
        send_batch = None if ingest is None else (lambda batch: ingest(run_id, source_url, batch))
        _index(
            storage or open_storage(source_url, settings), source_url, settings, factory, report, on_page, send_batch
        )
        if report.batches_sent:
            with transaction(factory) as session:
                session.execute(update(ScanRun).where(ScanRun.id == run_id).values(batches_sent=report.batches_sent))
            report.batches_done = wait_for_batches(
                factory, run_id, report.batches_sent, timeout_s=settings.ingest_wait_s
            )
        now = utcnow()
        with transaction(factory) as session:
            report.reconciled = reconcile(session, lease_s=settings.analysis_lease_s, now=now)
        plan = retry_on_conflict(
            factory,
            lambda session: plan_analyses(
                session, settings.pipeline, settings.detector, quiet_s=settings.series_quiet_s, now=now
            ),
        )
        report.planned, report.waiting = len(plan.planned), plan.waiting
        report.planned += retry_on_conflict(
            factory,
            lambda session: follow_new_studies(
                session,
                pipeline=settings.pipeline,
                current_model=settings.detector,
                quiet_s=settings.series_quiet_s,
                now=now,
            ),
        )
        if send is not None:
            _send_all(factory, send, settings, report, until, wait_while_full)
        else:
            with factory() as session:
                report.remaining = session.scalar(
                    select(func.count()).select_from(Analysis).where(Analysis.status == AnalysisStatus.PLANNED)
                )
            report.stopped = "not_enqueued"
    except BaseException as exc:
        _finish(factory, run_id, report, RunStatus.FAILED, f"{type(exc).__name__}: {exc}")
        raise
    status = RunStatus.WINDOW_CLOSED if report.stopped == "window_closed" else RunStatus.FINISHED
    _finish(factory, run_id, report, status, None)
    log.info("scan of %s: %s", source_url, report)
    return report


def _index(
    storage: Storage,
    source_url: str,
    settings: Settings,
    factory: sessionmaker[Session],
    report: ScanReport,
    on_page: Callable[[int, ScanReport], None] | None,
    send_batch: Callable[[list[list[str | int]]], None] | None,
) -> None:
    """List ``source_url`` page by page and record what is new or changed (or send it to ingest workers)."""
    listing_started = utcnow()
    secret = settings.pseudonym_key.get_secret_value()
    with ThreadPoolExecutor(max_workers=settings.fetch_threads) as pool:
        for listed in list_pages(storage, settings.list_parallel):
            page = [obj for obj in listed if wanted(obj.key, settings.archive_include, settings.archive_exclude)]
            report.excluded += len(listed) - len(page)
            keys = [obj.key for obj in page]
            with factory() as session:
                known = known_objects(session, source_url, keys)
            todo = [o for o in page if known.get(o.key) != (o.etag, o.size)]
            results = read_headers(storage, todo, settings.header_bytes, pool) if send_batch is None else []

            record = partial(
                _record_page, results=results, source=source_url, secret=secret, keys=keys, seen_at=listing_started
            )
            _count(report, retry_on_conflict(factory, record))
            if send_batch is not None:
                for start in range(0, len(todo), settings.ingest_batch_size):
                    send_batch([_payload(o) for o in todo[start : start + settings.ingest_batch_size]])
                    report.batches_sent += 1
            report.listed += len(page)
            report.unchanged += len(page) - len(todo)
            if on_page:
                on_page(len(listed), report)
    with transaction(factory) as session:
        report.deleted = mark_deleted(
            session,
            source_url,
            listing_started,
            lambda key: wanted(key, settings.archive_include, settings.archive_exclude),
        )


def _send_all(
    factory: sessionmaker[Session],
    send: Callable[[int], None],
    settings: Settings,
    report: ScanReport,
    until: datetime | None,
    wait_while_full: bool,
) -> None:
    while True:
        with factory() as session:
            round_ = enqueue_planned(session, send, max_outstanding=settings.max_outstanding or None, until=until)
        report.enqueued += round_.sent
        report.remaining, report.stopped = round_.remaining, round_.stopped
        if round_.stopped != "backpressure" or not wait_while_full:
            return
        time.sleep(settings.enqueue_poll_s)


def _finish(
    factory: sessionmaker[Session], run_id: int, report: ScanReport, status: RunStatus, error: str | None
) -> None:
    counts = {k: v for k, v in asdict(report).items() if isinstance(v, int)} | {
        f"objects_{k}": v for k, v in report.status.items()
    }
    with transaction(factory) as session:
        session.execute(
            update(ScanRun)
            .where(ScanRun.id == run_id)
            .values(status=status, finished_at=utcnow(), counts=counts, error=error)
        )


def wanted(key: str, include: list[str], exclude: list[str]) -> bool:
    """True when ``key`` matches an include pattern (or there are none) and no exclude pattern (globs)."""
    if include and not any(fnmatchcase(key, pattern) for pattern in include):
        return False
    return not any(fnmatchcase(key, pattern) for pattern in exclude)


def _record_page(
    session: Session, *, results: list[HeaderResult], source: str, secret: str, keys: list[str], seen_at: datetime
) -> Counter[str]:
    """Record a page's header results (if any) and mark all its keys as seen, in one transaction."""
    counts = record_page(session, results, source, secret) if results else Counter()
    mark_seen(session, source, keys, seen_at)
    return counts


def _count(report: ScanReport, counts: Counter[str]) -> None:
    report.errors += counts.pop("errors", 0)
    for status, n in counts.items():
        report.status[status] = report.status.get(status, 0) + n


def _payload(obj: ObjectInfo) -> list[str | int]:
    """An object as an ingest task carries it: [key, ETag, size, last-modified ISO 8601] (JSON only)."""
    return [obj.key, obj.etag, obj.size, obj.last_modified.isoformat()]


def object_from_payload(item: list) -> ObjectInfo:  # type: ignore[type-arg]
    """Inverse of :func:`_payload`, on the worker."""
    key, etag, size, modified = item
    return ObjectInfo(key=str(key), etag=str(etag), size=int(size), last_modified=datetime.fromisoformat(modified))


def wait_for_batches(
    factory: sessionmaker[Session], run_id: int, sent: int, *, timeout_s: float, poll_s: float = 0.5
) -> int:
    """Wait until the ingest workers have recorded ``sent`` batches of run ``run_id``; how many they did."""
    deadline = time.monotonic() + timeout_s
    while True:
        with factory() as session:
            done = session.scalar(select(ScanRun.batches_done).where(ScanRun.id == run_id)) or 0
        if done >= sent or time.monotonic() > deadline:
            return done
        time.sleep(poll_s)
