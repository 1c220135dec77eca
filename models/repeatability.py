"""How repeatable a nodule's measured volume is from one CT to the next: the noise behind a VDT's range.

A volume doubling time divides an interval by ln(V2 / V1); what limits it is how far that log ratio moves when the
same nodule is scanned again (another pose, breathing, dose and noise), not how far one volume lies from the truth
(part of that error is the nodule's own shape, and the same in both scans). :func:`measure_repeatability` renders
synthetic patients' successive studies in memory (the longitudinal archive's patients, :mod:`synth.archive`),
measures each true nodule of 6 mm or more at its true centre moved by a voxel (as a detector's centre would be),
and compares the measured log ratio of each nodule's consecutive looks with the true one.

Its figure, :attr:`Repeatability.noise_mm`, is what :data:`screening.growth.VOLUME_NOISE_MM` holds: with the
standard deviation of one look's ln(volume) taken as K / diameter, K estimated from the pairs by least squares::

    (measured - true) ln(V2 / V1) ~ N(0, K^2 (1 / d1^2 + 1 / d2^2))

``python -m models.repeatability --patients 40 --seed 4242`` prints it (about 3 s a study on 2 cores).
"""

from __future__ import annotations

import argparse
import itertools
import logging
import math
from dataclasses import dataclass

import numpy as np

from models.measurement import measure_nodule
from synth.nodules import measure
from synth.patients import plan_patient
from synth.render import render_study, scan_grid

logger = logging.getLogger(__name__)

MIN_DIAMETER_MM = 6.0
"""Nodules smaller than this (true mean diameter at either look) are left out: VDT is judged from 6 mm on."""
STUDIES = 3
SHAPE_ZYX = (100, 256, 256)
SPACING_ZYX_MM = (2.5, 1.4, 1.4)


@dataclass(frozen=True)
class LookPair:
    """One nodule at two consecutive looks: true and measured volumes (mm3), true mean diameters (mm)."""

    track_id: str
    true_mm3: tuple[float, float]
    measured_mm3: tuple[float, float]
    diameter_mm: tuple[float, float]

    @property
    def log_ratio_error(self) -> float:
        """Measured minus true ln(V2 / V1)."""
        measured = math.log(self.measured_mm3[1] / self.measured_mm3[0])
        return measured - math.log(self.true_mm3[1] / self.true_mm3[0])


@dataclass(frozen=True)
class Repeatability:
    """The look pairs measured, and the noise they give."""

    pairs: tuple[LookPair, ...]
    failed: int

    @property
    def noise_mm(self) -> float:
        """K (mm): one look's ln(volume) has standard deviation K / diameter (least squares over the pairs)."""
        if not self.pairs:
            raise ValueError("no look pairs were measured")
        weights = [1 / p.diameter_mm[0] ** 2 + 1 / p.diameter_mm[1] ** 2 for p in self.pairs]
        errors = [p.log_ratio_error for p in self.pairs]
        return math.sqrt(sum(e * e for e in errors) / sum(weights))

    def coverage(self, noise_mm: float, z: float = 1.96) -> float:
        """Share of pairs whose measured log ratio lies within ``z`` standard deviations of the true one, for a
        noise of ``noise_mm`` (what the VDT range promises: 95 % at z = 1.96)."""
        inside = [
            abs(p.log_ratio_error) <= z * noise_mm * math.hypot(1 / p.diameter_mm[0], 1 / p.diameter_mm[1])
            for p in self.pairs
        ]
        return sum(inside) / len(inside)


def measure_repeatability(n_patients: int, seed: int) -> Repeatability:
    """Render ``n_patients`` synthetic patients (seeds ``[seed, i]``, as ``nightscan follow-up evaluate`` draws its
    archive, 3 studies each) and measure their nodules' consecutive looks (see the module docstring)."""
    pairs: list[LookPair] = []
    failed = 0
    for index in range(n_patients):
        rng = np.random.default_rng([seed, index])
        plan = plan_patient(rng, index, n_studies=int(rng.integers(STUDIES, STUDIES + 1)))
        jitter = np.random.default_rng([seed, index, 7])
        looks: dict[str, dict[int, tuple[float, float, float]]] = {}
        for s, study in enumerate(plan.studies):
            grid = scan_grid(plan.anatomy, study.pose, shape_zyx=SHAPE_ZYX, spacing_zyx_mm=SPACING_ZYX_MM)
            present = []
            for track, scale in plan.nodules_at(s):
                voxel = np.array(grid.to_voxel(study.pose.to_world(track.shape.centre)))
                if all(0 <= v <= n - 1 for v, n in zip(voxel, grid.shape_zyx, strict=True)):
                    present.append((track, scale, voxel))
            if not present:
                continue
            noise_rng = np.random.default_rng([seed, int(plan.patient_id[2:]), s, 1])
            hu = render_study(
                plan.anatomy,
                [(t.shape, scale) for t, scale, _ in present],
                study.pose,
                grid,
                mas=study.mas,
                rng=noise_rng,
            )
            for track, scale, voxel in present:
                true = measure(track.shape, scale)
                if true.mean_diameter_mm < MIN_DIAMETER_MM:
                    continue
                centre = tuple(float(v) for v in voxel + jitter.integers(-1, 2, size=3))
                try:
                    measured = measure_nodule(hu, SPACING_ZYX_MM, centre)
                except ValueError as exc:
                    logger.info("%s study %d not measured: %s", track.track_id, s, exc)
                    failed += 1
                    continue
                looks.setdefault(track.track_id, {})[s] = (true.volume_mm3, measured.volume_mm3, true.mean_diameter_mm)
        for track_id, by_study in looks.items():
            ordered = sorted(by_study.items())
            for (s0, a), (s1, b) in itertools.pairwise(ordered):
                if s1 == s0 + 1:
                    pairs.append(LookPair(track_id, (a[0], b[0]), (a[1], b[1]), (a[2], b[2])))
        logger.info("patient %d of %d: %d look pairs so far", index + 1, n_patients, len(pairs))
    return Repeatability(tuple(pairs), failed)


def main() -> None:
    parser = argparse.ArgumentParser(description="The measured volume's repeatability between successive CTs.")
    parser.add_argument("--patients", type=int, default=40)
    parser.add_argument("--seed", type=int, default=4242, help="not an evaluation archive's seed (2027 to 2031)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    result = measure_repeatability(args.patients, args.seed)
    noise = result.noise_mm
    logger.info(
        "%d look pairs of nodules >= %g mm (%d looks not measured): K = %.3f mm (one look's ln(volume) sd = K / "
        "diameter); log ratios within 1.96 sd: %.1f %%",
        len(result.pairs),
        MIN_DIAMETER_MM,
        result.failed,
        noise,
        100 * result.coverage(noise),
    )


if __name__ == "__main__":
    main()
