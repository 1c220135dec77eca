"""The ground-truth manifest of a synthetic archive, and the clinical truth that follows from it.

For every study: its patient, date, geometry, pose and dose, the objects written, the Lung-RADS
v2022 category of the exam; for every nodule in it: world centre (mm), long and short axis, mean
diameter, volume, type, lobe, its track across studies, its own Lung-RADS category and its Brock
probability. Categories and probabilities come from :mod:`screening` applied to the true
measurements, so they are what a perfect reader following ``REFERENCE.md`` would report.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from screening import Measurement, NoduleHistory, brock_probability, exam_category, nodule_category
from synth.anatomy import UPPER_LOBES
from synth.nodules import NoduleKind, NoduleMeasurement

MANIFEST_VERSION = 2


@dataclass(frozen=True)
class NoduleRecord:
    """A true nodule in one study.

    ``nodule_id`` is the lesion's track, the same in every study of the patient; ``center_xyz_mm`` is
    in patient coordinates (LPS, mm, x y z); ``center_zyx_vox`` in voxel coordinates of the series
    (z y x); ``diameter_mm`` is the Lung-RADS mean diameter.
    """

    nodule_id: str
    center_xyz_mm: tuple[float, float, float]
    center_zyx_vox: tuple[float, float, float]
    diameter_mm: float
    kind: str
    long_axis_mm: float = 0.0
    short_axis_mm: float = 0.0
    volume_mm3: float = 0.0
    solid_component_mm: float | None = None
    lobe: str = ""
    juxtapleural: bool = False
    spiculated: bool = False
    lung_rads: str = ""
    lung_rads_reason: str = ""
    brock_probability: float | None = None
    brock_defaulted: tuple[str, ...] = ()


@dataclass(frozen=True)
class WrittenObjectRecord:
    """One object written to the archive for a study, and its role (image, localizer, duplicate, ...)."""

    key: str
    sop_instance_uid: str
    role: str


@dataclass(frozen=True)
class StudyTruth:
    """Ground truth of one study. ``origin_xyz_mm`` is the patient position of voxel (0, 0, 0)."""

    patient_id: str
    study_uid: str
    series_uid: str
    study_date: str
    n_instances: int
    shape_zyx: tuple[int, int, int]
    spacing_zyx_mm: tuple[float, float, float]
    origin_xyz_mm: tuple[float, float, float]
    nodules: list[NoduleRecord] = field(default_factory=list)
    study_index: int = 0
    sex: str = ""
    age_years: float = 0.0
    mas: float = 0.0
    pose: dict[str, Any] = field(default_factory=dict)
    lung_rads: str = "1"
    lung_rads_reason: str = ""
    objects: list[WrittenObjectRecord] = field(default_factory=list)


@dataclass(frozen=True)
class TrackTruth:
    """One lesion over time: behaviour, true volume doubling time, the studies it appears in."""

    track_id: str
    patient_id: str
    kind: str
    behaviour: str
    vdt_days: float | None
    lobe: str
    study_uids: list[str]


@dataclass(frozen=True)
class GroundTruth:
    """Everything a generator wrote, with the true nodules of every study and every lesion's track."""

    seed: int
    studies: list[StudyTruth]
    tracks: list[TrackTruth] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)
    version: int = MANIFEST_VERSION

    def to_json(self) -> str:
        """Serialise to a JSON string (tuples become lists)."""
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> GroundTruth:
        """Inverse of :meth:`to_json`."""
        raw = json.loads(text)
        studies = [
            _build(
                StudyTruth,
                s,
                nodules=[_build(NoduleRecord, n) for n in s.get("nodules", [])],
                objects=[_build(WrittenObjectRecord, o) for o in s.get("objects", [])],
            )
            for s in raw["studies"]
        ]
        return cls(
            seed=int(raw["seed"]),
            studies=studies,
            tracks=[_build(TrackTruth, t) for t in raw.get("tracks", [])],
            options=raw.get("options", {}),
            version=int(raw.get("version", 1)),
        )

    def study(self, study_uid: str) -> StudyTruth:
        """The study with this StudyInstanceUID; KeyError naming it when absent."""
        for s in self.studies:
            if s.study_uid == study_uid:
                return s
        raise KeyError(f"study {study_uid!r} not in ground truth")


def _build(cls: type, raw: dict[str, Any], **overrides: Any) -> Any:
    """A dataclass from JSON: lists back to tuples where the field is a tuple."""
    values = {}
    for f in fields(cls):
        if f.name in overrides:
            values[f.name] = overrides[f.name]
        elif f.name in raw:
            value = raw[f.name]
            values[f.name] = tuple(value) if isinstance(value, list) and "tuple" in str(f.type) else value
    return cls(**values)


def jsonable(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists), so a manifest compares equal after a round trip."""
    return json.loads(json.dumps(value))


def write_ground_truth(truth: GroundTruth, path: str | Path) -> Path:
    """Write ``truth`` as JSON to ``path`` (parents created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(truth.to_json(), encoding="utf-8")
    return path


def read_ground_truth(path: str | Path) -> GroundTruth:
    """Read a file written by :func:`write_ground_truth`."""
    return GroundTruth.from_json(Path(path).read_text(encoding="utf-8"))


@dataclass(frozen=True)
class ObservedNodule:
    """What the truth knows of one nodule in one study, before the clinical rules are applied."""

    track_id: str
    kind: NoduleKind
    measurement: NoduleMeasurement
    spiculated: bool
    lobe: str


@dataclass(frozen=True)
class ClinicalTruth:
    """Lung-RADS of the exam and of each nodule, and each nodule's Brock probability."""

    exam_category: str
    exam_reason: str
    nodule_categories: dict[str, tuple[str, str]]  # track -> (category, reason)
    brock: dict[str, tuple[float, tuple[str, ...]]]  # track -> (probability, defaulted inputs)


def clinical_truth(
    observed: list[ObservedNodule],
    *,
    prior: dict[str, tuple[Measurement, str]] | None,
    interval_days: float | None,
    age_years: float,
    female: bool,
) -> tuple[ClinicalTruth, dict[str, tuple[Measurement, str]]]:
    """Apply Lung-RADS and Brock to one study; ``prior`` (None at baseline) maps tracks to (measurement, category).

    Returns the truth and the map to pass as ``prior`` to the patient's next study.
    """
    histories = {}
    for nodule in observed:
        m = nodule.measurement
        current = Measurement.from_axes(
            nodule.kind.value,
            m.long_axis_mm,
            m.short_axis_mm,
            solid_component_mm=m.solid_component_mm,
            spiculated=nodule.spiculated,
        )
        if prior is None:
            histories[nodule.track_id] = NoduleHistory.at_baseline(current)
        elif nodule.track_id in prior:
            before, category = prior[nodule.track_id]
            histories[nodule.track_id] = NoduleHistory.at_follow_up(current, before, interval_days or 0.0, category)
        else:
            histories[nodule.track_id] = NoduleHistory.new_at_follow_up(current)
    assessments = {track: nodule_category(history) for track, history in histories.items()}
    exam = exam_category(histories.values())
    brock = {}
    for nodule in observed:
        result = brock_probability(
            age_years=age_years,
            female=female,
            diameter_mm=nodule.measurement.mean_diameter_mm,
            nodule_type=nodule.kind.value,
            upper_lobe=nodule.lobe in UPPER_LOBES,
            nodule_count=len(observed),
            spiculation=nodule.spiculated,
        )
        brock[nodule.track_id] = (round(result.probability, 5), tuple(result.defaulted))
    truth = ClinicalTruth(
        exam_category=exam.category.value,
        exam_reason=exam.reason,
        nodule_categories={t: (a.category.value, a.reason) for t, a in assessments.items()},
        brock=brock,
    )
    following = {t: (histories[t].current, assessments[t].category.value) for t in histories}
    return truth, following
