"""Evaluation metrics: LUNA16 detection (hit test, FROC, CPM), diameter error and classification.

Pure functions on numbers (numpy only); nothing here loads a model or an image.

Detection follows the LUNA16 evaluation (Setio et al. 2017, ``noduleCADEvaluationLUNA16.py``):

- a candidate *hits* a true nodule when its centre lies within the nodule's radius (diameter / 2, mm) of the
  nodule's centre, both in the same millimetre frame (world coordinates, or voxel index x voxel size);
- a nodule's score is the best score among the candidates that hit it; other candidates hitting it are
  neither hits nor false positives; a candidate may hit (and count for) two overlapping nodules;
- nodules below the size of interest are *irrelevant*: candidates hitting them are ignored, they are not
  counted in the sensitivity;
- every candidate that hits no nodule at all is a false positive;
- the FROC curve is sensitivity against the average number of false positives per scan, over all score
  thresholds, linearly interpolated between its points (LUNA16 uses ``np.interp`` on the curve);
- CPM = mean sensitivity at 1/8, 1/4, 1/2, 1, 2, 4 and 8 false positives per scan.

LUNA16 tests ``distance < radius``; here a candidate exactly on the sphere counts as a hit (``<=``), as the
project's training code always did. Missed nodules count in the sensitivity's denominator.

Classification metrics take a confusion matrix whose rows are the true class and columns the predicted
class. A ratio whose denominator is 0 (precision of a class never predicted, say) is NaN, and macro
averages are over the classes where it is defined.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from models.candidates import Candidate

FROC_FP_RATES: tuple[float, ...] = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
"""The seven LUNA16 operating points, in false positives per scan."""

SIZE_BINS_MM: tuple[tuple[float, float], ...] = ((4.0, 6.0), (6.0, 8.0), (8.0, 15.0), (15.0, math.inf))
"""Nodule size bins [low, high) in mm of mean diameter, for per-size sensitivity and diameter error."""


# --------------------------------------------------------------------------------------------- detection


@dataclass(frozen=True)
class ScanScores:
    """Per scan: best score of each nodule of interest (-inf when missed) and the false positives' scores."""

    nodule_scores: list[float]
    false_positive_scores: list[float]


@dataclass(frozen=True)
class ScanMatch:
    """The LUNA16 hit test on one scan, independent of any size of interest or score threshold.

    ``hits[i, j]``: candidate i hits nodule j. ``best_candidate[j]``: index of the best-scoring candidate
    hitting nodule j (the first of equals), None when none does. ``false_positives``: indices of the
    candidates that hit no nodule.
    """

    hits: np.ndarray
    best_candidate: list[int | None]
    false_positives: list[int]


def match_scan(
    candidate_centers_mm: np.ndarray | Sequence[Sequence[float]],
    candidate_scores: Sequence[float],
    nodule_centers_mm: np.ndarray | Sequence[Sequence[float]],
    nodule_diameters_mm: Sequence[float],
) -> ScanMatch:
    """Match candidates to the true nodules of one scan (all positions (N, 3) in one millimetre frame).

    A candidate hits a nodule when the distance between their centres is <= the nodule's diameter / 2.
    """
    cands = np.asarray(candidate_centers_mm, dtype=np.float64).reshape(-1, 3)
    nods = np.asarray(nodule_centers_mm, dtype=np.float64).reshape(-1, 3)
    scores = np.asarray(candidate_scores, dtype=np.float64).reshape(-1)
    radii = np.asarray(nodule_diameters_mm, dtype=np.float64).reshape(-1) / 2
    if len(scores) != len(cands):
        raise ValueError(f"{len(cands)} candidate centres but {len(scores)} scores")
    if len(radii) != len(nods):
        raise ValueError(f"{len(nods)} nodule centres but {len(radii)} diameters")
    if (radii < 0).any():
        raise ValueError(f"nodule diameters must be >= 0 mm, got {list(nodule_diameters_mm)}")
    dist = np.linalg.norm(cands[:, None, :] - nods[None, :, :], axis=2) if len(cands) and len(nods) else None
    hits = dist <= radii[None, :] if dist is not None else np.zeros((len(cands), len(nods)), dtype=bool)
    best: list[int | None] = []
    for j in range(len(nods)):
        hitting = np.flatnonzero(hits[:, j])
        best.append(int(hitting[np.argmax(scores[hitting])]) if len(hitting) else None)
    false_positives = [int(i) for i in np.flatnonzero(~hits.any(axis=1))]
    return ScanMatch(hits=hits, best_candidate=best, false_positives=false_positives)


def scan_scores(
    match: ScanMatch,
    candidate_scores: Sequence[float],
    nodule_diameters_mm: Sequence[float],
    *,
    min_diameter_mm: float,
) -> ScanScores:
    """The FROC inputs of one matched scan: nodules of mean diameter >= ``min_diameter_mm`` are of interest.

    Candidates that only hit smaller nodules are ignored (LUNA16's "irrelevant findings").
    """
    scores = np.asarray(candidate_scores, dtype=np.float64).reshape(-1)
    nodule_scores = [
        float(scores[b]) if b is not None else -math.inf
        for b, d in zip(match.best_candidate, nodule_diameters_mm, strict=True)
        if d >= min_diameter_mm
    ]
    return ScanScores(
        nodule_scores=nodule_scores, false_positive_scores=[float(scores[i]) for i in match.false_positives]
    )


def score_scan(
    candidates: Sequence[Candidate],
    nodules: Sequence[tuple[tuple[float, float, float], float]],
    spacing_zyx_mm: tuple[float, float, float],
    *,
    min_diameter_mm: float,
) -> ScanScores:
    """Match `candidates` to `nodules` ((centre (z, y, x) voxels, diameter mm)) of one scan.

    Distances are voxel offsets x `spacing_zyx_mm` (mm): right for an orthogonal voxel grid.
    """
    spacing = np.asarray(spacing_zyx_mm, dtype=np.float64)
    cand_mm = np.array([c.center_zyx_vox for c in candidates], dtype=np.float64).reshape(-1, 3) * spacing
    nod_mm = np.array([n[0] for n in nodules], dtype=np.float64).reshape(-1, 3) * spacing
    diameters = [float(n[1]) for n in nodules]
    scores = [c.score for c in candidates]
    match = match_scan(cand_mm, scores, nod_mm, diameters)
    return scan_scores(match, scores, diameters, min_diameter_mm=min_diameter_mm)


def operating_point(scans: Sequence[ScanScores], threshold: float) -> tuple[float, float]:
    """(sensitivity, false positives per scan) when keeping candidates with score >= `threshold`.

    Sensitivity is NaN when the scans hold no nodule of interest.
    """
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


@dataclass(frozen=True)
class FrocCurve:
    """The FROC curve's corner points, from threshold +inf (0 FP, 0 sensitivity) down to the lowest score.

    ``fp_per_scan`` is non-decreasing; ``sensitivity`` (0..1, NaN without nodules) and ``thresholds``
    (score >= threshold is kept) go with it point by point.
    """

    fp_per_scan: np.ndarray
    sensitivity: np.ndarray
    thresholds: np.ndarray
    n_scans: int
    n_nodules: int


def froc_curve(scans: Sequence[ScanScores]) -> FrocCurve:
    """The FROC curve over every distinct score of the pooled candidates of `scans`.

    Tied scores form one point, so a true and a false positive with the same score make a diagonal step.
    """
    if not scans:
        raise ValueError("froc_curve needs at least one scan, got none")
    nodule_scores = np.array([s for scan in scans for s in scan.nodule_scores], dtype=np.float64)
    fp_scores = np.array([s for scan in scans for s in scan.false_positive_scores], dtype=np.float64)
    finite = np.concatenate([nodule_scores[np.isfinite(nodule_scores)], fp_scores[np.isfinite(fp_scores)]])
    thresholds = np.concatenate([[math.inf], np.unique(finite)[::-1]])
    # counts of scores >= each threshold (thresholds descending)
    tp = np.array([(nodule_scores >= t).sum() for t in thresholds], dtype=np.float64)
    fp = np.array([(fp_scores >= t).sum() for t in thresholds], dtype=np.float64)
    n_nodules = len(nodule_scores)
    sensitivity = tp / n_nodules if n_nodules else np.full(len(tp), np.nan)
    return FrocCurve(
        fp_per_scan=fp / len(scans),
        sensitivity=sensitivity,
        thresholds=thresholds,
        n_scans=len(scans),
        n_nodules=n_nodules,
    )


def sensitivity_at(curve: FrocCurve, fp_per_scan: float) -> float:
    """Sensitivity on the FROC curve at `fp_per_scan`, linearly interpolated (LUNA16's ``np.interp``).

    Where the curve climbs at one FP rate the highest sensitivity there is taken; beyond the curve's last
    point its last sensitivity holds.
    """
    if fp_per_scan < 0:
        raise ValueError(f"fp_per_scan must be >= 0, got {fp_per_scan}")
    if curve.n_nodules == 0:
        return float("nan")
    return float(np.interp(fp_per_scan, curve.fp_per_scan, curve.sensitivity))


def sensitivity_at_fp(scans: Sequence[ScanScores], fp_per_scan: float) -> float:
    """Sensitivity at an average of `fp_per_scan` false positives per scan (interpolated FROC)."""
    return sensitivity_at(froc_curve(scans), fp_per_scan)


def froc(scans: Sequence[ScanScores], fp_rates: Sequence[float] = FROC_FP_RATES) -> dict[str, float]:
    """Sensitivity at each false-positive rate per scan ("sens@1fp", ...) and their mean ("cpm").

    With the default rates "cpm" is LUNA16's Competition Performance Metric.
    """
    curve = froc_curve(scans)
    result = {f"sens@{rate:g}fp": sensitivity_at(curve, float(rate)) for rate in fp_rates}
    result["cpm"] = float(np.mean([result[f"sens@{rate:g}fp"] for rate in fp_rates]))
    return result


def size_bin_label(low_mm: float, high_mm: float) -> str:
    """'4-6' for [4, 6) mm, '>=15' for [15, inf), '<4' for [0, 4)."""
    if math.isinf(high_mm):
        return f">={low_mm:g}"
    return f"<{high_mm:g}" if low_mm <= 0 else f"{low_mm:g}-{high_mm:g}"


def _bin_masks(diameters_mm: np.ndarray, bins: Sequence[tuple[float, float]]) -> list[tuple[str, np.ndarray]]:
    return [(size_bin_label(lo, hi), (diameters_mm >= lo) & (diameters_mm < hi)) for lo, hi in bins]


def sensitivity_by_size(
    diameters_mm: Sequence[float],
    detected: Sequence[bool],
    bins: Sequence[tuple[float, float]] = SIZE_BINS_MM,
) -> dict[str, dict[str, float]]:
    """Per size bin [low, high) of true mean diameter (mm): nodules "n", "detected" and "sensitivity".

    Sensitivity is NaN for an empty bin.
    """
    d = np.asarray(diameters_mm, dtype=np.float64).reshape(-1)
    found = np.asarray(detected, dtype=bool).reshape(-1)
    if len(d) != len(found):
        raise ValueError(f"{len(d)} diameters but {len(found)} detection flags")
    out: dict[str, dict[str, float]] = {}
    for label, mask in _bin_masks(d, bins):
        n = int(mask.sum())
        k = int(found[mask].sum())
        out[label] = {"n": n, "detected": k, "sensitivity": k / n if n else float("nan")}
    return out


def mean_absolute_error(true_mm: Sequence[float], measured_mm: Sequence[float]) -> float:
    """Mean of |measured - true| (mm); NaN for no pairs."""
    t = np.asarray(true_mm, dtype=np.float64).reshape(-1)
    m = np.asarray(measured_mm, dtype=np.float64).reshape(-1)
    if len(t) != len(m):
        raise ValueError(f"{len(t)} true values but {len(m)} measured values")
    return float(np.abs(m - t).mean()) if len(t) else float("nan")


def diameter_error_by_size(
    true_mm: Sequence[float],
    measured_mm: Sequence[float],
    bins: Sequence[tuple[float, float]] = SIZE_BINS_MM,
) -> dict[str, dict[str, float]]:
    """Per size bin of TRUE diameter: "n", mean absolute error "mae_mm" and mean signed error "bias_mm"."""
    t = np.asarray(true_mm, dtype=np.float64).reshape(-1)
    m = np.asarray(measured_mm, dtype=np.float64).reshape(-1)
    if len(t) != len(m):
        raise ValueError(f"{len(t)} true values but {len(m)} measured values")
    out: dict[str, dict[str, float]] = {}
    for label, mask in _bin_masks(t, bins):
        n = int(mask.sum())
        out[label] = {
            "n": n,
            "mae_mm": float(np.abs(m[mask] - t[mask]).mean()) if n else float("nan"),
            "bias_mm": float((m[mask] - t[mask]).mean()) if n else float("nan"),
        }
    return out


# ---------------------------------------------------------------------------------------- classification


def confusion_matrix(
    y_true: Sequence[int | str], y_pred: Sequence[int | str], labels: Sequence[int | str]
) -> np.ndarray:
    """Counts (len(labels), len(labels)): row = true class, column = predicted class, in `labels` order."""
    if len(y_true) != len(y_pred):
        raise ValueError(f"{len(y_true)} true labels but {len(y_pred)} predictions")
    index = {label: i for i, label in enumerate(labels)}
    if len(index) != len(labels):
        raise ValueError(f"labels must be distinct, got {list(labels)}")
    cm = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for t, p in zip(y_true, y_pred, strict=True):
        for value in (t, p):
            if value not in index:
                raise ValueError(f"label {value!r} is not one of {list(labels)}")
        cm[index[t], index[p]] += 1
    return cm


def _check_cm(cm: np.ndarray) -> np.ndarray:
    cm = np.asarray(cm)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] < 2:
        raise ValueError(f"a confusion matrix must be square, at least 2 x 2, got shape {cm.shape}")
    if (cm < 0).any():
        raise ValueError(f"a confusion matrix holds counts >= 0, got {cm.tolist()}")
    return cm.astype(np.float64)


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den else float("nan")


def accuracy(cm: np.ndarray) -> float:
    """Share of the diagonal: correct / all (NaN when empty)."""
    c = _check_cm(cm)
    return _ratio(np.trace(c), c.sum())


def per_class_metrics(cm: np.ndarray) -> dict[str, np.ndarray]:
    """One-vs-rest "precision", "recall" (sensitivity), "specificity", "f1" and "support" of each class."""
    c = _check_cm(cm)
    tp = np.diag(c)
    fp = c.sum(axis=0) - tp
    fn = c.sum(axis=1) - tp
    tn = c.sum() - tp - fp - fn
    precision = np.array([_ratio(a, a + b) for a, b in zip(tp, fp, strict=True)])
    recall = np.array([_ratio(a, a + b) for a, b in zip(tp, fn, strict=True)])
    specificity = np.array([_ratio(a, a + b) for a, b in zip(tn, fp, strict=True)])
    f1 = np.array([_ratio(2 * a, 2 * a + b + d) for a, b, d in zip(tp, fp, fn, strict=True)])
    return {"precision": precision, "recall": recall, "specificity": specificity, "f1": f1, "support": tp + fn}


def binary_metrics(cm: np.ndarray, positive: int = 1) -> dict[str, float]:
    """Accuracy, precision, recall (sensitivity), specificity and F1 of a 2 x 2 matrix; class `positive` is positive.

    Also the counts "tp", "fp", "fn", "tn".
    """
    c = _check_cm(cm)
    if c.shape != (2, 2):
        raise ValueError(f"binary_metrics needs a 2 x 2 matrix, got shape {c.shape}")
    if positive not in (0, 1):
        raise ValueError(f"positive must be 0 or 1, got {positive!r}")
    per = per_class_metrics(c)
    neg = 1 - positive
    return {
        "accuracy": accuracy(c),
        "precision": float(per["precision"][positive]),
        "recall": float(per["recall"][positive]),
        "specificity": float(per["specificity"][positive]),
        "f1": float(per["f1"][positive]),
        "tp": int(c[positive, positive]),
        "fp": int(c[neg, positive]),
        "fn": int(c[positive, neg]),
        "tn": int(c[neg, neg]),
    }


def _nanmean(values: np.ndarray) -> float:
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if len(finite) else float("nan")


def multiclass_metrics(cm: np.ndarray, labels: Sequence[str]) -> dict[str, object]:
    """Accuracy, macro precision / recall / specificity / F1 (mean over classes where defined), per class."""
    c = _check_cm(cm)
    if len(labels) != c.shape[0]:
        raise ValueError(f"{len(labels)} labels for a {c.shape[0]} x {c.shape[0]} matrix: {list(labels)}")
    per = per_class_metrics(c)
    return {
        "accuracy": accuracy(c),
        "macro_precision": _nanmean(per["precision"]),
        "macro_recall": _nanmean(per["recall"]),
        "macro_specificity": _nanmean(per["specificity"]),
        "macro_f1": _nanmean(per["f1"]),
        "per_class": {
            str(label): {name: float(values[i]) for name, values in per.items()} for i, label in enumerate(labels)
        },
    }


def roc_curve(y_true: Sequence[bool | int], scores: Sequence[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate, thresholds) over every distinct score, from (0, 0) at +inf.

    A sample is called positive when its score >= the threshold; tied scores form one point (a diagonal step).
    """
    y = np.asarray(y_true, dtype=bool).reshape(-1)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(y) != len(s):
        raise ValueError(f"{len(y)} labels but {len(s)} scores")
    if np.isnan(s).any():
        raise ValueError(f"scores must not be NaN, got {s.tolist()}")
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"a ROC curve needs positives and negatives, got {n_pos} and {n_neg}")
    thresholds = np.concatenate([[math.inf], np.unique(s)[::-1]])
    tpr = np.array([(s[y] >= t).sum() for t in thresholds], dtype=np.float64) / n_pos
    fpr = np.array([(s[~y] >= t).sum() for t in thresholds], dtype=np.float64) / n_neg
    return fpr, tpr, thresholds


def roc_auc(y_true: Sequence[bool | int], scores: Sequence[float]) -> float:
    """Area under the ROC curve (trapezoids), = Mann-Whitney U / (n_pos x n_neg) with ties counting 1/2."""
    fpr, tpr, _ = roc_curve(y_true, scores)
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
