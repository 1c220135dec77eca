"""Aligning two studies of one patient from their nodules: the translation that pairs the most of them.

Source: REFERENCE.md section 3 (align, then match). Centres are world (patient) coordinates in mm,
(x, y, z). The translation is added to each prior centre to bring it into the current study's frame,
as :func:`screening.matching.match_nodules` expects.

Patients lie a few centimetres differently on the table at each study, more than the matching gate
(10 to 15 mm). With no image at hand, the nodules themselves say where the patient moved:

1. start from an initial estimate (for example the difference of the two scans' centres along the table,
   which a technologist plans on the lungs; zero without one);
2. candidates: the initial estimate, and every current-minus-prior centre difference within
   ``search_radius_mm`` of it (each one pairs at least one nodule exactly);
3. for each candidate, match (Hungarian, size-scaled gate), then refine the translation to the mean
   difference of the matched pairs and match again;
4. keep the candidate with the most pairs; among equals, the smallest residual distance of the pairs plus
   ``PRIOR_WEIGHT`` x its distance from the initial estimate (a single pair then keeps the translation
   nearest the estimate: the evidence cannot tell more).

A lone nodule in each study that moved by more than the gate relative to the estimate, but less than
``search_radius_mm``, is still paired: between a real lesion and a coincidence, the real lesion is the
better bet when both studies come from one patient weeks or months apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from screening._checks import positive
from screening.matching import LocatedNodule, MatchResult, Vector, _vector, match_nodules

SEARCH_RADIUS_MM = 50.0
"""Candidate translations further than this from the initial estimate are not tried (mm)."""
PRIOR_WEIGHT = 0.25
"""Weight of a candidate's distance (mm) from the initial estimate, against the pairs' residual distances (mm)."""


@dataclass(frozen=True)
class Alignment:
    """The chosen translation (x, y, z, mm, added to prior centres), the match it gives, and how it was found.

    ``method``: ``initial`` (the estimate given, no pair moved it), ``pairs`` (the mean difference of the
    matched pairs) or ``none`` (nothing to pair in one of the studies: the initial estimate).
    ``residual_mm``: the mean distance of the matched pairs after alignment (0 without pairs).
    """

    translation_mm: Vector
    match: MatchResult
    method: str
    residual_mm: float


def align_studies(
    current: Sequence[LocatedNodule],
    prior: Sequence[LocatedNodule],
    *,
    initial_mm: Vector = (0.0, 0.0, 0.0),
    search_radius_mm: float = SEARCH_RADIUS_MM,
) -> Alignment:
    """The translation (mm) that best pairs ``current`` with ``prior`` nodules, and the match it gives.

    See the module docstring. ``initial_mm`` (x, y, z) is the first estimate of the translation;
    ``search_radius_mm`` (> 0) bounds how far from it a candidate may lie.
    """
    start = np.array(_vector(initial_mm, "initial_mm"))
    radius = positive(search_radius_mm, "search_radius_mm")
    initial_match = match_nodules(current, prior, translation_mm=tuple(start))
    if not current or not prior:
        return Alignment(_as_vector(start), initial_match, "none", 0.0)

    current_centres = np.array([nodule.centre_mm for nodule in current])
    prior_centres = np.array([nodule.centre_mm for nodule in prior])
    differences = (current_centres[:, None, :] - prior_centres[None, :, :]).reshape(-1, 3)
    near = differences[np.linalg.norm(differences - start, axis=1) <= radius]

    best: tuple[tuple[int, float], Alignment] | None = None
    for candidate, method in [(start, "initial")] + [(d, "pairs") for d in near]:
        match = match_nodules(current, prior, translation_mm=_as_vector(candidate))
        translation = candidate
        if match.pairs:
            refined = np.mean(
                [current_centres[p.current_index] - prior_centres[p.prior_index] for p in match.pairs], axis=0
            )
            refined_match = match_nodules(current, prior, translation_mm=_as_vector(refined))
            if len(refined_match.pairs) >= len(match.pairs):
                translation, match, method = refined, refined_match, "pairs"
        residual = _residual_mm(match, current_centres, prior_centres, translation)
        cost = residual * len(match.pairs) + PRIOR_WEIGHT * float(np.linalg.norm(translation - start))
        key = (len(match.pairs), -cost)
        if best is None or key > best[0]:
            best = (key, Alignment(_as_vector(translation), match, method, residual))
    assert best is not None  # the initial estimate is always a candidate
    return best[1]


def _residual_mm(match: MatchResult, current: np.ndarray, prior: np.ndarray, translation: np.ndarray) -> float:
    """Mean distance (mm) of the matched pairs after adding ``translation`` to the prior centres; 0 without pairs."""
    if not match.pairs:
        return 0.0
    return float(
        np.mean([np.linalg.norm(current[p.current_index] - prior[p.prior_index] - translation) for p in match.pairs])
    )


def _as_vector(values: np.ndarray) -> Vector:
    return (float(values[0]), float(values[1]), float(values[2]))
