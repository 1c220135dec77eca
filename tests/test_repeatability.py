"""The measured volume's repeatability between successive CTs: the noise behind a VDT's range."""

from __future__ import annotations

import math

import pytest

from models.repeatability import LookPair, Repeatability, measure_repeatability


def test_the_noise_is_the_least_squares_fit_of_the_log_ratio_errors() -> None:
    # a nodule 10 mm at both looks, its volume measured 5 % high at the second: error ln(1.05)
    one = LookPair("P-L1", (500.0, 500.0), (500.0, 525.0), (10.0, 10.0))
    two = LookPair("P-L2", (100.0, 200.0), (100.0, 200.0), (6.0, 7.0))  # measured exactly
    assert one.log_ratio_error == pytest.approx(math.log(1.05))
    assert two.log_ratio_error == pytest.approx(0.0)
    result = Repeatability((one, two), failed=0)
    weights = 2 / 100 + 1 / 36 + 1 / 49
    assert result.noise_mm == pytest.approx(math.sqrt(math.log(1.05) ** 2 / weights))
    assert result.coverage(result.noise_mm) == 1.0  # each error within 1.96 sd
    assert result.coverage(0.01) == 0.5  # a tiny noise: the 5 % error falls outside
    with pytest.raises(ValueError, match="no look pairs"):
        _ = Repeatability((), failed=0).noise_mm


def test_synthetic_patients_volumes_repeat_within_a_few_percent() -> None:
    result = measure_repeatability(2, seed=4242)
    assert result.pairs and result.failed == 0
    assert all(min(p.diameter_mm) >= 6.0 for p in result.pairs)
    # a 10 mm nodule's volume repeats within a few percent: K / 10 mm
    assert 0.05 < result.noise_mm < 1.5
