"""``nightscan scan``: list an archive, index what is new or changed, plan, commit, then enqueue.

Incremental: an object already recorded with the same key, ETag and size is never fetched again,
so a second scan of an unchanged archive reads no object and enqueues nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from sqlalchemy.orm import Session, sessionmaker

from db.engine import transaction
from db.models import utcnow
from nightscan.pseudonym import redact_key
from nightscan.settings import Settings
from nightscan.storage import ObjectInfo, Storage, StorageError, open_storage
from scheduler.headers import Header, RejectedObjectError, fetch_header_bytes, fetch_tail, read_header
from scheduler.indexing import known_objects, mark_deleted, mark_seen, record_object
from scheduler.planning import enqueue_planned, plan_analyses

log = logging.getLogger(__name__)

MIN_SLICES = 16


@dataclass
class ScanReport:
    """Counts of one scan."""

    listed: int = 0
    unchanged: int = 0
    status: dict[str, int] = field(default_factory=dict)
    errors: int = 0  # transient read errors: left unrecorded, retried by the next scan
    deleted: int = 0
    planned: int = 0
    enqueued: int = 0


def scan(
    source_url: str,
    settings: Settings,
    factory: sessionmaker[Session],
    send: Callable[[int], None] | None,
    on_page: Callable[[int], None] | None = None,
) -> ScanReport:
    """Scan ``source_url``; ``send(analysis_id)`` enqueues one study (None: plan but do not enqueue)."""
    storage = open_storage(source_url, settings)
    report = ScanReport()
    listing_started = utcnow()
    with ThreadPoolExecutor(max_workers=settings.fetch_threads) as pool:
        for page in storage.list():
            keys = [obj.key for obj in page]
            with factory() as session:
                known = known_objects(session, source_url, keys)
            todo = [o for o in page if known.get(o.key) != (o.etag, o.size)]
            results = list(pool.map(lambda o: _read(storage, o, settings.header_bytes), todo))
            with transaction(factory) as session:
                _record(session, results, source_url, settings.pseudonym_key.get_secret_value(), report)
                mark_seen(session, source_url, keys, listing_started)
            report.listed += len(page)
            report.unchanged += len(page) - len(todo)
            if on_page:
                on_page(len(page))
    with transaction(factory) as session:
        report.deleted = mark_deleted(session, source_url, listing_started)
        report.planned = len(plan_analyses(session, settings.pipeline, settings.detector, MIN_SLICES))
    if send is not None:
        with factory() as session:
            report.enqueued = enqueue_planned(session, send)
    log.info("scan of %s: %s", source_url, report)
    return report


def _read(storage: Storage, obj: ObjectInfo, header_bytes: int) -> tuple[ObjectInfo, Header | None, str | None]:
    """Header of one object, or the reason it is rejected; (obj, None, None) on a transient error."""
    try:
        data = fetch_header_bytes(storage, obj, header_bytes)
        return obj, read_header(obj, data, fetch_tail(storage, obj, data)), None
    except RejectedObjectError as exc:
        log.info("rejected %s: %s", redact_key(obj.key), exc)
        return obj, None, str(exc)
    except StorageError as exc:
        log.warning("could not read %s, will retry next scan: %s", redact_key(obj.key), type(exc).__name__)
        return obj, None, None


def _record(
    session: Session,
    results: Iterable[tuple[ObjectInfo, Header | None, str | None]],
    source: str,
    secret: str,
    report: ScanReport,
) -> None:
    for obj, header, reason in results:
        if header is None and reason is None:
            report.errors += 1
            continue
        status = record_object(session, source, obj, header, reason, secret)
        report.status[status.value] = report.status.get(status.value, 0) + 1
