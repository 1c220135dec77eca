"""Record listed archive objects and their headers: patients, studies, series, instances.

Every object ends up as a row of ``archive_objects``: indexed, rejected (with the reason), a duplicate
upload of an instance already indexed (counted once), or deleted. Only the keyed hash of PatientID
is stored.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from db.models import ArchiveObject, Instance, ObjectStatus, Patient, Series, Study, utcnow
from nightscan.pseudonym import patient_key
from nightscan.storage import ObjectInfo
from scheduler.headers import Header

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


def record_object(
    session: Session, source: str, obj: ObjectInfo, header: Header | None, reason: str | None, secret: str
) -> ObjectStatus:
    """Upsert ``obj`` and, for an image, its instance and the series, study and patient above it."""
    with session.no_autoflush:  # the row is complete before anything is flushed
        status = _record(session, source, obj, header, reason, secret)
    session.flush()
    return status


def _record(
    session: Session, source: str, obj: ObjectInfo, header: Header | None, reason: str | None, secret: str
) -> ObjectStatus:
    row = session.scalar(select(ArchiveObject).where(ArchiveObject.source == source, ArchiveObject.key == obj.key))
    if row is None:
        row = ArchiveObject(source=source, key=obj.key)
        session.add(row)
    row.etag, row.size, row.last_modified, row.indexed_at = obj.etag, obj.size, obj.last_modified, utcnow()
    if row.instance is not None and (header is None or row.instance.sop_instance_uid != header.sop_instance_uid):
        session.delete(row.instance)  # the object changed: its old instance goes
        session.flush()
    if header is None:
        row.status, row.reason = ObjectStatus.REJECTED, reason
        return row.status
    existing = session.scalar(select(Instance).where(Instance.sop_instance_uid == header.sop_instance_uid))
    if existing is not None and existing.archive_object is not row:
        if existing.archive_object.status == ObjectStatus.INDEXED:
            row.status = ObjectStatus.DUPLICATE
            row.reason = f"duplicate of {existing.archive_object.key!r} (same SOP Instance UID)"
            return row.status
        existing.archive_object = row  # the previous holder is gone: this object takes over
    row.status, row.reason = ObjectStatus.INDEXED, None
    series = _series(session, header, secret)
    instance = existing or Instance(sop_instance_uid=header.sop_instance_uid, archive_object=row)
    instance.series = series
    instance.sop_class_uid = header.sop_class_uid
    instance.transfer_syntax_uid = header.transfer_syntax_uid
    instance.instance_number = header.instance_number
    instance.image_position = list(header.image_position) if header.image_position else None
    session.add(instance)
    return row.status


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


def _series(session: Session, header: Header, secret: str) -> Series:
    series = session.scalar(select(Series).where(Series.series_instance_uid == header.series_instance_uid))
    if series is None:
        series = Series(series_instance_uid=header.series_instance_uid, study=_study(session, header, secret))
        session.add(series)
    series.modality = header.modality
    series.series_number = header.series_number
    series.frame_of_reference_uid = header.frame_of_reference_uid
    series.image_type = list(header.image_type)
    series.image_orientation = list(header.image_orientation) if header.image_orientation else None
    series.slice_thickness_mm = header.slice_thickness_mm
    series.rows, series.columns = header.rows, header.columns
    series.updated_at = utcnow()
    return series


def _study(session: Session, header: Header, secret: str) -> Study:
    study = session.scalar(select(Study).where(Study.study_instance_uid == header.study_instance_uid))
    if study is None:
        study = Study(
            study_instance_uid=header.study_instance_uid,
            patient=_patient(session, header, secret),
            study_date=header.study_date,
            patient_age_years=header.patient_age_years,
        )
        session.add(study)
    return study


def _patient(session: Session, header: Header, secret: str) -> Patient:
    key = patient_key(header.patient_id, secret)
    patient = session.scalar(select(Patient).where(Patient.patient_key == key))
    if patient is None:
        patient = Patient(patient_key=key, sex=header.patient_sex if header.patient_sex in ("M", "F") else None)
        session.add(patient)
        session.flush()
    return patient
