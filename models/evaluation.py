"""Detection metrics on scans with known nodules (LUNA16-style hit test).

A candidate hits a true nodule when its centre lies within the nodule's radius (diameter / 2, in mm).
Candidates hitting nodules smaller than the size of interest are ignored (neither hit nor false positive);
a nodule's score is the best score among the candidates that hit it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from models.candidates import Candidate

FROC_FP_RATES = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


@dataclass(frozen=True)
class ScanScores:
    """Per scan: best score of each nodule of interest (-inf when missed) and false-positive scores."""

    nodule_scores: list[float]
    false_positive_scores: list[float]


def score_scan(
    candidates: Sequence[Candidate],
    nodules: Sequence[tuple[tuple[float, float, float], float]],
    spacing_zyx_mm: tuple[float, float, float],
    *,
    min_diameter_mm: float,
) -> ScanScores:
    """Match `candidates` to `nodules` ((centre (z, y, x) voxels, diameter mm)) of one scan."""
    spacing = np.asarray(spacing_zyx_mm, dtype=np.float64)
    centers = np.array([n[0] for n in nodules], dtype=np.float64).reshape(-1, 3) * spacing
    radii = np.array([n[1] / 2 for n in nodules], dtype=np.float64)
    of_interest = np.array([n[1] >= min_diameter_mm for n in nodules], dtype=bool)
    best = np.full(len(nodules), -np.inf)
    false_positives = []
    for cand in candidates:
        dist = np.linalg.norm(centers - np.asarray(cand.center_zyx_vox) * spacing, axis=1)
        hit = dist <= radii
        if not hit.any():
            false_positives.append(cand.score)
            continue
        best[hit] = np.maximum(best[hit], cand.score)
    return ScanScores(nodule_scores=[float(s) for s in best[of_interest]], false_positive_scores=false_positives)


def operating_point(scans: Sequence[ScanScores], threshold: float) -> tuple[float, float]:
    """(sensitivity, false positives per scan) when keeping candidates with score >= `threshold`."""
    nodule_scores = np.array([s for scan in scans for s in scan.nodule_scores])
    fp_scores = np.array([s for scan in scans for s in scan.false_positive_scores])
    sensitivity = float((nodule_scores >= threshold).mean()) if len(nodule_scores) else float("nan")
    fp_per_scan = float((fp_scores >= threshold).sum() / max(len(scans), 1))
    return sensitivity, fp_per_scan


def _thresholds(scans: Sequence[ScanScores]) -> np.ndarray:
    scores = {s for scan in scans for s in (*scan.nodule_scores, *scan.false_positive_scores) if np.isfinite(s)}
    return np.array(sorted(scores | {1.0}))


def choose_threshold(scans: Sequence[ScanScores], *, max_fp_per_scan: float) -> float:
    """The lowest threshold whose false positives per scan stay <= `max_fp_per_scan` (max sensitivity)."""
    for threshold in _thresholds(scans):
        if operating_point(scans, float(threshold))[1] <= max_fp_per_scan:
            return float(threshold)
    return 1.0


def froc(scans: Sequence[ScanScores], fp_rates: Sequence[float] = FROC_FP_RATES) -> dict[str, float]:
    """Best sensitivity reachable at each average false-positive rate per scan, and their mean (CPM)."""
    points = [operating_point(scans, float(t)) for t in _thresholds(scans)]
    result = {}
    for rate in fp_rates:
        reachable = [sens for sens, fp in points if fp <= rate]
        result[f"sens@{rate:g}fp"] = max(reachable) if reachable else 0.0
    result["cpm"] = float(np.mean([result[f"sens@{rate:g}fp"] for rate in fp_rates]))
    return result
