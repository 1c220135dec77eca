"""The lungs' centroid (workers.lungs), the landmark that starts the alignment of a patient's studies."""

from __future__ import annotations

import numpy as np
import pytest

from workers.lungs import lung_centroid_mm
from workers.volume import Volume

SPACING = (2.5, 1.4, 1.4)  # z, y, x (mm)


def chest(shift_zyx_vox: tuple[int, int, int] = (0, 0, 0), *, lungs: bool = True) -> Volume:
    """A 60 x 128 x 128 chest: air around a soft-tissue body, two lungs (-850 HU) and a small gas bubble, all
    moved by ``shift_zyx_vox``; the volume's origin at (-90, -90, 0) mm."""
    hu = np.full((60, 128, 128), -1000.0, dtype=np.float32)
    z, y, x = np.ogrid[:60, :128, :128]
    dz, dy, dx = shift_zyx_vox
    body = ((y - 64 - dy) / 50) ** 2 + ((x - 64 - dx) / 58) ** 2 <= 1
    hu[np.broadcast_to(body, hu.shape)] = 20.0
    if lungs:
        for centre_x in (40, 88):
            lung = ((z - 30 - dz) / 22) ** 2 + ((y - 60 - dy) / 30) ** 2 + ((x - centre_x - dx) / 17) ** 2 <= 1
            hu[lung] = -850.0
    hu[30 + dz, 105 + dy, 64 + dx] = -900.0  # one voxel of gas: not lung
    affine = np.array(
        [[0.0, 0.0, SPACING[2], -90.0], [0.0, SPACING[1], 0.0, -90.0], [SPACING[0], 0.0, 0.0, 0.0], [0, 0, 0, 1.0]]
    )
    n = hu.shape[0]
    return Volume(
        hu, SPACING, affine, tuple(f"1.2.{k}" for k in range(n)), tuple(f"{k}.dcm" for k in range(n)), (None,) * n
    )


def test_the_centroid_is_the_middle_of_the_lungs_in_patient_coordinates() -> None:
    centroid = lung_centroid_mm(chest())
    # lungs centred on voxel (30, 60, 64): x = -90 + 64 x 1.4, y = -90 + 60 x 1.4, z = 30 x 2.5
    assert centroid == pytest.approx((-0.4, -6.0, 75.0), abs=0.15)


def test_the_centroid_moves_with_the_patient() -> None:
    before, after = lung_centroid_mm(chest()), lung_centroid_mm(chest((4, -6, 9)))
    assert before is not None and after is not None
    moved = np.subtract(after, before)
    assert moved == pytest.approx((9 * 1.4, -6 * 1.4, 4 * 2.5), abs=0.15)


def test_a_volume_without_lungs_has_no_centroid() -> None:
    assert lung_centroid_mm(chest(lungs=False)) is None


def test_lungs_cut_by_the_field_of_view_give_no_centroid() -> None:
    cut = chest()
    cropped = Volume(cut.hu[:, :, 30:98], SPACING, cut.affine, cut.sop_instance_uids, cut.keys, cut.frame_numbers)
    assert lung_centroid_mm(cropped) is None  # both lungs reach the slices' left and right edges
