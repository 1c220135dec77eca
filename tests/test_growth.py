"""Sphere volume, volume doubling time and its bands: REFERENCE.md sections 1 and 3."""

from __future__ import annotations

import math

import pytest

from screening import VdtBand, assess_growth, sphere_volume_mm3, vdt_band, volume_doubling_time_days
from screening.growth import (
    VDT_RANGE_Z,
    describe_vdt_range,
    growth_shown,
    vdt_range_days,
    volume_log_sd,
)


@pytest.mark.parametrize(("diameter", "volume"), [(6.0, 113), (8.0, 268), (15.0, 1767)])
def test_acr_volume_equivalents(diameter: float, volume: int) -> None:
    assert round(sphere_volume_mm3(diameter)) == volume


def test_sphere_volume_formula() -> None:
    assert sphere_volume_mm3(2.0) == pytest.approx(4.0 / 3.0 * math.pi)


def test_reference_vdt_vector() -> None:
    v1, v2 = sphere_volume_mm3(6.0), sphere_volume_mm3(8.0)
    assert round(v1, 1) == 113.1
    assert round(v2, 1) == 268.1
    assert round(volume_doubling_time_days(v1, v2, 90), 1) == 72.3


def test_doubling_in_the_interval_gives_the_interval() -> None:
    assert volume_doubling_time_days(100.0, 200.0, 365) == pytest.approx(365.0)


@pytest.mark.parametrize(("v1", "v2"), [(268.1, 113.1), (113.1, 113.1)], ids=["shrinking", "unchanged"])
def test_no_finite_vdt(v1: float, v2: float) -> None:
    assert volume_doubling_time_days(v1, v2, 90) is None
    assessment = assess_growth(nodule_type="solid", v1_mm3=v1, v2_mm3=v2, interval_days=90)
    assert assessment.vdt_days is None
    assert assessment.band is VdtBand.NO_FINITE_VDT
    assert "no finite VDT" in assessment.reason


@pytest.mark.parametrize(
    ("vdt", "band"),
    [
        (72.3, VdtBand.SUGGESTS_MALIGNANCY),
        (399.9, VdtBand.SUGGESTS_MALIGNANCY),
        (400.0, VdtBand.INDETERMINATE),
        (600.0, VdtBand.INDETERMINATE),
        (600.1, VdtBand.TYPICAL_OF_BENIGN),
        (None, VdtBand.NO_FINITE_VDT),
    ],
)
def test_vdt_bands(vdt: float | None, band: VdtBand) -> None:
    assert vdt_band(vdt) is band


def test_assess_growth_solid_and_subsolid() -> None:
    v1, v2 = sphere_volume_mm3(6.0), sphere_volume_mm3(8.0)
    solid = assess_growth(nodule_type="solid", v1_mm3=v1, v2_mm3=v2, interval_days=90)
    assert solid.band is VdtBand.SUGGESTS_MALIGNANCY
    assert solid.vdt_days == pytest.approx(72.28, abs=0.01)
    assert "VDT 72.3 days" in solid.reason
    slow = assess_growth(nodule_type="solid", v1_mm3=100.0, v2_mm3=110.0, interval_days=365)
    assert slow.band is VdtBand.TYPICAL_OF_BENIGN
    ground_glass = assess_growth(nodule_type="ground_glass", v1_mm3=v1, v2_mm3=v2, interval_days=90)
    assert ground_glass.band is VdtBand.NOT_APPLICABLE
    assert ground_glass.vdt_days == solid.vdt_days


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: sphere_volume_mm3(0), ValueError, "diameter_mm must be > 0, got 0"),
        (lambda: sphere_volume_mm3("6"), TypeError, "diameter_mm must be a real number"),
        (lambda: volume_doubling_time_days(0, 10, 90), ValueError, "v1_mm3 must be > 0, got 0"),
        (lambda: volume_doubling_time_days(10, -1, 90), ValueError, "v2_mm3 must be > 0, got -1"),
        (lambda: volume_doubling_time_days(10, 20, 0), ValueError, "interval_days must be > 0, got 0"),
        (lambda: vdt_band(-5.0), ValueError, "vdt_days must be > 0, got -5.0"),
        (
            lambda: assess_growth(nodule_type="tumour", v1_mm3=1, v2_mm3=2, interval_days=1),
            ValueError,
            "nodule_type must be one of",
        ),
    ],
)
def test_validation(call: object, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        call()  # type: ignore[operator]


def test_vdt_range_brackets_the_vdt_and_follows_the_volume_noise() -> None:
    v1, v2 = sphere_volume_mm3(6.0), sphere_volume_mm3(8.0)
    vdt = volume_doubling_time_days(v1, v2, 90)
    shortest, longest = vdt_range_days(v1, v2, 90, 6.0, 8.0)
    spread = VDT_RANGE_Z * math.hypot(volume_log_sd(6.0), volume_log_sd(8.0))
    assert shortest == pytest.approx(90 * math.log(2) / (math.log(v2 / v1) + spread))
    assert longest == pytest.approx(90 * math.log(2) / (math.log(v2 / v1) - spread))
    assert shortest < vdt < longest
    assert volume_log_sd(12.0) == pytest.approx(volume_log_sd(6.0) / 2)  # the edge is a smaller share of a larger one
    wide = vdt_range_days(v1 / 8, v2 / 8, 90, 3.0, 4.0)  # the same ratio on nodules half the size: noisier
    assert wide[0] < shortest and (wide[1] is None or wide[1] > longest)


def test_growth_within_the_noise_has_no_longest_vdt() -> None:
    v1 = sphere_volume_mm3(6.0)
    v2 = v1 * math.exp(0.5 * VDT_RANGE_Z * math.hypot(volume_log_sd(6.0), volume_log_sd(6.1)))
    vdt_range = vdt_range_days(v1, v2, 365, 6.0, 6.1)
    assert vdt_range is not None and vdt_range[1] is None
    assert vdt_range[0] < volume_doubling_time_days(v1, v2, 365)
    assert not growth_shown(vdt_range)
    assert growth_shown(vdt_range_days(sphere_volume_mm3(6.0), sphere_volume_mm3(8.0), 90, 6.0, 8.0))
    assert vdt_range_days(200.0, 150.0, 365, 7.0, 6.6) is None  # shrinking: no finite VDT to bound
    assert not growth_shown(None)


def test_vdt_range_as_reports_show_it() -> None:
    assert describe_vdt_range(56.3, 100.9) == "56-101"
    assert describe_vdt_range(310.0, None) == ">= 310: growth not shown"
    assert describe_vdt_range(None, None) == ""
