"""Lung-RADS v2022 rules (REFERENCE.md section 1): every band edge on both sides, for each nodule type."""

from __future__ import annotations

import pytest

from screening import (
    Assessment,
    LungRads,
    Measurement,
    NoduleHistory,
    NoduleType,
    exam_category,
    management,
    mean_diameter_mm,
    nodule_category,
)


def solid(mm: float, *, spiculated: bool = False) -> Measurement:
    return Measurement.from_mean_diameter("solid", mm, spiculated=spiculated)


def part_solid(total_mm: float, solid_mm: float, *, spiculated: bool = False) -> Measurement:
    return Measurement.from_mean_diameter("part_solid", total_mm, solid_component_mm=solid_mm, spiculated=spiculated)


def ground_glass(mm: float, *, spiculated: bool = False) -> Measurement:
    return Measurement.from_mean_diameter("ground_glass", mm, spiculated=spiculated)


def calcified(mm: float, *, spiculated: bool = False) -> Measurement:
    return Measurement.from_mean_diameter("calcified", mm, spiculated=spiculated)


def category(history: NoduleHistory) -> str:
    return nodule_category(history).category.value


BASELINE = [
    ("solid-1.0", solid(1.0), "2"),
    ("solid-5.9", solid(5.9), "2"),
    ("solid-6.0", solid(6.0), "3"),
    ("solid-7.9", solid(7.9), "3"),
    ("solid-8.0", solid(8.0), "4A"),
    ("solid-14.9", solid(14.9), "4A"),
    ("solid-15.0", solid(15.0), "4B"),
    ("part-solid-5.9-total", part_solid(5.9, 3.0), "2"),
    ("part-solid-6.0-total-solid-5.9", part_solid(6.0, 5.9), "3"),
    ("part-solid-solid-5.9", part_solid(10.0, 5.9), "3"),
    ("part-solid-solid-6.0", part_solid(10.0, 6.0), "4A"),
    ("part-solid-solid-7.9", part_solid(10.0, 7.9), "4A"),
    ("part-solid-solid-8.0", part_solid(10.0, 8.0), "4B"),
    ("ground-glass-29.9", ground_glass(29.9), "2"),
    ("ground-glass-30.0", ground_glass(30.0), "3"),
    ("calcified-20", calcified(20.0), "1"),
]


@pytest.mark.parametrize(("measurement", "expected"), [row[1:] for row in BASELINE], ids=[row[0] for row in BASELINE])
def test_baseline_bands(measurement: Measurement, expected: str) -> None:
    assert category(NoduleHistory.at_baseline(measurement)) == expected


NEW = [
    ("solid-3.9", solid(3.9), "2"),
    ("solid-4.0", solid(4.0), "3"),
    ("solid-5.9", solid(5.9), "3"),
    ("solid-6.0", solid(6.0), "4A"),
    ("solid-7.9", solid(7.9), "4A"),
    ("solid-8.0", solid(8.0), "4B"),
    ("part-solid-total-5.9", part_solid(5.9, 3.9), "3"),
    ("part-solid-total-5.9-solid-5.9", part_solid(5.9, 5.9), "3"),
    ("part-solid-total-6.0-solid-3.9", part_solid(6.0, 3.9), "4A"),
    ("part-solid-total-6.0-solid-4.0", part_solid(6.0, 4.0), "4B"),
    ("ground-glass-29.9", ground_glass(29.9), "2"),
    ("ground-glass-30.0", ground_glass(30.0), "3"),
    ("calcified", calcified(9.0), "1"),
]


@pytest.mark.parametrize(("measurement", "expected"), [row[1:] for row in NEW], ids=[row[0] for row in NEW])
def test_new_nodule_at_follow_up(measurement: Measurement, expected: str) -> None:
    assert category(NoduleHistory.new_at_follow_up(measurement)) == expected


# (id, prior, current, interval days, prior category, expected)
FOLLOW_UP = [
    # solid growth: > 1.5 mm within 12 months (<= 366 days); growing < 8 mm -> 4A, >= 8 mm -> 4B
    ("solid-growing-6.6", solid(5.0), solid(6.6), 180, "2", "4A"),
    ("solid-growing-7.9", solid(6.3), solid(7.9), 180, "3", "4A"),
    ("solid-growing-8.0", solid(6.4), solid(8.0), 180, "3", "4B"),
    ("solid-growing-20", solid(10.0), solid(20.0), 365, "4A", "4B"),
    ("solid-+1.5-is-not-growth", solid(6.4), solid(7.9), 180, "3", "2"),
    ("solid-growth-at-366-days", solid(4.0), solid(5.6), 366, "2", "4A"),
    ("solid-no-growth-at-367-days", solid(4.0), solid(5.6), 367, "2", "2"),
    # crossing into a larger band without growth: re-categorised by size
    ("solid-crosses-8", solid(7.5), solid(8.1), 365, "2", "4A"),
    ("solid-crosses-6", solid(5.5), solid(6.0), 365, "2", "3"),
    ("solid-crosses-15", solid(14.0), solid(15.0), 90, "4A", "4B"),
    ("solid-same-band-keeps-2", solid(6.2), solid(7.0), 365, "2", "2"),
    ("solid-no-prior-category-by-size", solid(7.0), solid(7.0), 180, None, "3"),
    # stepping down: 3 stable at its 6-month CT -> 2; 4A stable at its 3-month CT -> 3
    ("solid-3-stable-150-days", solid(7.0), solid(7.0), 150, "3", "2"),
    ("solid-3-stable-149-days", solid(7.0), solid(7.0), 149, "3", "3"),
    ("solid-3-decreased", solid(7.0), solid(6.5), 180, "3", "2"),
    ("solid-4A-stable-60-days", solid(10.0), solid(10.0), 60, "4A", "3"),
    ("solid-4A-stable-59-days", solid(10.0), solid(10.0), 59, "4A", "4A"),
    ("solid-4A-decreased", solid(10.0), solid(9.0), 90, "4A", "3"),
    ("solid-4B-stable-stays", solid(16.0), solid(16.0), 90, "4B", "4B"),
    ("solid-2-stable", solid(5.0), solid(5.0), 365, "2", "2"),
    # part-solid: a new or growing solid component < 4 mm -> 4A, >= 4 mm -> 4B
    ("part-solid-new-component-3.9", ground_glass(12.0), part_solid(12.0, 3.9), 365, "2", "4A"),
    ("part-solid-new-component-4.0", ground_glass(12.0), part_solid(12.0, 4.0), 365, "2", "4B"),
    ("part-solid-growing-component-3.6", part_solid(12.0, 2.0), part_solid(12.0, 3.6), 180, "3", "4A"),
    ("part-solid-growing-component-4.0", part_solid(12.0, 2.4), part_solid(12.0, 4.0), 180, "3", "4B"),
    ("part-solid-component-+1.5-not-growth", part_solid(12.0, 2.5), part_solid(12.0, 4.0), 180, "3", "2"),
    ("part-solid-component-growth-too-slow", part_solid(12.0, 2.0), part_solid(12.0, 4.0), 400, "3", "2"),
    ("part-solid-crosses-6-solid", part_solid(12.0, 5.5), part_solid(12.0, 6.0), 180, "3", "4A"),
    ("part-solid-3-steps-down", part_solid(10.0, 5.0), part_solid(10.0, 5.0), 180, "3", "2"),
    ("part-solid-4A-steps-down", part_solid(10.0, 7.0), part_solid(10.0, 7.0), 90, "4A", "3"),
    # ground glass: < 30 mm -> 2 even growing; >= 30 mm stable or slowly growing -> 2
    ("ground-glass-growing-under-30", ground_glass(20.0), ground_glass(25.0), 180, "2", "2"),
    ("ground-glass-30-stable", ground_glass(31.0), ground_glass(31.5), 365, "3", "2"),
    ("ground-glass-30-slowly-growing", ground_glass(30.0), ground_glass(31.0), 365, "3", "2"),
    ("ground-glass-29.9-to-30.0", ground_glass(29.9), ground_glass(30.0), 365, "2", "2"),
    ("ground-glass-30-growing", ground_glass(29.0), ground_glass(30.6), 180, "2", "3"),
    ("ground-glass-30-growth-too-slow", ground_glass(28.0), ground_glass(31.0), 500, "2", "2"),
    # calcified: benign whatever happened before
    ("calcified-follow-up", calcified(8.0), calcified(8.0), 365, "1", "1"),
]


@pytest.mark.parametrize(
    ("prior", "current", "interval_days", "prior_category", "expected"),
    [row[1:] for row in FOLLOW_UP],
    ids=[row[0] for row in FOLLOW_UP],
)
def test_follow_up(
    prior: Measurement, current: Measurement, interval_days: float, prior_category: str | None, expected: str
) -> None:
    history = NoduleHistory.at_follow_up(current, prior, interval_days, prior_category)
    assert category(history) == expected


# (id, history, expected): 4X for a category 3 or 4 nodule with spiculation, never for 1 or 2
SPICULATED = [
    ("baseline-solid-5.9", NoduleHistory.at_baseline(solid(5.9, spiculated=True)), "2"),
    ("baseline-solid-6.0", NoduleHistory.at_baseline(solid(6.0, spiculated=True)), "4X"),
    ("baseline-solid-8.0", NoduleHistory.at_baseline(solid(8.0, spiculated=True)), "4X"),
    ("baseline-solid-15.0", NoduleHistory.at_baseline(solid(15.0, spiculated=True)), "4X"),
    ("baseline-part-solid-5.9", NoduleHistory.at_baseline(part_solid(5.9, 2.0, spiculated=True)), "2"),
    ("baseline-part-solid-6.0", NoduleHistory.at_baseline(part_solid(6.0, 2.0, spiculated=True)), "4X"),
    ("baseline-ground-glass-29.9", NoduleHistory.at_baseline(ground_glass(29.9, spiculated=True)), "2"),
    ("baseline-ground-glass-30.0", NoduleHistory.at_baseline(ground_glass(30.0, spiculated=True)), "4X"),
    ("new-solid-3.9", NoduleHistory.new_at_follow_up(solid(3.9, spiculated=True)), "2"),
    ("new-solid-4.0", NoduleHistory.new_at_follow_up(solid(4.0, spiculated=True)), "4X"),
    ("growing-solid", NoduleHistory.at_follow_up(solid(6.8, spiculated=True), solid(5.0), 180, "2"), "4X"),
    ("prior-4X-stable", NoduleHistory.at_follow_up(solid(7.0, spiculated=True), solid(7.0), 180, "4X"), "4X"),
    ("calcified", NoduleHistory.at_baseline(calcified(20.0, spiculated=True)), "1"),
]


@pytest.mark.parametrize(("history", "expected"), [row[1:] for row in SPICULATED], ids=[row[0] for row in SPICULATED])
def test_spiculation_gives_4x(history: NoduleHistory, expected: str) -> None:
    assert category(history) == expected


def test_reason_names_rule_and_values() -> None:
    assessment = nodule_category(NoduleHistory.at_baseline(Measurement.from_axes("solid", 9.0, 7.8)))
    assert assessment == Assessment(LungRads.CAT4A, "solid 8.4 mm at baseline: 8 to < 15 mm -> 4A")
    grown = nodule_category(NoduleHistory.at_follow_up(solid(8.0, spiculated=True), solid(6.4), 180, "3"))
    assert grown.reason == "solid 8.0 mm growing 6.4 -> 8.0 mm in 180 days: >= 8 mm -> 4B; spiculated -> 4X"
    stepped = nodule_category(NoduleHistory.at_follow_up(solid(7.0), solid(7.0), 182, "3"))
    assert "steps down -> 2" in stepped.reason
    assert (
        "new solid component"
        in nodule_category(NoduleHistory.at_follow_up(part_solid(12.0, 4.0), ground_glass(12.0), 365)).reason
    )


# (id, nodule categories as histories, expected exam category, the nodule named in the reason)
EXAM = [
    ("no-nodules", [], "1", "no nodules"),
    (
        "only-calcified",
        [NoduleHistory.at_baseline(calcified(5.0)), NoduleHistory.at_baseline(calcified(12.0))],
        "1",
        "#1",
    ),
    (
        "most-suspicious",
        [
            NoduleHistory.at_baseline(solid(4.0)),
            NoduleHistory.at_baseline(solid(9.0)),
            NoduleHistory.at_baseline(solid(7.0)),
        ],
        "4A",
        "#2",
    ),
    (
        "4X-beats-4B",
        [NoduleHistory.at_baseline(solid(16.0)), NoduleHistory.at_baseline(solid(7.0, spiculated=True))],
        "4X",
        "#2",
    ),
    ("tie-takes-first", [NoduleHistory.at_baseline(solid(6.5)), NoduleHistory.at_baseline(solid(7.5))], "3", "#1"),
    (
        "calcified-and-small",
        [NoduleHistory.at_baseline(calcified(20.0)), NoduleHistory.new_at_follow_up(solid(3.0))],
        "2",
        "#2",
    ),
]


@pytest.mark.parametrize(("histories", "expected", "named"), [row[1:] for row in EXAM], ids=[row[0] for row in EXAM])
def test_exam_is_its_most_suspicious_nodule(histories: list[NoduleHistory], expected: str, named: str) -> None:
    assessment = exam_category(iter(histories))
    assert assessment.category == LungRads(expected)
    assert named in assessment.reason


@pytest.mark.parametrize(
    ("category_", "expected"),
    [
        (LungRads.CAT1, "12 months"),
        ("2", "12 months"),
        ("3", "6 months"),
        ("4a", "3 months; PET/CT"),
        ("4B", "tissue sampling"),
        ("4X", "tissue sampling"),
    ],
)
def test_management(category_: LungRads | str, expected: str) -> None:
    assert expected in management(category_)


def test_management_rejects_unknown_category() -> None:
    with pytest.raises(ValueError, match=r"category must be one of .*got '5'"):
        management("5")
    with pytest.raises(TypeError, match="category must be a LungRads or a str, got int 3"):
        management(3)  # type: ignore[arg-type]


def test_lung_rads_order() -> None:
    assert LungRads.CAT3 < LungRads.CAT4A < LungRads.CAT4B < LungRads.CAT4X
    assert LungRads.CAT2 <= LungRads.CAT2 and LungRads.CAT4A >= LungRads.CAT3
    assert max(LungRads("4b"), LungRads.CAT2, LungRads.CAT4X, LungRads.CAT4A) is LungRads.CAT4X
    assert sorted([LungRads.CAT4A, LungRads.CAT1, LungRads.CAT3]) == [LungRads.CAT1, LungRads.CAT3, LungRads.CAT4A]


@pytest.mark.parametrize(
    ("long_axis", "short_axis", "mean"),
    [(9.0, 7.8, 8.4), (6.1, 5.0, 5.6), (6.04, 5.96, 6.0), (8.44, 8.44, 8.4), (8.45, 8.45, 8.5), (5.0, 5.0, 5.0)],
)
def test_mean_diameter_rounds_to_tenth_half_up(long_axis: float, short_axis: float, mean: float) -> None:
    assert mean_diameter_mm(long_axis, short_axis) == mean
    assert Measurement.from_axes("solid", long_axis, short_axis).mean_diameter_mm == mean


def test_measurement_from_axes_and_from_mean() -> None:
    by_axes = Measurement.from_axes("Part-Solid", 12.04, 9.96, solid_component_mm=4.04)
    assert by_axes.nodule_type is NoduleType.PART_SOLID
    assert (by_axes.long_axis_mm, by_axes.short_axis_mm, by_axes.mean_diameter_mm) == (12.0, 10.0, 11.0)
    assert by_axes.solid_component_mm == 4.0
    by_mean = Measurement.from_mean_diameter(NoduleType.GROUND_GLASS, 12.25)
    assert (by_mean.mean_diameter_mm, by_mean.long_axis_mm, by_mean.short_axis_mm) == (12.3, None, None)
    assert Measurement.from_mean_diameter("non-solid", 10.0).nodule_type is NoduleType.GROUND_GLASS


@pytest.mark.parametrize(
    ("build", "error", "message"),
    [
        (lambda: Measurement.from_axes("solid", 5.0, 6.0), ValueError, "short_axis_mm must be <= long_axis_mm"),
        (lambda: Measurement.from_axes("solid", -5.0, 4.0), ValueError, "long_axis_mm must be > 0, got -5.0"),
        (lambda: Measurement.from_mean_diameter("solid", 0), ValueError, "mean_diameter_mm must be > 0, got 0"),
        (lambda: Measurement.from_mean_diameter("solid", float("nan")), ValueError, "mean_diameter_mm must be finite"),
        (lambda: Measurement.from_mean_diameter("solid", "8"), TypeError, "mean_diameter_mm must be a real number"),
        (lambda: Measurement.from_mean_diameter("mass", 8.0), ValueError, "nodule_type must be one of .*got 'mass'"),
        (lambda: Measurement.from_mean_diameter("part_solid", 8.0), ValueError, "solid_component_mm is required"),
        (
            lambda: Measurement.from_mean_diameter("solid", 8.0, solid_component_mm=3.0),
            ValueError,
            "solid_component_mm is for part-solid nodules only",
        ),
        (
            lambda: Measurement.from_mean_diameter("part_solid", 8.0, solid_component_mm=8.1),
            ValueError,
            "solid_component_mm must be <= the mean diameter 8.0 mm, got 8.1",
        ),
        (lambda: Measurement.from_mean_diameter("solid", 8.0, spiculated=1), TypeError, "spiculated must be a bool"),
        (
            lambda: Measurement(nodule_type="solid", mean_diameter_mm=8.0, long_axis_mm=9.0, short_axis_mm=8.0),
            ValueError,
            r"mean_diameter_mm must be \(9.0 \+ 8.0\) / 2 = 8.5, got 8.0",
        ),
        (
            lambda: Measurement(nodule_type="solid", mean_diameter_mm=8.0, long_axis_mm=9.0),
            ValueError,
            "long_axis_mm and short_axis_mm go together",
        ),
    ],
)
def test_measurement_validation(build: object, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        build()  # type: ignore[operator]


@pytest.mark.parametrize(
    ("build", "error", "message"),
    [
        (
            lambda: NoduleHistory(current=solid(5.0), prior=solid(5.0), interval_days=90, is_baseline_exam=True),
            ValueError,
            "prior must be None at a baseline exam",
        ),
        (
            lambda: NoduleHistory(current=solid(5.0), is_baseline_exam=True, prior_category="2"),
            ValueError,
            "prior_category must be None at a baseline exam",
        ),
        (lambda: NoduleHistory(current=solid(5.0), prior=solid(4.0)), ValueError, "interval_days is required"),
        (lambda: NoduleHistory(current=solid(5.0), prior_category="3"), ValueError, "prior_category needs a prior"),
        (
            lambda: NoduleHistory.at_follow_up(solid(5.0), solid(4.0), -3),
            ValueError,
            "interval_days must be > 0, got -3",
        ),
        (
            lambda: NoduleHistory.at_follow_up(solid(5.0), solid(4.0), 90, "5"),
            ValueError,
            "prior_category must be one of",
        ),
        (lambda: NoduleHistory.at_baseline(5.0), TypeError, "current must be a Measurement, got float 5.0"),
        (lambda: nodule_category("solid 5 mm"), TypeError, "history must be a NoduleHistory"),
    ],
)
def test_history_validation(build: object, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        build()  # type: ignore[operator]


def test_history_converts_prior_category_once() -> None:
    history = NoduleHistory.at_follow_up(solid(10.0), solid(10.0), 90, "4a")
    assert history.prior_category is LungRads.CAT4A
    assert nodule_category(history).category is LungRads.CAT3
