"""Generate a synthetic CT archive (fake patients, DICOM series) and its ground truth.

Object keys: `{patient_id}/{study_uid}/{series_uid}/{instance_number:04d}.dcm`. Patient identities are fake.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from pydicom.uid import generate_uid

from synth.dicom import SeriesHeader, series_files, voxel_to_patient_mm
from synth.phantom import NoduleKind, make_phantom

logger = logging.getLogger(__name__)

_FAMILY_NAMES = ("DOE", "ROE", "MORGAN", "SILVA", "NOVAK", "BERG", "KIM", "MARTIN", "ROSSI", "FISCHER")
_GIVEN_NAMES = {
    "F": ("JANE", "ANNA", "MARIA", "LENA", "SARA"),
    "M": ("JOHN", "PETER", "LUCAS", "OMAR", "TOM"),
}
_FIRST_STUDY_DATE = dt.date(2019, 1, 7)


@dataclass(frozen=True)
class NoduleRecord:
    """A true nodule of one study.

    `nodule_id` is stable across a patient's studies; `center_xyz_mm` is in patient coordinates (LPS, mm,
    axis order x, y, z); `center_zyx_vox` is in voxel coordinates of the series volume (axis order z, y, x).
    """

    nodule_id: str
    center_xyz_mm: tuple[float, float, float]
    center_zyx_vox: tuple[float, float, float]
    diameter_mm: float
    kind: str


@dataclass(frozen=True)
class StudyTruth:
    """Ground truth of one study (one CT series); `origin_xyz_mm`: patient position of voxel (0, 0, 0)."""

    patient_id: str
    study_uid: str
    series_uid: str
    study_date: str
    n_instances: int
    shape_zyx: tuple[int, int, int]
    spacing_zyx_mm: tuple[float, float, float]
    origin_xyz_mm: tuple[float, float, float]
    nodules: list[NoduleRecord] = field(default_factory=list)


@dataclass(frozen=True)
class GroundTruth:
    """Everything `generate_archive` wrote, with the true nodules of every study."""

    seed: int
    studies: list[StudyTruth]

    def to_json(self) -> str:
        """Serialise to a JSON string (tuples become lists)."""
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> GroundTruth:
        """Inverse of `to_json`."""
        raw = json.loads(text)
        studies = []
        for s in raw["studies"]:
            nodules = [
                NoduleRecord(
                    nodule_id=n["nodule_id"],
                    center_xyz_mm=tuple(n["center_xyz_mm"]),
                    center_zyx_vox=tuple(n["center_zyx_vox"]),
                    diameter_mm=float(n["diameter_mm"]),
                    kind=n["kind"],
                )
                for n in s["nodules"]
            ]
            studies.append(
                StudyTruth(
                    patient_id=s["patient_id"],
                    study_uid=s["study_uid"],
                    series_uid=s["series_uid"],
                    study_date=s["study_date"],
                    n_instances=int(s["n_instances"]),
                    shape_zyx=tuple(s["shape_zyx"]),
                    spacing_zyx_mm=tuple(s["spacing_zyx_mm"]),
                    origin_xyz_mm=tuple(s["origin_xyz_mm"]),
                    nodules=nodules,
                )
            )
        return cls(seed=int(raw["seed"]), studies=studies)

    def study(self, study_uid: str) -> StudyTruth:
        """The study with this StudyInstanceUID; KeyError naming it when absent."""
        for s in self.studies:
            if s.study_uid == study_uid:
                return s
        raise KeyError(f"study {study_uid!r} not in ground truth")


def write_ground_truth(truth: GroundTruth, path: str | Path) -> Path:
    """Write `truth` as JSON to `path` (parents created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(truth.to_json(), encoding="utf-8")
    return path


def read_ground_truth(path: str | Path) -> GroundTruth:
    """Read a file written by `write_ground_truth`."""
    return GroundTruth.from_json(Path(path).read_text(encoding="utf-8"))


def _uid(*parts: object) -> str:
    return generate_uid(entropy_srcs=[str(p) for p in parts])


def _study_time(rng: np.random.Generator) -> str:
    hour, minute, second = int(rng.integers(7, 19)), int(rng.integers(0, 60)), int(rng.integers(0, 60))
    return f"{hour:02d}{minute:02d}{second:02d}"


def generate_archive(
    put: Callable[[str, bytes], object],
    *,
    n_patients: int,
    seed: int,
    studies_per_patient: int = 1,
    shape_zyx: tuple[int, int, int] = (48, 128, 128),
    spacing_zyx_mm: tuple[float, float, float] = (2.5, 2.5, 2.5),
) -> GroundTruth:
    """Write `n_patients` fake patients with `studies_per_patient` chest CTs each through `put(key, data)`.

    Follow-up studies of a patient are 3..7 months apart and show the same anatomy and nodules with fresh
    noise.
    Patients with an even index number their instances head first (InstanceNumber descending with z).
    Deterministic for a seed (UIDs included).
    """
    if n_patients < 0:
        raise ValueError(f"n_patients must be >= 0, got {n_patients}")
    if studies_per_patient < 1:
        raise ValueError(f"studies_per_patient must be >= 1, got {studies_per_patient}")
    studies: list[StudyTruth] = []
    for p in range(n_patients):
        patient_id = f"NS{p + 1:04d}"
        rng = np.random.default_rng([seed, p, 0])
        sex = "F" if rng.random() < 0.5 else "M"
        name = f"{_FAMILY_NAMES[rng.integers(len(_FAMILY_NAMES))]}^{_GIVEN_NAMES[sex][rng.integers(5)]}"
        birth = dt.date(1940, 1, 1) + dt.timedelta(days=int(rng.integers(0, 35 * 365)))
        study_date = _FIRST_STUDY_DATE + dt.timedelta(days=int(rng.integers(0, 3 * 365)))
        _, ny, nx = shape_zyx
        _, dy, dx = spacing_zyx_mm
        origin = (-nx * dx / 2, -ny * dy / 2, -float(np.round(rng.uniform(250, 350), 1)))
        for s in range(studies_per_patient):
            if s > 0:
                study_date += dt.timedelta(days=int(rng.integers(90, 214)))
            phantom = make_phantom(
                np.random.default_rng([seed, p, 1]),
                shape_zyx=shape_zyx,
                spacing_zyx_mm=spacing_zyx_mm,
                noise_rng=np.random.default_rng([seed, p, 2, s]),
            )
            header = SeriesHeader(
                patient_id=patient_id,
                patient_name=name,
                patient_birth_date=birth.strftime("%Y%m%d"),
                patient_sex=sex,
                study_uid=_uid(seed, patient_id, s, "study"),
                series_uid=_uid(seed, patient_id, s, "series"),
                frame_of_reference_uid=_uid(seed, patient_id, s, "frame"),
                study_date=study_date.strftime("%Y%m%d"),
                study_time=_study_time(rng),
                accession_number=f"A{seed % 10000:04d}{p + 1:05d}{s:02d}",
            )
            prefix = f"{patient_id}/{header.study_uid}/{header.series_uid}"
            for number, data in series_files(
                phantom.hu,
                phantom.spacing_zyx_mm,
                header,
                origin_xyz_mm=origin,
                uid_entropy=f"{seed}/{patient_id}/{s}/instance",
                descending_instance_numbers=p % 2 == 1,
            ):
                put(f"{prefix}/{number:04d}.dcm", data)
            nodules = [
                NoduleRecord(
                    nodule_id=f"{patient_id}-N{n + 1}",
                    center_xyz_mm=tuple(
                        round(c, 3) for c in voxel_to_patient_mm(nod.center_zyx_vox, spacing_zyx_mm, origin)
                    ),  # type: ignore[misc]
                    center_zyx_vox=nod.center_zyx_vox,
                    diameter_mm=nod.diameter_mm,
                    kind=NoduleKind(nod.kind).value,
                )
                for n, nod in enumerate(phantom.nodules)
            ]
            studies.append(
                StudyTruth(
                    patient_id=patient_id,
                    study_uid=header.study_uid,
                    series_uid=header.series_uid,
                    study_date=header.study_date,
                    n_instances=int(phantom.hu.shape[0]),
                    shape_zyx=tuple(int(v) for v in phantom.hu.shape),  # type: ignore[arg-type]
                    spacing_zyx_mm=phantom.spacing_zyx_mm,
                    origin_xyz_mm=origin,
                    nodules=nodules,
                )
            )
            logger.info(
                "wrote study %d/%d of patient %d/%d (%d nodules)",
                s + 1,
                studies_per_patient,
                p + 1,
                n_patients,
                len(nodules),
            )
    return GroundTruth(seed=seed, studies=studies)
