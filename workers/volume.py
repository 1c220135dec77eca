"""Build a volume from decoded slices: sorted along the slice normal, spacing from positions.

Never sorted by InstanceNumber or file name. Duplicate positions, gaps, mixed orientations and
gantry tilt are rejected with the offending values.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from workers.decode import Slice

ORIENTATION_TOLERANCE = 1e-4
SPACING_TOLERANCE = 0.1  # relative deviation of one step from the median step
TILT_TOLERANCE = 1e-3  # in-plane share of the slice-to-slice step


class VolumeError(ValueError):
    """The slices do not form one regular volume; the message says why, with values."""


@dataclass(frozen=True)
class Volume:
    """A CT volume in HU, axis order (z, y, x), with its voxel-to-patient affine in mm.

    ``affine @ (k, i, j, 1)`` is the patient position (x, y, z, 1) in mm (DICOM LPS) of voxel (k, i, j).
    ``sop_instance_uids[k]`` and ``keys[k]`` name the instance that slice k came from.
    """

    hu: np.ndarray
    spacing_zyx_mm: tuple[float, float, float]
    affine: np.ndarray
    sop_instance_uids: tuple[str, ...]
    keys: tuple[str, ...]

    def to_patient(self, zyx: tuple[float, float, float]) -> tuple[float, float, float]:
        """Patient coordinates (x, y, z) in mm of a (possibly fractional) voxel position (z, y, x)."""
        x, y, z, _ = self.affine @ np.array([*zyx, 1.0])
        return float(x), float(y), float(z)


def build_volume(slices: list[Slice]) -> Volume:
    """Stack ``slices`` into a :class:`Volume`; raise :class:`VolumeError` if they are not regular."""
    if len(slices) < 2:
        raise VolumeError(f"need at least 2 slices to build a volume, got {len(slices)}")
    orientation = slices[0].orientation
    for s in slices:
        if not np.allclose(s.orientation, orientation, atol=ORIENTATION_TOLERANCE):
            raise VolumeError(
                f"mixed orientations: {s.key} has {s.orientation.round(4).tolist()}, "
                f"{slices[0].key} has {orientation.round(4).tolist()}"
            )
        if s.hu.shape != slices[0].hu.shape or s.pixel_spacing != slices[0].pixel_spacing:
            raise VolumeError(f"{s.key}: size {s.hu.shape} or spacing {s.pixel_spacing} differs from the series")
    row, col = orientation[:3], orientation[3:]
    normal = np.cross(row, col)
    along = np.array([s.position @ normal for s in slices])
    order = np.argsort(along, kind="stable")
    ordered = [slices[i] for i in order]
    steps = np.diff(along[order])
    if np.any(steps < 1e-3):
        k = int(np.argmin(steps))
        raise VolumeError(
            f"duplicate slice position {along[order][k]:.3f} mm: {ordered[k].key} and {ordered[k + 1].key}"
        )
    dz = float(np.median(steps))
    worst = int(np.argmax(np.abs(steps - dz)))
    if abs(steps[worst] - dz) > SPACING_TOLERANCE * dz:
        raise VolumeError(
            f"irregular slice spacing: {steps[worst]:.3f} mm between {ordered[worst].key} and "
            f"{ordered[worst + 1].key}, median {dz:.3f} mm (gap or missing slice)"
        )
    displacement = ordered[-1].position - ordered[0].position
    in_plane = displacement - (displacement @ normal) * normal
    if np.linalg.norm(in_plane) > TILT_TOLERANCE * np.linalg.norm(displacement):
        raise VolumeError(
            f"gantry tilt: slices step {np.round(in_plane, 3).tolist()} mm off the slice normal "
            f"over {np.linalg.norm(displacement):.1f} mm"
        )
    dy, dx = ordered[0].pixel_spacing
    affine = np.eye(4)
    affine[:3, 0] = normal * dz
    affine[:3, 1] = col * dy
    affine[:3, 2] = row * dx
    affine[:3, 3] = ordered[0].position
    return Volume(
        hu=np.stack([s.hu for s in ordered]),
        spacing_zyx_mm=(dz, dy, dx),
        affine=affine,
        sop_instance_uids=tuple(s.sop_instance_uid for s in ordered),
        keys=tuple(s.key for s in ordered),
    )
