"""The shapes the read API returns and the exports write (pydantic models, so the OpenAPI schema shows them).

Units are in the field names: ``_mm`` millimetres, ``_mm3`` cubic millimetres, ``_days`` days. Patients
appear only by ``patient_key``, the keyed hash of their PatientID; no real identifier is ever returned.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

T = TypeVar("T")

MAX_LIMIT = 500
"""Most rows one page may hold."""
MAX_OFFSET = 1_000_000
"""Largest offset a page may start at (deeper paging: narrow the filters)."""


class Out(BaseModel):
    """Base of every response model: built from ORM rows or dicts, no extra fields."""

    model_config = ConfigDict(from_attributes=True, extra="forbid")


class Page(Out, Generic[T]):
    """One page of a list: ``items``, where it starts, how many it may hold, how many match in all (None
    where not counted) and the offset of the next page (None on the last page)."""

    items: list[T]
    limit: int
    offset: int
    total: int | None
    next_offset: int | None


class PatientStatusOut(Out):
    """A patient's latest result under one model (from ``patient_status``)."""

    model: str
    latest_study_date: date | None = None
    lungrads: str | None = None
    brock_max: float | None = Field(default=None, description="Highest Brock malignancy probability, 0..1.")
    vdt_min_days: float | None = Field(default=None, description="Shortest volume doubling time, days.")
    follow_up_due: date | None = None
    n_lesions: int | None = None


class PatientOut(Out):
    """A patient, pseudonymous: the keyed hash of PatientID, sex, studies and the latest status per model."""

    patient_key: str
    sex: str | None
    n_studies: int
    first_study_date: date | None
    last_study_date: date | None
    status: list[PatientStatusOut] = []


class AnalysisOut(Out):
    """One analysis of a study by one model version."""

    id: int
    model: str
    pipeline: str
    status: str
    series_instance_uid: str
    classifier: str | None
    study_score: float | None = Field(description="Study-level abnormality score, 0..1.")
    n_findings: int
    lungrads: str | None = None
    finished_at: datetime | None
    error: str | None


class SeriesOut(Out):
    """One series of a study and its geometry (mm)."""

    series_instance_uid: str
    modality: str
    series_number: int | None
    slice_thickness_mm: float | None
    rows: int | None
    columns: int | None
    n_slices: int


class StudyOut(Out):
    """A study: date, the patient's age then (years), its analyses."""

    study_instance_uid: str
    patient_key: str
    study_date: date | None
    patient_age_years: float | None
    analyses: list[AnalysisOut] = []


class StudyDetailOut(StudyOut):
    """A study with its series."""

    series: list[SeriesOut] = []


class FindingOut(Out):
    """One finding: centre in patient coordinates (mm), sizes (mm, mm3), scores (0..1), source slice."""

    id: int
    analysis_id: int
    study_instance_uid: str
    study_date: date | None
    patient_key: str
    model: str
    ordinal: int
    lesion: str | None = Field(default=None, description='The tracked lesion\'s label, e.g. "L1".')
    label: str
    score: float
    probability: float | None
    nodule_type: str | None
    center_x_mm: float
    center_y_mm: float
    center_z_mm: float
    diameter_mm: float
    long_axis_mm: float | None
    short_axis_mm: float | None
    volume_mm3: float | None
    solid_component_mm: float | None
    sop_instance_uid: str | None
    frame_number: int | None


class RunOut(Out):
    """One scan run of the scheduler."""

    id: int
    source: str
    night: date | None
    started_at: datetime
    finished_at: datetime | None
    until: datetime | None
    status: str
    counts: dict[str, int] | None
    error: str | None
    batches_sent: int
    batches_done: int


class ModelOut(Out):
    """A registered model: reference, weights hash, categories, threshold and measured metrics."""

    ref: str
    name: str
    version: str
    sha256: str
    categories: list[str]
    score_threshold: float
    provisional: bool
    trained_at: str
    metrics: dict[str, Any]


class LesionPointOut(Out):
    """One lesion at one study: its finding, centre in patient coordinates (mm), sizes (mm, mm3)."""

    study_instance_uid: str
    study_date: date | None
    analysis_id: int
    finding_id: int
    diameter_mm: float
    long_axis_mm: float | None
    short_axis_mm: float | None
    volume_mm3: float | None
    nodule_type: str | None
    center_x_mm: float
    center_y_mm: float
    center_z_mm: float


class LesionOut(Out):
    """A lesion tracked across studies: label ("L1"), status, latest size (mm), growth, risk."""

    label: str
    status: str
    nodule_type: str | None
    first_seen: date | None
    last_seen: date | None
    diameter_mm: float | None
    vdt_days: float | None = Field(description="Volume doubling time, days.")
    vdt_shortest_days: float | None = Field(
        None, description="Shortest VDT (days) the two volumes allow, given the measurements' noise."
    )
    vdt_longest_days: float | None = Field(
        None, description="Longest VDT (days) the two volumes allow; null with a VDT: growth within the noise."
    )
    brock_probability: float | None = Field(description="Brock malignancy probability, 0..1.")
    points: list[LesionPointOut] = []


class TimelineStudyOut(Out):
    """One study of the patient: this model's analysis of it (if any) and its assessment (if made)."""

    study_instance_uid: str
    study_date: date | None
    analysis_id: int | None
    analysis_status: str | None
    lungrads: str | None
    reason: str | None
    brock_max: float | None = Field(description="Highest Brock probability of its nodules, 0..1.")
    vdt_min_days: float | None = Field(description="Shortest volume doubling time, days.")
    follow_up_due: date | None


class TimelineOut(Out):
    """A patient's history under one model: the latest risk, each study (oldest first), each lesion."""

    patient_key: str
    sex: str | None
    model: str
    risk: PatientStatusOut | None
    studies: list[TimelineStudyOut]
    lesions: list[LesionOut]


class WorklistItemOut(Out):
    """A patient who needs attention under one model, and why."""

    patient_key: str
    model: str
    latest_study_date: date | None
    lungrads: str
    brock_max: float | None
    vdt_min_days: float | None = Field(description="Shortest volume doubling time, days.")
    follow_up_due: date | None
    n_lesions: int
    reasons: list[str]


class AuditOut(Out):
    """One recorded API request."""

    id: int
    token_id: int | None
    token_name: str | None
    method: str
    route: str
    status_code: int
    rows: int | None
    duration_ms: float
    at: datetime
