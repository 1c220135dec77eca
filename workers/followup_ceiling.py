"""How well the longitudinal step can agree with the truth when the only error is the size measurement.

The truth's own nodules (every one found, typed right, spiculation known) are fed to the step
(:func:`screening.longitudinal.follow_patient`) with each diameter, and each part-solid nodule's solid
component, moved by Gaussian noise of a given standard deviation (mm, drawn independently per study). With no
noise the step must give the truth's categories (they come from the same rules); with the noise of a real
measurement it shows the Lung-RADS agreement that measurement allows, however good the detector: a nodule whose
mean diameter lies near 6, 8 or 15 mm, or whose growth lies near 1.5 mm, flips category on a fraction of a
millimetre.

Pure: it reads the ground truth only (no images, no database).
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from screening.longitudinal import Observation, StudyInput, follow_patient
from screening.types import Measurement, NoduleType, round_mm
from synth.archive import GroundTruth, StudyTruth
from synth.manifest import NoduleRecord

SMALLEST_MM = 0.5
"""A noisy diameter or solid component is kept at least this large (mm)."""


def _observation(key: int, nodule: NoduleRecord, noise_mm: float, rng: np.random.Generator) -> Observation:
    """The true nodule as a measurement ``noise_mm`` (standard deviation, mm) off; the volume scales with it."""
    diameter = round_mm(max(SMALLEST_MM, nodule.diameter_mm + rng.normal(0.0, noise_mm)))
    solid = None
    if nodule.kind == NoduleType.PART_SOLID.value and nodule.solid_component_mm is not None:
        solid = min(diameter, round_mm(max(SMALLEST_MM, nodule.solid_component_mm + rng.normal(0.0, noise_mm))))
    measurement = Measurement.from_mean_diameter(
        nodule.kind, diameter, solid_component_mm=solid, spiculated=nodule.spiculated
    )
    volume = nodule.volume_mm3 * (diameter / nodule.diameter_mm) ** 3 if nodule.volume_mm3 else None
    return Observation(key=key, centre_mm=nodule.center_xyz_mm, measurement=measurement, volume_mm3=volume)


def _study_input(key: int, study: StudyTruth, noise_mm: float, rng: np.random.Generator) -> StudyInput:
    """One true study as the step's input, its nodules keyed ``key * 100 + n``."""
    return StudyInput(
        key=key,
        study_date=dt.datetime.strptime(study.study_date, "%Y%m%d").date(),
        nodules=tuple(_observation(key * 100 + n, nodule, noise_mm, rng) for n, nodule in enumerate(study.nodules)),
        age_years=study.age_years,
        female=study.sex == "F",
    )


def agreement(truth: GroundTruth, noise_mm: float, *, draws: int = 1, seed: int = 0) -> float:
    """The share of studies (0 to 1) whose category from the true nodules, measured with ``noise_mm`` (mm,
    standard deviation) of Gaussian error, equals the truth's, averaged over ``draws`` draws."""
    if noise_mm < 0:
        raise ValueError(f"noise_mm must be 0 or more, got {noise_mm!r}")
    by_patient: dict[str, list[StudyTruth]] = defaultdict(list)
    for study in truth.studies:
        by_patient[study.patient_id].append(study)
    rng = np.random.default_rng(seed)
    agree = total = 0
    for _ in range(draws if noise_mm > 0 else 1):
        for studies in by_patient.values():
            ordered = sorted(studies, key=lambda s: s.study_date)
            inputs = [_study_input(k, s, noise_mm, rng) for k, s in enumerate(ordered)]
            result = follow_patient(inputs)
            for study, assessed in zip(ordered, result.studies, strict=True):
                agree += assessed.category.value == study.lung_rads
                total += 1
    return agree / total if total else float("nan")


def ceiling(truth: GroundTruth, noises_mm: Sequence[float], *, draws: int = 20, seed: int = 0) -> dict[str, float]:
    """Lung-RADS agreement (0 to 1) of the true nodules at each measurement noise (mm), keyed by the noise."""
    return {f"{noise:g}": round(agreement(truth, noise, draws=draws, seed=seed), 4) for noise in noises_mm}
