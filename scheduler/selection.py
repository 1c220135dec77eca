"""Series selection: declarative rules per pipeline, and the reason for every choice and rejection.

A pipeline's :class:`SelectionRules` say which series qualify (modality, orientation, slice
thickness, slice count, image types to exclude) and how to rank those that do (the most complete,
then the thinnest). :func:`select_series` returns a :class:`Decision` for every series of a study,
so what was chosen, and why each other series was not, can be recorded and shown.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SelectionRules:
    """What a pipeline accepts. Thickness in mm; ``min_abs_normal_z`` 0.9 means within ~25 degrees of axial."""

    modality: str = "CT"
    max_slice_thickness_mm: float = 3.0
    min_slices: int = 16
    min_abs_normal_z: float = 0.9
    excluded_image_types: frozenset[str] = frozenset({"LOCALIZER", "SECONDARY", "DERIVED"})


PIPELINE_RULES: dict[str, SelectionRules] = {"lung-ct": SelectionRules()}


def rules_for(pipeline: str) -> SelectionRules:
    """The rules of ``pipeline``; KeyError naming the known pipelines when it has none."""
    try:
        return PIPELINE_RULES[pipeline]
    except KeyError:
        raise KeyError(f"no selection rules for pipeline {pipeline!r}; known: {sorted(PIPELINE_RULES)}") from None


@dataclass(frozen=True, slots=True)
class SeriesFacts:
    """What the rules look at for one series."""

    series_id: int
    modality: str
    image_type: tuple[str, ...]
    image_orientation: tuple[float, ...] | None
    slice_thickness_mm: float | None
    n_slices: int


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome for one series: chosen or not, and why, in words a person can check."""

    series_id: int
    selected: bool
    reason: str


def rejection_reason(facts: SeriesFacts, rules: SelectionRules) -> str | None:
    """Why ``facts`` does not qualify under ``rules``, or None if it does."""
    if facts.modality != rules.modality:
        return f"modality {facts.modality!r} is not {rules.modality}"
    excluded = sorted(rules.excluded_image_types & set(facts.image_type))
    if excluded:
        return f"image type {'/'.join(excluded)}"
    if facts.image_orientation is None or len(facts.image_orientation) != 6:
        return "no ImageOrientationPatient"
    normal = np.cross(facts.image_orientation[:3], facts.image_orientation[3:])
    if abs(normal[2]) < rules.min_abs_normal_z:
        return f"not axial (slice normal {np.round(normal, 2).tolist()})"
    if facts.slice_thickness_mm is not None and facts.slice_thickness_mm > rules.max_slice_thickness_mm:
        return f"slices {facts.slice_thickness_mm:g} mm thick, more than {rules.max_slice_thickness_mm:g} mm"
    if facts.n_slices < rules.min_slices:
        return f"{facts.n_slices} slices, fewer than {rules.min_slices}"
    return None


def select_series(candidates: list[SeriesFacts], rules: SelectionRules) -> list[Decision]:
    """A decision for every series: at most one is selected (the most complete, then the thinnest)."""
    reasons = {c.series_id: rejection_reason(c, rules) for c in candidates}
    qualified = [c for c in candidates if reasons[c.series_id] is None]
    best = max(qualified, key=lambda c: (c.n_slices, -(c.slice_thickness_mm or 99.0)), default=None)
    decisions = []
    for c in candidates:
        if best is not None and c.series_id == best.series_id:
            others = len(qualified) - 1
            reason = f"{c.n_slices} axial {c.modality} slices of {c.slice_thickness_mm or '?'} mm" + (
                f": the most complete and thinnest of {others + 1} qualifying series" if others else ""
            )
            decisions.append(Decision(c.series_id, True, reason))
        elif reasons[c.series_id] is None:
            decisions.append(Decision(c.series_id, False, f"qualifies, but series {best.series_id} is better"))
        else:
            decisions.append(Decision(c.series_id, False, str(reasons[c.series_id])))
    return decisions
