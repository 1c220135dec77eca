"""Nodule growth: sphere volume and volume doubling time (VDT), with its interpretation band.

Source: REFERENCE.md section 3. Volumes in mm3, diameters in mm, intervals in days::

    V = pi d^3 / 6        VDT = t ln 2 / ln(V2 / V1)

A nodule that shrank or did not change (V2 <= V1) has no finite VDT: it is reported as None
(``VdtBand.NO_FINITE_VDT``), never as a negative or infinite number.

A VDT is only as good as the volumes it divides. :func:`vdt_range_days` gives the range the measurements'
repeatability allows: with a volume change within the noise of two measurements, the growth is not shown and the
range has no upper end (a radiologist would call the nodule stable at this interval, whatever the point estimate).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

from screening._checks import positive, to_enum
from screening.types import NoduleType

MALIGNANT_BELOW_DAYS = 400.0
"""A solid nodule's VDT below this suggests malignancy."""
BENIGN_ABOVE_DAYS = 600.0
"""A solid nodule's VDT above this is typical of benign nodules; 400 to 600 days inclusive is indeterminate."""


class VdtBand(StrEnum):
    """What a volume doubling time suggests (solid nodules only)."""

    SUGGESTS_MALIGNANCY = "suggests_malignancy"
    INDETERMINATE = "indeterminate"
    TYPICAL_OF_BENIGN = "typical_of_benign"
    NO_FINITE_VDT = "no_finite_vdt"
    """Shrinking or unchanged: V2 <= V1."""
    NOT_APPLICABLE = "not_applicable"
    """Not a solid nodule: the bands were set for solid nodules."""


@dataclass(frozen=True)
class GrowthAssessment:
    """The volume doubling time in days (None: no finite VDT), its band and a human-readable reason."""

    vdt_days: float | None
    band: VdtBand
    reason: str


def sphere_volume_mm3(diameter_mm: float) -> float:
    """Volume in mm3 of a sphere of ``diameter_mm`` mm: pi d^3 / 6."""
    diameter = positive(diameter_mm, "diameter_mm")
    return math.pi * diameter**3 / 6.0


def volume_doubling_time_days(v1_mm3: float, v2_mm3: float, interval_days: float) -> float | None:
    """VDT in days from volume ``v1_mm3`` to ``v2_mm3`` (mm3) over ``interval_days`` days.

    None when ``v2_mm3 <= v1_mm3`` (shrinking or unchanged: no finite VDT).
    """
    v1 = positive(v1_mm3, "v1_mm3")
    v2 = positive(v2_mm3, "v2_mm3")
    interval = positive(interval_days, "interval_days")
    if v2 <= v1:
        return None
    return interval * math.log(2.0) / math.log(v2 / v1)


VOLUME_NOISE_MM = 1.22
"""The measured volume's noise from one CT to the next: one look's ln(volume) has a standard deviation of this over
the nodule's mean diameter (mm), since an edge misplaced by a fixed distance moves the volume by a share that falls
as 1 / diameter. Estimated by :mod:`models.repeatability` (``python -m models.repeatability --patients 50 --seed
4242``): 105 pairs of consecutive looks at nodules of 6 mm and more in synthetic patients' studies, measured from
their true centres moved by a voxel, gave 1.223 mm, and 95.2 % of the pairs' log ratios lay within 1.96 standard
deviations of the truth."""

VDT_RANGE_Z = 1.96
"""The range of :func:`vdt_range_days` holds the volume ratio within this many standard deviations (95 %)."""


def volume_log_sd(diameter_mm: float) -> float:
    """The standard deviation of ln(volume) of one measurement of a nodule of ``diameter_mm`` (mm mean diameter):
    :data:`VOLUME_NOISE_MM` / diameter."""
    return VOLUME_NOISE_MM / positive(diameter_mm, "diameter_mm")


def vdt_range_days(
    v1_mm3: float, v2_mm3: float, interval_days: float, d1_mm: float, d2_mm: float
) -> tuple[float, float | None] | None:
    """The range of VDT (days) that the two measurements allow, (shortest, longest), from volumes ``v1_mm3`` and
    ``v2_mm3`` (mm3) of mean diameters ``d1_mm`` and ``d2_mm`` (mm) measured ``interval_days`` days apart.

    ln(V2 / V1) is taken within :data:`VDT_RANGE_Z` standard deviations of two independent measurements
    (:func:`volume_log_sd` of each). The longest is None when the change lies within that noise: the growth is not
    shown, and the VDT could be any length from the shortest on. None when the nodule did not grow (V2 <= V1: no
    finite VDT to bound).
    """
    v1 = positive(v1_mm3, "v1_mm3")
    v2 = positive(v2_mm3, "v2_mm3")
    interval = positive(interval_days, "interval_days")
    if v2 <= v1:
        return None
    ratio = math.log(v2 / v1)
    spread = VDT_RANGE_Z * math.hypot(volume_log_sd(d1_mm), volume_log_sd(d2_mm))
    shortest = interval * math.log(2.0) / (ratio + spread)
    longest = interval * math.log(2.0) / (ratio - spread) if ratio > spread else None
    return shortest, longest


def growth_shown(vdt_range: tuple[float, float | None] | None) -> bool:
    """True when a VDT range (:func:`vdt_range_days`) has an upper end: the volume grew beyond the noise of its
    two measurements."""
    return vdt_range is not None and vdt_range[1] is not None


def describe_vdt_range(shortest_days: float | None, longest_days: float | None) -> str:
    """A VDT range (days, :func:`vdt_range_days`) as reports show it: ``"56-101"``, ``">= 310: growth not shown"``
    when it has no upper end, ``""`` with no range."""
    if shortest_days is None:
        return ""
    if longest_days is None:
        return f">= {shortest_days:.0f}: growth not shown"
    return f"{shortest_days:.0f}-{longest_days:.0f}"


def vdt_band(vdt_days: float | None) -> VdtBand:
    """The band of a solid nodule's VDT: < 400 days malignant-range, 400-600 indeterminate, > 600 benign-range."""
    if vdt_days is None:
        return VdtBand.NO_FINITE_VDT
    vdt = positive(vdt_days, "vdt_days")
    if vdt < MALIGNANT_BELOW_DAYS:
        return VdtBand.SUGGESTS_MALIGNANCY
    if vdt <= BENIGN_ABOVE_DAYS:
        return VdtBand.INDETERMINATE
    return VdtBand.TYPICAL_OF_BENIGN


def assess_growth(
    *, nodule_type: NoduleType | str, v1_mm3: float, v2_mm3: float, interval_days: float
) -> GrowthAssessment:
    """VDT of one nodule between two CTs (volumes in mm3, ``interval_days`` days apart) and its band.

    The band is ``NOT_APPLICABLE`` for nodules that are not solid; the VDT is still given.
    """
    kind = to_enum(NoduleType, nodule_type, "nodule_type")
    vdt = volume_doubling_time_days(v1_mm3, v2_mm3, interval_days)
    change = f"{kind.label} {v1_mm3:.1f} -> {v2_mm3:.1f} mm3 in {interval_days:g} days"
    if vdt is None:
        return GrowthAssessment(None, VdtBand.NO_FINITE_VDT, f"{change}: shrinking or unchanged, no finite VDT")
    if kind is not NoduleType.SOLID:
        reason = f"{change}: VDT {vdt:.1f} days, bands are for solid nodules"
        return GrowthAssessment(vdt, VdtBand.NOT_APPLICABLE, reason)
    band = vdt_band(vdt)
    return GrowthAssessment(vdt, band, f"{change}: VDT {vdt:.1f} days, {band.value.replace('_', ' ')}")
