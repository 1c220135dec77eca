"""SQLAlchemy 2.x models: the archive index (objects, instances, series, studies, patients) and results.

No business rules here. Every enumerated value is an ``Enum`` stored as a string with a CHECK
constraint, so SQLite and PostgreSQL hold the same schema. Lengths are in millimetres (``_mm``),
volumes in cubic millimetres (``_mm3``), durations in seconds (``_s``).
"""

from __future__ import annotations

import enum
from datetime import UTC, date, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    """The current time, timezone-aware (UTC)."""
    return datetime.now(UTC)


class Base(DeclarativeBase):
    """Declarative base with a stable constraint naming convention (Alembic depends on it)."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class ObjectStatus(enum.StrEnum):
    """What became of one listed archive object."""

    INDEXED = "indexed"  # a DICOM image instance, recorded in ``instances``
    REJECTED = "rejected"  # not usable; ``reason`` says why
    DUPLICATE = "duplicate"  # another object already holds this SOP Instance UID
    DELETED = "deleted"  # no longer in the archive


class AnalysisStatus(enum.StrEnum):
    """Life of one analysis: planned, queued (sent to the broker), running, then done or failed."""

    PLANNED = "planned"
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


def _enum(cls: type[enum.Enum], name: str) -> Enum:
    return Enum(
        cls,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=16,
        values_callable=lambda members: [m.value for m in members],
    )


class Patient(Base):
    """A patient, known only by a keyed hash (HMAC-SHA256) of PatientID; no name is ever stored."""

    __tablename__ = "patients"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_key: Mapped[str] = mapped_column(String(64), unique=True)
    sex: Mapped[str | None] = mapped_column(String(1))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    studies: Mapped[list[Study]] = relationship(back_populates="patient")


class Study(Base):
    """A DICOM study (StudyInstanceUID)."""

    __tablename__ = "studies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    study_date: Mapped[date | None] = mapped_column(Date)
    patient_age_years: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    patient: Mapped[Patient] = relationship(back_populates="studies")
    series: Mapped[list[Series]] = relationship(back_populates="study")
    analyses: Mapped[list[Analysis]] = relationship(back_populates="study")


class Series(Base):
    """A DICOM series (SeriesInstanceUID) with the geometry its instances' headers declare."""

    __tablename__ = "series"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    series_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    modality: Mapped[str] = mapped_column(String(16))
    series_number: Mapped[int | None] = mapped_column(Integer)
    frame_of_reference_uid: Mapped[str | None] = mapped_column(String(64))
    image_type: Mapped[list[str] | None] = mapped_column(JSON)
    image_orientation: Mapped[list[float] | None] = mapped_column(JSON)
    slice_thickness_mm: Mapped[float | None] = mapped_column(Float)
    rows: Mapped[int | None] = mapped_column(Integer)
    columns: Mapped[int | None] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    study: Mapped[Study] = relationship(back_populates="series")
    instances: Mapped[list[Instance]] = relationship(back_populates="series")


class ArchiveObject(Base):
    """Every object listed in a source archive, and what became of it."""

    __tablename__ = "archive_objects"
    __table_args__ = (UniqueConstraint("source", "key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    source: Mapped[str] = mapped_column(String(1024))
    key: Mapped[str] = mapped_column(String(1024))
    etag: Mapped[str] = mapped_column(String(128))
    size: Mapped[int] = mapped_column(BigInteger)  # bytes
    last_modified: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    status: Mapped[ObjectStatus] = mapped_column(_enum(ObjectStatus, "object_status"))
    reason: Mapped[str | None] = mapped_column(Text)
    indexed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    instance: Mapped[Instance | None] = relationship(back_populates="archive_object")


class Instance(Base):
    """A DICOM image instance (SOPInstanceUID) and the archive object that holds it."""

    __tablename__ = "instances"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    object_id: Mapped[int] = mapped_column(ForeignKey("archive_objects.id"), unique=True)
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id"), index=True)
    sop_class_uid: Mapped[str] = mapped_column(String(64))
    transfer_syntax_uid: Mapped[str | None] = mapped_column(String(64))
    instance_number: Mapped[int | None] = mapped_column(Integer)
    image_position: Mapped[list[float] | None] = mapped_column(JSON)
    n_frames: Mapped[int] = mapped_column(Integer, default=1, server_default="1")  # slices in this object

    archive_object: Mapped[ArchiveObject] = relationship(back_populates="instance")
    series: Mapped[Series] = relationship(back_populates="instances")


class Analysis(Base):
    """One run of a pipeline's model version on one study: unique per (study, pipeline, model)."""

    __tablename__ = "analyses"
    __table_args__ = (
        UniqueConstraint("study_id", "pipeline", "model"),
        Index("ix_analyses_status", "status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id"))
    pipeline: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(128))  # name@version
    model_sha256: Mapped[str | None] = mapped_column(String(64))
    preprocessing: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[AnalysisStatus] = mapped_column(_enum(AnalysisStatus, "analysis_status"))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    timings_s: Mapped[dict[str, float] | None] = mapped_column(JSON)
    inputs: Mapped[list[list[str]] | None] = mapped_column(JSON)  # [[key, etag], ...]
    # the volume the model saw: shape (z, y, x), spacing_mm (z, y, x), corrections (resampling, in words)
    volume: Mapped[dict[str, object] | None] = mapped_column(JSON)
    classifier: Mapped[str | None] = mapped_column(String(128))  # candidate classifier name@version, if any
    classifier_sha256: Mapped[str | None] = mapped_column(String(64))
    # the spiculation model (name@version) behind the findings' spiculation, if any (None: the hand-made score)
    spiculation_model: Mapped[str | None] = mapped_column(String(128))
    spiculation_sha256: Mapped[str | None] = mapped_column(String(64))
    study_score: Mapped[float | None] = mapped_column(Float)  # study-level abnormality score, 0..1
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    queued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    study: Mapped[Study] = relationship(back_populates="analyses")
    series: Mapped[Series] = relationship()
    findings: Mapped[list[Finding]] = relationship(back_populates="analysis", order_by="Finding.ordinal")


class SeriesSelection(Base):
    """Why a series was, or was not, chosen for a pipeline: the latest decision of the rules."""

    __tablename__ = "series_selections"
    __table_args__ = (UniqueConstraint("series_id", "pipeline"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id"))
    pipeline: Mapped[str] = mapped_column(String(64))
    selected: Mapped[bool] = mapped_column(Boolean)
    reason: Mapped[str] = mapped_column(Text)
    decided_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    series: Mapped[Series] = relationship()


class RunStatus(enum.StrEnum):
    """How a scan run ended."""

    RUNNING = "running"
    FINISHED = "finished"  # everything planned was sent
    WINDOW_CLOSED = "window_closed"  # the overnight window ended first; the next run resumes
    FAILED = "failed"


class ScanRun(Base):
    """One run of the scheduler over a source: when, how far it got, and its counts.

    A nightly run names its ``night`` (the date the night starts): (source, night) is unique, so
    when two schedulers start the same night, one claims it and the other does nothing.
    """

    __tablename__ = "scan_runs"
    __table_args__ = (UniqueConstraint("source", "night"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    source: Mapped[str] = mapped_column(String(1024))
    night: Mapped[date | None] = mapped_column(Date)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # end of the overnight window
    status: Mapped[RunStatus] = mapped_column(_enum(RunStatus, "run_status"))
    counts: Mapped[dict[str, int] | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    batches_sent: Mapped[int] = mapped_column(Integer, default=0)  # header-indexing tasks on the ingest queue
    batches_done: Mapped[int] = mapped_column(Integer, default=0)


class Finding(Base):
    """One detected candidate: centre in patient coordinates (mm), size, score, source slice."""

    __tablename__ = "findings"
    __table_args__ = (UniqueConstraint("analysis_id", "ordinal"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    analysis_id: Mapped[int] = mapped_column(ForeignKey("analyses.id"))
    ordinal: Mapped[int] = mapped_column(Integer)
    label: Mapped[str] = mapped_column(String(32))
    score: Mapped[float] = mapped_column(Float)
    center_x_mm: Mapped[float] = mapped_column(Float)
    center_y_mm: Mapped[float] = mapped_column(Float)
    center_z_mm: Mapped[float] = mapped_column(Float)
    diameter_mm: Mapped[float] = mapped_column(Float)
    extent_mm: Mapped[list[float]] = mapped_column(JSON)  # (z, y, x) extent in mm
    sop_instance_uid: Mapped[str | None] = mapped_column(String(64))  # slice through the centre
    frame_number: Mapped[int | None] = mapped_column(Integer)  # 1-based frame of a multi-frame instance
    # measured from a segmentation (models/measurement.py), mm and mm3; None where it could not be measured
    nodule_type: Mapped[str | None] = mapped_column(String(16))  # solid, part-solid, ground-glass
    probability: Mapped[float | None] = mapped_column(Float)  # the candidate classifier's nodule probability
    long_axis_mm: Mapped[float | None] = mapped_column(Float)
    short_axis_mm: Mapped[float | None] = mapped_column(Float)
    volume_mm3: Mapped[float | None] = mapped_column(Float)
    solid_component_mm: Mapped[float | None] = mapped_column(Float)  # part-solid nodules: the core's mean diameter
    spiculation: Mapped[float | None] = mapped_column(Float)  # 0 to 1; spiculated from measurement.SPICULATED_SCORE
    # the lesion this finding was tracked to by the longitudinal step; None: not a nodule, or not yet tracked
    lesion_id: Mapped[int | None] = mapped_column(ForeignKey("lesions.id", ondelete="SET NULL"), index=True)

    analysis: Mapped[Analysis] = relationship(back_populates="findings")
    lesion: Mapped[Lesion | None] = relationship(back_populates="findings")


class Lesion(Base):
    """One nodule of one patient tracked across studies by one detector version (``model``).

    ``label`` numbers the patient's lesions 1, 2, ... per (patient, model) in order of first sighting
    and stays the same when the longitudinal step runs again (shown ``L1``, ``L2``). Sizes in mm, VDT in
    days; ``vdt_days`` is None with fewer than two observations or when the lesion did not grow.
    ``vdt_shortest_days`` and ``vdt_longest_days`` bound the VDT its two volumes allow
    (:func:`screening.growth.vdt_range_days`); the longest is None when the growth lies within the noise of the
    measurements (not shown), and both are None with no ``vdt_days``.
    """

    __tablename__ = "lesions"
    __table_args__ = (UniqueConstraint("patient_id", "model", "label"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    model: Mapped[str] = mapped_column(String(128))  # detector name@version whose findings it tracks
    label: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))  # 'present' (in the latest study) or 'resolved'
    nodule_type: Mapped[str | None] = mapped_column(String(16))  # latest: solid, part_solid, ground_glass
    first_seen: Mapped[date | None] = mapped_column(Date)
    last_seen: Mapped[date | None] = mapped_column(Date)
    diameter_mm: Mapped[float | None] = mapped_column(Float)  # latest mean diameter
    vdt_days: Mapped[float | None] = mapped_column(Float)  # from its first observation to its latest
    vdt_shortest_days: Mapped[float | None] = mapped_column(Float)
    vdt_longest_days: Mapped[float | None] = mapped_column(Float)  # None: growth within the measurements' noise
    brock_probability: Mapped[float | None] = mapped_column(Float)  # latest, 0..1
    n_observations: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    findings: Mapped[list[Finding]] = relationship(back_populates="lesion")


class Assessment(Base):
    """The Lung-RADS assessment of one analysis (one study by one model version), from the longitudinal step.

    ``lungrads`` is '1', '2', '3', '4A', '4B', '4X', or '0' when the exam is incomplete; ``brock_max`` the
    highest Brock probability (0..1) of its nodules; ``vdt_min_days`` the shortest finite VDT (days) of a
    nodule against the previous study; ``follow_up_due`` the study date plus the management interval;
    ``assumptions`` what the rules assumed (Brock inputs that defaulted, the alignment used, ...).
    """

    __tablename__ = "assessments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    analysis_id: Mapped[int] = mapped_column(ForeignKey("analyses.id"), unique=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    model: Mapped[str] = mapped_column(String(128))
    study_date: Mapped[date | None] = mapped_column(Date)
    lungrads: Mapped[str] = mapped_column(String(4))
    reason: Mapped[str] = mapped_column(Text)
    brock_max: Mapped[float | None] = mapped_column(Float)
    vdt_min_days: Mapped[float | None] = mapped_column(Float)
    follow_up_due: Mapped[date | None] = mapped_column(Date)
    assumptions: Mapped[dict[str, object] | None] = mapped_column(JSON)
    assessed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    analysis: Mapped[Analysis] = relationship()


class PatientStatus(Base):
    """The latest state of one patient under one model version: what the worklist reads.

    ``vdt_min_days`` is the shortest finite VDT (days) among the lesions present; ``n_lesions`` counts them.
    """

    __tablename__ = "patient_status"
    __table_args__ = (
        UniqueConstraint("patient_id", "model"),
        Index("ix_patient_status_model_lungrads", "model", "lungrads"),
        Index("ix_patient_status_model_follow_up_due", "model", "follow_up_due"),
        Index("ix_patient_status_model_vdt_min_days", "model", "vdt_min_days"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"))
    model: Mapped[str] = mapped_column(String(128))
    latest_analysis_id: Mapped[int] = mapped_column(ForeignKey("analyses.id"))
    latest_study_date: Mapped[date | None] = mapped_column(Date)
    lungrads: Mapped[str] = mapped_column(String(4))
    brock_max: Mapped[float | None] = mapped_column(Float)
    vdt_min_days: Mapped[float | None] = mapped_column(Float)
    follow_up_due: Mapped[date | None] = mapped_column(Date)
    n_lesions: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ApiToken(Base):
    """A bearer token of the read API, stored only as the sha256 of the token; its scopes; when revoked."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), index=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[list[str]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ApiAudit(Base):
    """One request to the read API: which token, which route (its template, never a PatientID), outcome.

    ``rows`` is the number of records returned (None where the response carried none, as errors);
    ``duration_ms`` the time the request took, milliseconds.
    """

    __tablename__ = "api_audit"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_id: Mapped[int | None] = mapped_column(ForeignKey("api_tokens.id"), index=True)
    token_name: Mapped[str | None] = mapped_column(String(128))
    method: Mapped[str] = mapped_column(String(8))
    route: Mapped[str] = mapped_column(String(256))
    status_code: Mapped[int] = mapped_column(Integer)
    rows: Mapped[int | None] = mapped_column(Integer)
    duration_ms: Mapped[float] = mapped_column(Float)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
