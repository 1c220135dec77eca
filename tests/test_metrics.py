"""Evaluation metrics on small hand-built cases; every expected value is worked out by hand in the comments."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models.candidates import Candidate
from models.metrics import (
    FROC_FP_RATES,
    ScanScores,
    accuracy,
    binary_metrics,
    choose_threshold,
    confusion_matrix,
    diameter_error_by_size,
    froc,
    froc_curve,
    match_scan,
    mean_absolute_error,
    multiclass_metrics,
    operating_point,
    per_class_metrics,
    roc_auc,
    roc_curve,
    scan_scores,
    score_scan,
    sensitivity_at,
    sensitivity_at_fp,
    sensitivity_by_size,
)

# Three scans, four nodules of interest (one missed), five false positives:
#   scan A: nodules 0.9 and missed; false positives 0.8, 0.3
#   scan B: nodule 0.7;             false positive 0.95
#   scan C: nodule 0.4;             false positives 0.6, 0.5
# Pooled, best first: 0.95 FP, 0.9 TP, 0.8 FP, 0.7 TP, 0.6 FP, 0.5 FP, 0.4 TP, 0.3 FP.
# FROC corners (FP per scan = FPs / 3, sensitivity = TPs / 4):
#   +inf (0, 0); 0.95 (1/3, 0); 0.9 (1/3, 1/4); 0.8 (2/3, 1/4); 0.7 (2/3, 2/4); 0.6 (1, 2/4);
#   0.5 (4/3, 2/4); 0.4 (4/3, 3/4); 0.3 (5/3, 3/4).
# Linear interpolation (LUNA16):
#   1/8 and 1/4 lie on (0, 0)-(1/3, 0): 0;  1/2 lies on (1/3, 1/4)-(2/3, 1/4): 1/4;
#   1 is the corner (1, 2/4): 1/2;  2, 4 and 8 are past the last corner: 3/4.
# CPM = (0 + 0 + 1/4 + 1/2 + 3/4 + 3/4 + 3/4) / 7 = 3 / 7.
SCANS = [
    ScanScores(nodule_scores=[0.9, -math.inf], false_positive_scores=[0.8, 0.3]),
    ScanScores(nodule_scores=[0.7], false_positive_scores=[0.95]),
    ScanScores(nodule_scores=[0.4], false_positive_scores=[0.6, 0.5]),
]


def test_froc_points_and_cpm_by_hand() -> None:
    result = froc(SCANS)
    expected = {0.125: 0.0, 0.25: 0.0, 0.5: 0.25, 1.0: 0.5, 2.0: 0.75, 4.0: 0.75, 8.0: 0.75}
    for rate, sens in expected.items():
        assert result[f"sens@{rate:g}fp"] == pytest.approx(sens), rate
    assert result["cpm"] == pytest.approx(3 / 7)
    assert set(result) == {f"sens@{r:g}fp" for r in FROC_FP_RATES} | {"cpm"}


def test_froc_curve_corners_by_hand() -> None:
    curve = froc_curve(SCANS)
    assert (curve.n_scans, curve.n_nodules) == (3, 4)
    assert curve.fp_per_scan == pytest.approx([0, 1 / 3, 1 / 3, 2 / 3, 2 / 3, 1, 4 / 3, 4 / 3, 5 / 3])
    assert curve.sensitivity == pytest.approx([0, 0, 1 / 4, 1 / 4, 2 / 4, 2 / 4, 2 / 4, 3 / 4, 3 / 4])
    assert curve.thresholds[0] == math.inf
    assert curve.thresholds[1:] == pytest.approx([0.95, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3])
    # On a vertical step (4/3 FP per scan: 2/4 then 3/4) the higher sensitivity counts.
    assert sensitivity_at(curve, 4 / 3) == pytest.approx(0.75)
    # Between corners (0.5 and 0.7 both lie on (1/3, 1/4)-(2/3, 1/4) and (2/3, 2/4)-(1, 2/4)).
    assert sensitivity_at(curve, 0.7) == pytest.approx(0.5)
    assert sensitivity_at_fp(SCANS, 1.0) == pytest.approx(0.5)


def test_froc_tie_between_a_hit_and_a_false_positive_is_a_diagonal() -> None:
    # One scan: a nodule and a false positive both at 0.5. Corners (0, 0) -> (1, 1): a diagonal, so
    # sensitivity at r <= 1 FP is r: 1/8, 1/4, 1/2, 1, then 1, 1, 1. CPM = (0.125+0.25+0.5+4)/7 = 4.875/7.
    result = froc([ScanScores([0.5], [0.5])])
    assert result["sens@0.125fp"] == pytest.approx(0.125)
    assert result["sens@0.5fp"] == pytest.approx(0.5)
    assert result["sens@2fp"] == pytest.approx(1.0)
    assert result["cpm"] == pytest.approx(4.875 / 7)


def test_froc_without_false_positives_and_without_detections() -> None:
    # No false positive: every point is at 0 FP per scan, so every rate has the final sensitivity 2/3.
    assert froc([ScanScores([0.9, 0.2, -math.inf], [])])["cpm"] == pytest.approx(2 / 3)
    # Nothing detected: sensitivity 0 everywhere.
    assert froc([ScanScores([-math.inf], [0.7])])["cpm"] == 0.0
    # No nodule of interest: sensitivity undefined.
    assert math.isnan(froc([ScanScores([], [0.7])])["cpm"])


def test_operating_point_and_threshold_by_hand() -> None:
    # Threshold 0.6 keeps nodules 0.9, 0.7 (2 of 4) and false positives 0.95, 0.8, 0.6 (3 on 3 scans).
    assert operating_point(SCANS, 0.6) == pytest.approx((0.5, 1.0))
    # At most 1/3 FP per scan: 0.95 alone is 1/3 and 0.9 adds no FP -> lowest such threshold 0.9.
    assert choose_threshold(SCANS, max_fp_per_scan=1 / 3) == pytest.approx(0.9)


def test_hit_rule_overlaps_duplicates_and_irrelevant_nodules() -> None:
    # Nodules in mm: A at the origin, 10 mm; B at (0, 0, 6), 10 mm (A and B overlap); C at (50, 0, 0), 3 mm.
    nodules = [(0.0, 0.0, 0.0), (0.0, 0.0, 6.0), (50.0, 0.0, 0.0)]
    diameters = [10.0, 10.0, 3.0]
    candidates = [
        (0.0, 0.0, 3.0),  # 3 mm from A and from B: hits both
        (0.0, 0.0, -5.0),  # exactly 5 mm = radius from A: hit (duplicate of A, lower score)
        (50.0, 0.0, 1.0),  # 1 mm from C (radius 1.5): hits the 3 mm nodule
        (0.0, 30.0, 0.0),  # hits nothing: false positive
    ]
    scores = [0.6, 0.4, 0.7, 0.2]
    match = match_scan(candidates, scores, nodules, diameters)
    assert match.best_candidate == [0, 0, 2]
    assert match.false_positives == [3]
    assert match.hits[1].tolist() == [True, False, False]
    # Size of interest 4 mm: A and B scored 0.6 (same candidate), C irrelevant so candidate 2 is ignored,
    # the duplicate (0.4) is neither a hit nor a false positive.
    scan = scan_scores(match, scores, diameters, min_diameter_mm=4.0)
    assert scan.nodule_scores == [0.6, 0.6]
    assert scan.false_positive_scores == [0.2]


def test_score_scan_in_voxels_scales_by_spacing() -> None:
    # 2 voxels along z at 2.5 mm = 5 mm from a 12 mm nodule: hit; 3 voxels = 7.5 mm: false positive.
    cands = [Candidate((12.0, 20.0, 20.0), (5, 5, 5), 5.0, 0.9), Candidate((13.0, 20.0, 20.0), (5, 5, 5), 5.0, 0.5)]
    scan = score_scan(cands, [((10.0, 20.0, 20.0), 12.0)], (2.5, 1.0, 1.0), min_diameter_mm=6.0)
    assert (scan.nodule_scores, scan.false_positive_scores) == ([0.9], [0.5])


def test_sensitivity_by_size_bins_by_hand() -> None:
    diameters = [3.0, 5.0, 5.9, 6.0, 7.99, 8.0, 14.9, 15.0, 30.0]
    detected = [True, False, True, True, False, True, True, False, True]
    result = sensitivity_by_size(diameters, detected)
    # 3 mm is in no bin. 4-6: 5 (no), 5.9 (yes) -> 1/2; 6-8: 6 (yes), 7.99 (no) -> 1/2;
    # 8-15: 8, 14.9 (both yes) -> 1; >=15: 15 (no), 30 (yes) -> 1/2.
    assert {k: (v["n"], v["detected"], v["sensitivity"]) for k, v in result.items()} == {
        "4-6": (2, 1, 0.5),
        "6-8": (2, 1, 0.5),
        "8-15": (2, 2, 1.0),
        ">=15": (2, 1, 0.5),
    }
    assert math.isnan(sensitivity_by_size([5.0], [True], [(6.0, 8.0)])["6-8"]["sensitivity"])


def test_diameter_errors_by_hand() -> None:
    true = [5.0, 7.0, 10.0, 20.0]
    measured = [6.0, 6.5, 13.0, 19.0]
    # |errors| 1, 0.5, 3, 1 -> MAE 5.5 / 4 = 1.375; signed +1, -0.5, +3, -1.
    assert mean_absolute_error(true, measured) == pytest.approx(1.375)
    by_size = diameter_error_by_size(true, measured)
    expected = {"4-6": (1, 1.0, 1.0), "6-8": (1, 0.5, -0.5), "8-15": (1, 3.0, 3.0), ">=15": (1, 1.0, -1.0)}
    assert list(by_size) == list(expected)
    for label, (n, mae, bias) in expected.items():
        assert (by_size[label]["n"], by_size[label]["mae_mm"], by_size[label]["bias_mm"]) == pytest.approx(
            (n, mae, bias)
        )
    assert math.isnan(mean_absolute_error([], []))
    with pytest.raises(ValueError, match="2 true values but 1"):
        mean_absolute_error([1.0, 2.0], [1.0])


def test_binary_confusion_matrix_metrics_by_hand() -> None:
    # 10 cases: 4 positives (3 found, 1 missed), 6 negatives (2 called positive, 4 not).
    y_true = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    y_pred = [1, 1, 1, 0, 1, 1, 0, 0, 0, 0]
    cm = confusion_matrix(y_true, y_pred, [0, 1])
    assert cm.tolist() == [[4, 2], [1, 3]]  # rows true (0, 1), columns predicted
    m = binary_metrics(cm)
    # accuracy (3 + 4) / 10; precision 3 / (3 + 2); recall 3 / (3 + 1); specificity 4 / (4 + 2);
    # F1 = 2 TP / (2 TP + FP + FN) = 6 / 9.
    assert m["accuracy"] == pytest.approx(0.7)
    assert m["precision"] == pytest.approx(0.6)
    assert m["recall"] == pytest.approx(0.75)
    assert m["specificity"] == pytest.approx(4 / 6)
    assert m["f1"] == pytest.approx(6 / 9)
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (3, 2, 1, 4)
    # With class 0 as the positive class, precision and recall become NPV-like: 4/5 and 4/6.
    m0 = binary_metrics(cm, positive=0)
    assert (m0["precision"], m0["recall"], m0["specificity"]) == pytest.approx((4 / 5, 4 / 6, 3 / 4))


def test_three_class_confusion_matrix_by_hand() -> None:
    labels = ["solid", "part_solid", "ground_glass"]
    cm = np.array([[5, 1, 0], [2, 3, 1], [0, 1, 7]])
    # 20 cases, 15 on the diagonal: accuracy 0.75.
    # solid:        TP 5, FP 2 (column 7 - 5), FN 1, TN 12: precision 5/7, recall 5/6, specificity 12/14, F1 10/13
    # part_solid:   TP 3, FP 2, FN 3, TN 12:               precision 3/5, recall 3/6, specificity 12/14, F1 6/11
    # ground_glass: TP 7, FP 1, FN 1, TN 11:               precision 7/8, recall 7/8, specificity 11/12, F1 14/16
    per = per_class_metrics(cm)
    assert per["precision"] == pytest.approx([5 / 7, 3 / 5, 7 / 8])
    assert per["recall"] == pytest.approx([5 / 6, 1 / 2, 7 / 8])
    assert per["specificity"] == pytest.approx([12 / 14, 12 / 14, 11 / 12])
    assert per["f1"] == pytest.approx([10 / 13, 6 / 11, 7 / 8])
    m = multiclass_metrics(cm, labels)
    assert m["accuracy"] == pytest.approx(0.75) == accuracy(cm)
    assert m["macro_precision"] == pytest.approx((5 / 7 + 3 / 5 + 7 / 8) / 3)
    assert m["macro_recall"] == pytest.approx((5 / 6 + 1 / 2 + 7 / 8) / 3)
    assert m["macro_f1"] == pytest.approx((10 / 13 + 6 / 11 + 7 / 8) / 3)
    assert m["per_class"]["part_solid"]["support"] == 6
    assert confusion_matrix(["solid", "ground_glass"], ["part_solid", "ground_glass"], labels).tolist() == [
        [0, 1, 0],
        [0, 0, 0],
        [0, 0, 1],
    ]


def test_undefined_ratios_are_nan_and_macro_skips_them() -> None:
    # Class 1 is never predicted: its precision is 0/0 -> NaN; macro precision is class 0's alone, 2/3.
    cm = np.array([[2, 0], [1, 0]])
    per = per_class_metrics(cm)
    assert math.isnan(per["precision"][1])
    assert multiclass_metrics(cm, ["a", "b"])["macro_precision"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="'x' is not one of"):
        confusion_matrix(["x"], ["a"], ["a", "b"])
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        accuracy(np.array([1, 2, 3]))


def test_roc_auc_with_a_tie_by_hand() -> None:
    labels = [1, 1, 0, 0]
    scores = [0.9, 0.5, 0.5, 0.1]
    # Mann-Whitney over the 4 (positive, negative) pairs: (0.9, 0.5) 1, (0.9, 0.1) 1, (0.5, 0.5) tie 1/2,
    # (0.5, 0.1) 1 -> 3.5 / 4 = 0.875.
    # ROC corners: +inf (0, 0); 0.9 (0, 1/2); 0.5 (1/2, 1) (the tie: a diagonal); 0.1 (1, 1).
    # Trapezoids: 0 + 1/2 x (1/2 + 1) / 2 + 1/2 x 1 = 0.375 + 0.5 = 0.875.
    fpr, tpr, thresholds = roc_curve(labels, scores)
    assert fpr.tolist() == [0.0, 0.0, 0.5, 1.0]
    assert tpr.tolist() == [0.0, 0.5, 1.0, 1.0]
    assert thresholds[1:].tolist() == [0.9, 0.5, 0.1]
    assert roc_auc(labels, scores) == pytest.approx(0.875)
    # A tied pair alone: 1/2. Perfect and reversed rankings: 1 and 0.
    assert roc_auc([1, 0], [0.3, 0.3]) == pytest.approx(0.5)
    assert roc_auc([0, 1, 1], [0.1, 0.2, 0.3]) == pytest.approx(1.0)
    assert roc_auc([1, 0, 0], [0.1, 0.2, 0.3]) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="positives and negatives, got 2 and 0"):
        roc_auc([1, 1], [0.1, 0.2])


def test_roc_auc_equals_mann_whitney_on_random_ties() -> None:
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 200).astype(bool)
    scores = rng.integers(0, 10, 200) / 10  # many ties
    pos, neg = scores[labels], scores[~labels]
    u = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    assert roc_auc(labels, scores) == pytest.approx(u / (len(pos) * len(neg)))
