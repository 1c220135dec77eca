"""Record listed archive objects and their headers: patients, studies, series, instances.

Every object ends up as a row of ``archive_objects``: indexed, rejected (with the reason), a duplicate
upload of an instance already indexed (counted once), or deleted. Only the keyed hash of PatientID
is stored.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from db.models import ArchiveObject, Instance, ObjectStatus, Patient, Series, Study, utcnow
from nightscan.pseudonym import patient_key, redact_key
from nightscan.storage import ObjectInfo, Storage, StorageError
from scheduler.headers import Header, RejectedObjectError, fetch_header_bytes, fetch_tail, read_header

log = logging.getLogger(__name__)


def known_objects(session: Session, source: str, keys: list[str]) -> dict[str, tuple[str, int]]:
    """Key -> (ETag, size) of those of ``keys`` already recorded (and not deleted) for ``source``."""
    rows = session.execute(
        select(ArchiveObject.key, ArchiveObject.etag, ArchiveObject.size).where(
            ArchiveObject.source == source,
            ArchiveObject.key.in_(keys),
            ArchiveObject.status != ObjectStatus.DELETED,
        )
    )
    return {key: (etag, size) for key, etag, size in rows}


def mark_seen(session: Session, source: str, keys: list[str], when: datetime) -> None:
    """Record that ``keys`` were listed at ``when``."""
    session.execute(
        update(ArchiveObject)
        .where(ArchiveObject.source == source, ArchiveObject.key.in_(keys))
        .values(last_seen_at=when)
    )


class PageIndexer:
    """Records one listed page in a session, fetching each row it needs once.

    The page's existing objects and instances are read in two queries; series, studies and patients
    are looked up once per UID; new rows are written by one flush at the end of the page.
    """

    def __init__(self, session: Session, source: str, secret: str, objects: list[ObjectInfo], sops: list[str]) -> None:
        self.session, self.source, self.secret = session, source, secret
        keys = [o.key for o in objects]
        self.rows = {
            row.key: row
            for row in session.scalars(
                select(ArchiveObject).where(ArchiveObject.source == source, ArchiveObject.key.in_(keys))
            )
        }
        self.instances = {
            i.sop_instance_uid: i for i in session.scalars(select(Instance).where(Instance.sop_instance_uid.in_(sops)))
        }
        self.series: dict[str, Series] = {}
        self.studies: dict[str, Study] = {}
        self.patients: dict[str, Patient] = {}

    def record(self, obj: ObjectInfo, header: Header | None, reason: str | None) -> ObjectStatus:
        """Upsert ``obj`` and, for an image, its instance and the series, study and patient above it."""
        with self.session.no_autoflush:  # rows are complete before anything is flushed
            return self._record(obj, header, reason)

    def _record(self, obj: ObjectInfo, header: Header | None, reason: str | None) -> ObjectStatus:
        session = self.session
        row = self.rows.get(obj.key)
        if row is None:
            row = self.rows[obj.key] = ArchiveObject(source=self.source, key=obj.key)
            session.add(row)
        row.etag, row.size, row.last_modified, row.indexed_at = obj.etag, obj.size, obj.last_modified, utcnow()
        old = row.instance if row.id is not None else None
        if old is not None and (header is None or old.sop_instance_uid != header.sop_instance_uid):
            self.instances.pop(old.sop_instance_uid, None)
            session.delete(old)  # the object changed: its old instance goes
            session.flush()
        if header is None:
            row.status, row.reason = ObjectStatus.REJECTED, reason
            return row.status
        existing = self.instances.get(header.sop_instance_uid)
        if existing is not None and existing.archive_object is not row:
            if existing.archive_object.status == ObjectStatus.INDEXED:
                row.status = ObjectStatus.DUPLICATE
                row.reason = f"duplicate of {existing.archive_object.key!r} (same SOP Instance UID)"
                return row.status
            existing.archive_object = row  # the previous holder is gone: this object takes over
        row.status, row.reason = ObjectStatus.INDEXED, None
        instance = existing or Instance(sop_instance_uid=header.sop_instance_uid, archive_object=row)
        self.instances[header.sop_instance_uid] = instance
        instance.series = self._series(header)
        instance.sop_class_uid = header.sop_class_uid
        instance.transfer_syntax_uid = header.transfer_syntax_uid
        instance.instance_number = header.instance_number
        instance.image_position = list(header.image_position) if header.image_position else None
        instance.n_frames = header.n_frames
        session.add(instance)
        return row.status

    def _series(self, header: Header) -> Series:
        uid = header.series_instance_uid
        if uid in self.series:
            return self.series[uid]
        series = self.session.scalar(select(Series).where(Series.series_instance_uid == uid))
        if series is None:
            series = Series(series_instance_uid=uid, study=self._study(header))
            self.session.add(series)
        series.modality = header.modality
        series.series_number = header.series_number
        series.frame_of_reference_uid = header.frame_of_reference_uid
        series.image_type = list(header.image_type)
        series.image_orientation = list(header.image_orientation) if header.image_orientation else None
        series.slice_thickness_mm = header.slice_thickness_mm
        series.rows, series.columns = header.rows, header.columns
        series.updated_at = utcnow()
        self.series[uid] = series
        return series

    def _study(self, header: Header) -> Study:
        uid = header.study_instance_uid
        if uid not in self.studies:
            study = self.session.scalar(select(Study).where(Study.study_instance_uid == uid))
            if study is None:
                study = Study(
                    study_instance_uid=uid,
                    patient=self._patient(header),
                    study_date=header.study_date,
                    patient_age_years=header.patient_age_years,
                )
                self.session.add(study)
            self.studies[uid] = study
        return self.studies[uid]

    def _patient(self, header: Header) -> Patient:
        key = patient_key(header.patient_id, self.secret)
        if key not in self.patients:
            patient = self.session.scalar(select(Patient).where(Patient.patient_key == key))
            if patient is None:
                sex = header.patient_sex if header.patient_sex in ("M", "F") else None
                patient = Patient(patient_key=key, sex=sex)
                self.session.add(patient)
            self.patients[key] = patient
        return self.patients[key]


def mark_deleted(session: Session, source: str, listing_started: datetime, in_scope: Callable[[str], bool]) -> int:
    """Mark objects not listed since ``listing_started`` as deleted; their instances leave the index.

    Only objects ``in_scope`` (the keys the listing looked at) can be marked: a scan limited by
    include or exclude patterns says nothing about the others. Call only after a listing that
    completed: an interrupted one would see everything as gone. Returns how many were marked.
    """
    count = 0
    for row in session.scalars(
        select(ArchiveObject).where(
            ArchiveObject.source == source,
            ArchiveObject.last_seen_at < listing_started,
            ArchiveObject.status != ObjectStatus.DELETED,
        )
    ):
        if not in_scope(row.key):
            continue
        if row.instance is not None:
            session.delete(row.instance)
        row.status, row.reason = ObjectStatus.DELETED, "no longer listed in the archive"
        count += 1
    return count


HeaderResult = tuple[ObjectInfo, Header | None, str | None]  # (object, header, rejection reason)


def read_headers(
    storage: Storage, objects: list[ObjectInfo], header_bytes: int, pool: ThreadPoolExecutor
) -> list[HeaderResult]:
    """Each object's header, or the reason it is rejected; (obj, None, None) on a transient read error."""
    return list(pool.map(lambda obj: _read(storage, obj, header_bytes), objects))


def _read(storage: Storage, obj: ObjectInfo, header_bytes: int) -> HeaderResult:
    try:
        data = fetch_header_bytes(storage, obj, header_bytes)
        return obj, read_header(obj, data, fetch_tail(storage, obj, data)), None
    except RejectedObjectError as exc:
        log.info("rejected %s: %s", redact_key(obj.key), exc)
        return obj, None, str(exc)
    except StorageError as exc:
        log.warning("could not read %s, will retry next scan: %s", redact_key(obj.key), type(exc).__name__)
        return obj, None, None


def record_page(session: Session, results: list[HeaderResult], source: str, secret: str) -> Counter[str]:
    """Record a page of header results; counts by status, plus ``errors`` (transient: left for the next scan)."""
    readable = [(obj, header, reason) for obj, header, reason in results if header is not None or reason is not None]
    counts: Counter[str] = Counter()
    counts["errors"] = len(results) - len(readable)
    indexer = PageIndexer(
        session, source, secret, [obj for obj, _, _ in readable], [h.sop_instance_uid for _, h, _ in readable if h]
    )
    for obj, header, reason in readable:
        counts[indexer.record(obj, header, reason).value] += 1
    return counts
