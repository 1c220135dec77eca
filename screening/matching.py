"""Matching the nodules of a new study to those of a prior study of the same patient.

Source: REFERENCE.md section 3 (published practice). Centres are world (patient) coordinates in mm,
in DICOM order (x, y, z); diameters in mm.

1. Alignment: ``translation_mm`` is added to every prior centre to bring it into the current study's
   frame; the caller gives it, for example current lung centroid minus prior lung centroid.
2. Gate: a current and a prior nodule may match only when their 3-D distance after alignment is at most
   ``gate = max(10, min(15, 1.5 x the larger of their two diameters))`` mm: 10 mm for nodules up to about
   6.7 mm, 15 mm from 10 mm up.
3. Assignment: Hungarian (``scipy.optimize.linear_sum_assignment``): the most pairs within the gate,
   and among those the smallest total distance.

Unmatched current nodules are NEW; unmatched prior nodules are RESOLVED.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from screening._checks import positive, real

GATE_MIN_MM = 10.0
GATE_MAX_MM = 15.0
GATE_DIAMETER_FACTOR = 1.5

Vector = tuple[float, float, float]


@dataclass(frozen=True)
class LocatedNodule:
    """A nodule's centre in world coordinates (x, y, z) in mm and its diameter in mm (> 0)."""

    centre_mm: Vector
    diameter_mm: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "centre_mm", _vector(self.centre_mm, "centre_mm"))
        object.__setattr__(self, "diameter_mm", positive(self.diameter_mm, "diameter_mm"))


@dataclass(frozen=True)
class MatchedPair:
    """Current nodule ``current_index`` is prior nodule ``prior_index``: distance after alignment and gate, mm."""

    current_index: int
    prior_index: int
    distance_mm: float
    gate_mm: float


@dataclass(frozen=True)
class MatchResult:
    """Pairs by increasing current index; ``new`` (unmatched current) and ``resolved`` (unmatched prior) indices."""

    pairs: tuple[MatchedPair, ...]
    new: tuple[int, ...]
    resolved: tuple[int, ...]


def gate_mm(diameter_a_mm: float, diameter_b_mm: float) -> float:
    """The largest distance (mm) at which two nodules may match: max(10, min(15, 1.5 x larger diameter))."""
    larger = max(positive(diameter_a_mm, "diameter_a_mm"), positive(diameter_b_mm, "diameter_b_mm"))
    return max(GATE_MIN_MM, min(GATE_MAX_MM, GATE_DIAMETER_FACTOR * larger))


def match_nodules(
    current: Sequence[LocatedNodule],
    prior: Sequence[LocatedNodule],
    *,
    translation_mm: Vector = (0.0, 0.0, 0.0),
) -> MatchResult:
    """Match ``current`` nodules to ``prior`` ones (see the module docstring for alignment, gate, assignment).

    ``translation_mm`` (x, y, z, mm) is added to each prior centre before distances are measured.
    """
    for argument, nodules in (("current", current), ("prior", prior)):
        for index, nodule in enumerate(nodules):
            if not isinstance(nodule, LocatedNodule):
                raise TypeError(f"{argument}[{index}] must be a LocatedNodule, got {type(nodule).__name__} {nodule!r}")
    shift = np.array(_vector(translation_mm, "translation_mm"))
    if not current or not prior:
        return MatchResult(pairs=(), new=tuple(range(len(current))), resolved=tuple(range(len(prior))))

    current_centres = np.array([nodule.centre_mm for nodule in current])
    prior_centres = np.array([nodule.centre_mm for nodule in prior]) + shift
    distances = np.linalg.norm(current_centres[:, None, :] - prior_centres[None, :, :], axis=2)
    larger = np.maximum(
        np.array([nodule.diameter_mm for nodule in current])[:, None],
        np.array([nodule.diameter_mm for nodule in prior])[None, :],
    )
    gates = np.clip(GATE_DIAMETER_FACTOR * larger, GATE_MIN_MM, GATE_MAX_MM)
    within = distances <= gates
    # An out-of-gate pair costs more than any set of in-gate pairs, so the assignment first maximises
    # the number of in-gate pairs, then minimises their total distance.
    outside_cost = 1.0 + GATE_MAX_MM * min(len(current), len(prior))
    rows, columns = linear_sum_assignment(np.where(within, distances, outside_cost))

    pairs = tuple(
        MatchedPair(int(row), int(column), float(distances[row, column]), float(gates[row, column]))
        for row, column in zip(rows, columns, strict=True)
        if within[row, column]
    )
    matched_current = {pair.current_index for pair in pairs}
    matched_prior = {pair.prior_index for pair in pairs}
    return MatchResult(
        pairs=tuple(sorted(pairs, key=lambda pair: pair.current_index)),
        new=tuple(index for index in range(len(current)) if index not in matched_current),
        resolved=tuple(index for index in range(len(prior)) if index not in matched_prior),
    )


def _vector(value: object, argument: str) -> Vector:
    """``value`` as three finite floats (x, y, z)."""
    if isinstance(value, str) or not isinstance(value, Sequence | np.ndarray):
        raise TypeError(f"{argument} must be a sequence of 3 numbers (x, y, z), got {type(value).__name__} {value!r}")
    if len(value) != 3:
        raise ValueError(f"{argument} must have 3 values (x, y, z), got {len(value)}: {value!r}")
    x, y, z = (real(component, f"{argument}[{axis}]") for axis, component in enumerate(value))
    return (x, y, z)
