"""The measurement-noise ceiling of the longitudinal step: the truth's own nodules give the truth's categories,
and measurement noise can only lose agreement."""

from __future__ import annotations

import pytest

from synth.archive import ArchiveOptions, GroundTruth, generate_archive
from workers.followup_ceiling import agreement, ceiling


@pytest.fixture(scope="module")
def truth() -> GroundTruth:
    objects: dict[str, bytes] = {}
    options = ArchiveOptions(shape_zyx=(48, 64, 64), spacing_zyx_mm=(5.0, 5.0, 5.0), studies_per_patient=(3, 3))
    return generate_archive(objects.__setitem__, n_patients=12, seed=5, options=options)


def test_the_true_nodules_without_noise_give_every_true_category(truth: GroundTruth) -> None:
    assert {s.lung_rads for s in truth.studies} - {"1"}  # some studies have nodules that set the category
    assert agreement(truth, 0.0) == 1.0


def test_noise_costs_agreement_and_more_noise_costs_more(truth: GroundTruth) -> None:
    by_noise = ceiling(truth, (0.0, 0.5, 3.0), draws=10)
    assert by_noise["0"] == 1.0
    assert by_noise["3"] < by_noise["0.5"] <= 1.0
    assert agreement(truth, 0.5, draws=3, seed=1) == agreement(truth, 0.5, draws=3, seed=1)  # reproducible


def test_negative_noise_is_refused(truth: GroundTruth) -> None:
    with pytest.raises(ValueError, match=r"-0\.1"):
        agreement(truth, -0.1)
