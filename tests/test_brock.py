"""Brock (PanCan) full model with spiculation: the REFERENCE.md section 2 test vectors and input checks."""

from __future__ import annotations

from typing import Any

import pytest

from screening import BrockResult, NoduleType, brock_probability

# age, female, family history, emphysema, diameter mm, type, upper lobe, count, spiculation -> x, p (%)
VECTORS = [
    (62, False, False, False, 4.0, "solid", False, 4, False, -6.7892, 0.11),
    (62, False, False, False, 6.0, "solid", False, 1, False, -4.9795, 0.68),
    (62, False, False, False, 10.0, "solid", True, 1, True, -1.9813, 12.12),
    (65, True, False, False, 8.0, "part_solid", True, 1, True, -1.5528, 17.47),
    (70, True, True, True, 15.0, "solid", True, 1, True, 0.4290, 60.56),
]


@pytest.mark.parametrize(
    ("age", "female", "family", "emphysema", "diameter", "kind", "upper", "count", "spiculation", "x", "percent"),
    VECTORS,
    ids=[f"case-{number}" for number in range(1, len(VECTORS) + 1)],
)
def test_reference_vectors(
    age: int,
    female: bool,
    family: bool,
    emphysema: bool,
    diameter: float,
    kind: str,
    upper: bool,
    count: int,
    spiculation: bool,
    x: float,
    percent: float,
) -> None:
    result = brock_probability(
        age_years=age,
        female=female,
        diameter_mm=diameter,
        nodule_type=kind,
        upper_lobe=upper,
        nodule_count=count,
        spiculation=spiculation,
        family_history=family,
        emphysema=emphysema,
    )
    assert round(result.x, 4) == x
    assert result.probability * 100 == pytest.approx(percent, abs=0.01)
    assert round(result.probability * 100, 2) == percent
    assert result.defaulted == ()


BASE: dict[str, Any] = {
    "age_years": 62,
    "female": False,
    "diameter_mm": 10.0,
    "nodule_type": NoduleType.SOLID,
    "upper_lobe": True,
    "nodule_count": 1,
    "spiculation": True,
}


@pytest.mark.parametrize(
    ("given", "defaulted"),
    [
        ({}, ("family_history", "emphysema")),
        ({"family_history": False}, ("emphysema",)),
        ({"emphysema": False}, ("family_history",)),
        ({"family_history": False, "emphysema": False}, ()),
    ],
)
def test_missing_inputs_default_to_zero_and_are_recorded(given: dict[str, bool], defaulted: tuple[str, ...]) -> None:
    result = brock_probability(**BASE, **given)
    assert result.defaulted == defaulted
    assert round(result.x, 4) == -1.9813


def test_type_coefficients_and_string_types() -> None:
    solid = brock_probability(**{**BASE, "nodule_type": "solid"})
    part_solid = brock_probability(**{**BASE, "nodule_type": "part-solid"})
    ground_glass = brock_probability(**{**BASE, "nodule_type": "non_solid"})
    assert part_solid.x - solid.x == pytest.approx(0.3770)
    assert ground_glass.x - solid.x == pytest.approx(-0.1276)


def test_bts_threshold() -> None:
    assert brock_probability(**BASE).above_bts_threshold  # 12.12 %
    assert not brock_probability(**{**BASE, "diameter_mm": 6.0, "spiculation": False}).above_bts_threshold


def test_extreme_diameters_do_not_overflow() -> None:
    tiny = brock_probability(**{**BASE, "diameter_mm": 1e-6})
    huge = brock_probability(**{**BASE, "diameter_mm": 1e9})
    assert tiny.probability == pytest.approx(0.0, abs=1e-12)
    assert 0.0 < huge.probability < 1.0
    assert isinstance(tiny, BrockResult)


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        ({"nodule_type": "calcified"}, ValueError, "nodule_type 'calcified' is benign and not scored"),
        ({"nodule_type": "mass"}, ValueError, "nodule_type must be one of"),
        ({"diameter_mm": 0}, ValueError, "diameter_mm must be > 0, got 0"),
        ({"diameter_mm": -4.0}, ValueError, "diameter_mm must be > 0, got -4.0"),
        ({"diameter_mm": float("inf")}, ValueError, "diameter_mm must be finite"),
        ({"nodule_count": 0}, ValueError, "nodule_count must be >= 1, got 0"),
        ({"nodule_count": 2.0}, TypeError, "nodule_count must be an int, got float 2.0"),
        ({"nodule_count": True}, TypeError, "nodule_count must be an int, got bool True"),
        ({"age_years": 5}, ValueError, "age_years must be within 18-110, got 5"),
        ({"age_years": 150}, ValueError, "age_years must be within 18-110, got 150"),
        ({"age_years": "62"}, TypeError, "age_years must be a real number"),
        ({"female": 1}, TypeError, "female must be a bool, got int 1"),
        ({"spiculation": None}, TypeError, "spiculation must be a bool"),
        ({"emphysema": "yes"}, TypeError, "emphysema must be a bool"),
    ],
)
def test_validation(change: dict[str, Any], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        brock_probability(**{**BASE, **change})
