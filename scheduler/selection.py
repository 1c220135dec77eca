"""Series selection: which series of a study the lung pipeline analyses, and why.

The thin first version of the rules: CT; not a localizer; axial; at least ``min_slices`` instances;
among those, the most complete series, then the thinnest.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

AXIAL_MIN_ABS_NORMAL_Z = 0.9  # |n_z| of the slice normal above this counts as axial


@dataclass(frozen=True, slots=True)
class SeriesFacts:
    """What the rules look at for one series."""

    series_id: int
    modality: str
    image_type: tuple[str, ...]
    image_orientation: tuple[float, ...] | None
    slice_thickness_mm: float | None
    n_instances: int


def rejection_reason(facts: SeriesFacts, min_slices: int) -> str | None:
    """Why ``facts`` does not qualify, or None if it does."""
    if facts.modality != "CT":
        return f"modality {facts.modality!r} is not CT"
    if "LOCALIZER" in facts.image_type:
        return "localizer"
    if facts.image_orientation is None or len(facts.image_orientation) != 6:
        return "no ImageOrientationPatient"
    normal = np.cross(facts.image_orientation[:3], facts.image_orientation[3:])
    if abs(normal[2]) < AXIAL_MIN_ABS_NORMAL_Z:
        return f"not axial (slice normal {np.round(normal, 2).tolist()})"
    if facts.n_instances < min_slices:
        return f"{facts.n_instances} slices, fewer than {min_slices}"
    return None


def select_series(candidates: list[SeriesFacts], min_slices: int) -> tuple[SeriesFacts | None, str]:
    """Pick the series to analyse; return it (or None) and the reason for the choice."""
    qualified = [c for c in candidates if rejection_reason(c, min_slices) is None]
    if not qualified:
        reasons = "; ".join(f"series {c.series_id}: {rejection_reason(c, min_slices)}" for c in candidates)
        return None, f"no qualifying series ({reasons or 'no series'})"
    best = max(qualified, key=lambda c: (c.n_instances, -(c.slice_thickness_mm or 99.0)))
    return best, f"series {best.series_id}: {best.n_instances} axial CT slices, the most complete"
