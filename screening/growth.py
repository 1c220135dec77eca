"""Nodule growth: sphere volume and volume doubling time (VDT), with its interpretation band.

Source: REFERENCE.md section 3. Volumes in mm3, diameters in mm, intervals in days::

    V = pi d^3 / 6        VDT = t ln 2 / ln(V2 / V1)

A nodule that shrank or did not change (V2 <= V1) has no finite VDT: it is reported as None
(``VdtBand.NO_FINITE_VDT``), never as a negative or infinite number.
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
