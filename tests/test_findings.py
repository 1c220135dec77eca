"""Candidates become findings: world position, source instance, and measurements from a segmentation."""

from __future__ import annotations

import numpy as np
import pytest

from models.candidates import Candidate
from synth.phantom import make_phantom
from workers.findings import AS_SOLID_PROBABILITY, Classification, describe_candidates
from workers.volume import Volume


def volume_of(hu: np.ndarray, spacing_zyx_mm: tuple[float, float, float]) -> Volume:
    """``hu`` as a series of axial slices 1.2.3.k, voxel (k, i, j) at patient (x, y, z) = (j dx, i dy, k dz)."""
    dz, dy, dx = spacing_zyx_mm
    affine = np.zeros((4, 4))
    affine[0, 2], affine[1, 1], affine[2, 0], affine[3, 3] = dx, dy, dz, 1.0
    n = hu.shape[0]
    return Volume(
        hu=hu.astype(np.float32),
        spacing_zyx_mm=spacing_zyx_mm,
        affine=affine,
        sop_instance_uids=tuple(f"1.2.3.{k}" for k in range(n)),
        keys=tuple(f"slice-{k}" for k in range(n)),
        frame_numbers=(None,) * n,
    )


def test_a_candidate_on_a_nodule_is_measured_and_one_in_air_is_not() -> None:
    phantom = make_phantom(np.random.default_rng([7, 1]), shape_zyx=(48, 96, 96), n_nodules=1)
    nodule = phantom.nodules[0]
    dz, dy, dx = phantom.spacing_zyx_mm
    volume = volume_of(phantom.hu, phantom.spacing_zyx_mm)
    near = tuple(c + 0.6 for c in nodule.center_zyx_vox)  # a detector is a voxel or so off
    on_nodule = Candidate(center_zyx_vox=near, extent_zyx_mm=(9.0, 9.0, 9.0), diameter_mm=14.0, score=0.9)
    in_air = Candidate(center_zyx_vox=(2.0, 2.0, 2.0), extent_zyx_mm=(5.0, 5.0, 5.0), diameter_mm=5.0, score=0.2)
    classes = [Classification(0.95, "solid"), Classification(0.1, "solid")]
    measured, unmeasured = describe_candidates(volume, [on_nodule, in_air], classes)

    assert measured.diameter_mm == pytest.approx(nodule.diameter_mm, abs=1.0)
    assert measured.long_axis_mm >= measured.short_axis_mm > 0 and measured.volume_mm3 > 0
    assert measured.nodule_type == str(nodule.kind) and measured.probability == 0.95
    k, i, j = nodule.center_zyx_vox
    assert (measured.center_z_mm, measured.center_y_mm, measured.center_x_mm) == pytest.approx(
        (k * dz, i * dy, j * dx), abs=max(dz, dy, dx)
    )
    assert abs(int(measured.sop_instance_uid.rsplit(".", 1)[1]) - k) <= 1  # the slice through its centre

    assert unmeasured.long_axis_mm is None and unmeasured.diameter_mm == 5.0  # the detector's box, unmeasured
    assert unmeasured.probability == 0.1 and unmeasured.sop_instance_uid == "1.2.3.2"


def test_a_small_nodule_measured_part_solid_is_measured_solid_where_the_classifier_types_it_solid() -> None:
    from tests.test_measurement import CENTRE, GLASS_HU, SOLID_HU, ball, scene, voxel

    spacing = (1.25, 0.7, 0.7)
    hu = scene(60.0, spacing, [(ball(CENTRE, 4.0), GLASS_HU), (ball(CENTRE, 2.5), SOLID_HU)])  # 8 mm, 5 mm core
    volume = volume_of(hu, spacing)
    candidate = Candidate(center_zyx_vox=voxel(CENTRE, spacing), extent_zyx_mm=(8.0,) * 3, diameter_mm=8.0, score=0.9)

    def described(solid_probability: float | None) -> tuple[str, float]:
        verdict = Classification(0.99, "solid", solid_probability)
        (finding,) = describe_candidates(volume, [candidate], [verdict])
        return finding.nodule_type, finding.diameter_mm

    as_measured = described(None)
    assert as_measured[0] == "part_solid" and as_measured[1] == pytest.approx(8.0, abs=0.8)
    assert described(AS_SOLID_PROBABILITY - 0.01) == as_measured  # the classifier not sure enough
    solid = described(AS_SOLID_PROBABILITY)
    assert solid[0] == "solid" and solid[1] == pytest.approx(5.0, abs=0.8)
