"""Patients over time: demographics, screening studies months apart, and nodules that change.

Each nodule has a behaviour: it grows at a volume doubling time (60 to 1000 days), stays stable,
appears at a follow-up, or resolves. Each study gets its own pose (shift, rotation, breathing) and
dose, so matching nodules across studies has to align the studies first.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from synth.anatomy import Anatomy, make_anatomy
from synth.nodules import MAX_DIAMETER_MM, MIN_DIAMETER_MM, NoduleKind, NoduleShape, random_shape
from synth.pose import Pose

FAMILY_NAMES = ("DOE", "ROE", "MORGAN", "SILVA", "NOVAK", "BERG", "KIM", "MARTIN", "ROSSI", "FISCHER")
GIVEN_NAMES = {"F": ("JANE", "ANNA", "MARIA", "LENA", "SARA"), "M": ("JOHN", "PETER", "LUCAS", "OMAR", "TOM")}
FIRST_STUDY_DATE = dt.date(2019, 1, 7)
NODULE_COUNT_WEIGHTS = (0.25, 0.35, 0.2, 0.12, 0.08)  # P(0), P(1), ... nodules per patient
KIND_WEIGHTS = {NoduleKind.SOLID: 0.7, NoduleKind.PART_SOLID: 0.15, NoduleKind.GROUND_GLASS: 0.15}


class Behaviour(StrEnum):
    """How a nodule changes across a patient's studies."""

    GROWING = "growing"
    STABLE = "stable"
    NEW = "new"  # absent at the first study, appears at a follow-up (then grows or stays)
    RESOLVING = "resolving"  # present at first, gone at a later study


@dataclass(frozen=True)
class NoduleTrack:
    """One lesion across time: its shape, behaviour, doubling time and the studies it is in."""

    track_id: str
    shape: NoduleShape
    behaviour: Behaviour
    vdt_days: float | None  # None: no growth
    first_study: int
    last_study: int  # inclusive

    def scale_at(self, study_index: int, days_since_first: float) -> float | None:
        """Size factor at a study (volume doubles every ``vdt_days``); None when absent."""
        if not self.first_study <= study_index <= self.last_study:
            return None
        if self.vdt_days is None:
            return 1.0
        return float(2.0 ** (days_since_first / (3.0 * self.vdt_days)))


@dataclass(frozen=True)
class StudyPlan:
    """One screening CT: its date, the patient's placement and the dose (mAs)."""

    date: dt.date
    pose: Pose
    mas: float


@dataclass(frozen=True)
class PatientPlan:
    """Everything about one synthetic patient, decided before any pixel is drawn."""

    patient_id: str
    name: str
    sex: str
    birth_date: dt.date
    anatomy: Anatomy
    studies: tuple[StudyPlan, ...]
    tracks: tuple[NoduleTrack, ...]

    def nodules_at(self, study_index: int) -> list[tuple[NoduleTrack, float]]:
        """The tracks present at a study with their size factor."""
        present = []
        for track in self.tracks:
            first_date = self.studies[track.first_study].date
            days = (self.studies[study_index].date - first_date).days
            scale = track.scale_at(study_index, days)
            if scale is not None:
                present.append((track, scale))
        return present


def plan_patient(rng: np.random.Generator, index: int, *, n_studies: int) -> PatientPlan:
    """Draw patient ``index`` (0-based) with ``n_studies`` studies 3 to 14 months apart."""
    if n_studies < 1:
        raise ValueError(f"n_studies must be >= 1, got {n_studies}")
    patient_id = f"NS{index + 1:04d}"
    sex = "F" if rng.random() < 0.5 else "M"
    name = f"{FAMILY_NAMES[rng.integers(len(FAMILY_NAMES))]}^{GIVEN_NAMES[sex][rng.integers(5)]}"
    first = FIRST_STUDY_DATE + dt.timedelta(days=int(rng.integers(0, 3 * 365)))
    birth = first - dt.timedelta(days=int(rng.uniform(50, 80) * 365.25))  # screening ages 50 to 80
    dates = [first]
    for _ in range(n_studies - 1):
        dates.append(dates[-1] + dt.timedelta(days=int(rng.integers(90, 430))))
    studies = tuple(StudyPlan(d, Pose.random(rng), float(rng.uniform(25.0, 80.0))) for d in dates)
    anatomy = make_anatomy(rng)
    tracks = _plan_tracks(rng, anatomy, patient_id, n_studies, span_days=(dates[-1] - dates[0]).days)
    return PatientPlan(patient_id, name, sex, birth, anatomy, studies, tracks)


def _plan_tracks(
    rng: np.random.Generator, anatomy: Anatomy, patient_id: str, n_studies: int, *, span_days: int
) -> tuple[NoduleTrack, ...]:
    count = int(rng.choice(len(NODULE_COUNT_WEIGHTS), p=NODULE_COUNT_WEIGHTS))
    kinds, weights = list(KIND_WEIGHTS), list(KIND_WEIGHTS.values())
    tracks: list[NoduleTrack] = []
    placed: list[tuple[tuple[float, float, float], float]] = []
    for n in range(count):
        kind = kinds[int(rng.choice(len(kinds), p=weights))]
        diameter = float(np.exp(rng.uniform(np.log(MIN_DIAMETER_MM), np.log(MAX_DIAMETER_MM * 0.7))))
        behaviour = _behaviour(rng, n_studies)
        vdt = float(np.exp(rng.uniform(np.log(60.0), np.log(1000.0)))) if behaviour == Behaviour.GROWING else None
        if behaviour == Behaviour.NEW and rng.random() < 0.5:
            vdt = float(np.exp(rng.uniform(np.log(60.0), np.log(1000.0))))
        if vdt is not None and span_days > 0:  # never outgrow MAX_DIAMETER_MM within the timeline
            vdt = max(vdt, span_days / (3.0 * np.log2(0.9 * MAX_DIAMETER_MM / diameter)))
        # Leave room for growth: the largest size over the whole timeline must still fit in the lung.
        shape = random_shape(
            rng,
            anatomy,
            diameter_mm=diameter,
            kind=kind,
            juxtapleural=bool(rng.random() < 0.2),
            spiculated=kind != NoduleKind.GROUND_GLASS and diameter >= 8.0 and bool(rng.random() < 0.3),
            avoid=placed,
        )
        if shape is None:
            continue
        placed.append((shape.centre, diameter * 2))
        first, last = 0, n_studies - 1
        if behaviour == Behaviour.NEW:
            first = int(rng.integers(1, n_studies))
        elif behaviour == Behaviour.RESOLVING:
            last = int(rng.integers(0, n_studies - 1))
        tracks.append(NoduleTrack(f"{patient_id}-L{n + 1}", shape, behaviour, vdt, first, last))
    return tuple(tracks)


def _behaviour(rng: np.random.Generator, n_studies: int) -> Behaviour:
    if n_studies == 1:
        return Behaviour.GROWING if rng.random() < 0.4 else Behaviour.STABLE
    options = (Behaviour.GROWING, Behaviour.STABLE, Behaviour.NEW, Behaviour.RESOLVING)
    return options[int(rng.choice(4, p=(0.35, 0.4, 0.15, 0.1)))]
