"""Build a volume from decoded frames: sorted along the slice normal, spacing from positions.

Never sorted by InstanceNumber, frame number or file name. :func:`plan_volume` looks at geometry only and
decides where each frame goes; :func:`assemble` moves the pixels there. Mixed orientations, differing
frame sizes and duplicate positions are always rejected. Gaps (a missing slice, uneven spacing) and gantry
tilt are rejected, or resampled under :attr:`IrregularSeries.RESAMPLE`, which the volume then records in
``corrections``; a gap wider than :data:`MAX_GAP_STEPS` median steps is rejected under any policy.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from workers.decode import PADDING_HU, FrameRef

ORIENTATION_TOLERANCE = 1e-4
SPACING_TOLERANCE = 0.1  # relative deviation of one step from the median step
TILT_TOLERANCE = 1e-3  # in-plane share of the slice-to-slice step
DUPLICATE_MM = 1e-3  # positions closer than this along the normal are the same position
MAX_GAP_STEPS = 3.0  # widest step (in median steps) that resampling may bridge: two missing slices


class VolumeError(ValueError):
    """The frames do not form one regular volume; the message says why, with values and object keys."""


class IrregularSeries(StrEnum):
    """What to do with a series that has gaps or gantry tilt."""

    REJECT = "reject"
    RESAMPLE = "resample"


@dataclass(frozen=True)
class Volume:
    """A CT volume in HU, axis order (z, y, x), with its voxel-to-patient affine in mm.

    ``affine @ (k, i, j, 1)`` is the patient position (x, y, z, 1) in mm (DICOM LPS) of voxel (k, i, j).
    Slice k came from the object ``keys[k]`` with SOP Instance UID ``sop_instance_uids[k]`` and, when that object
    is multi-frame, its frame ``frame_numbers[k]`` (1-based, else None); where the volume was resampled, from
    the nearest source slice.
    ``corrections`` says what resampling did, in words; empty when the series was regular.
    """

    hu: np.ndarray
    spacing_zyx_mm: tuple[float, float, float]
    affine: np.ndarray
    sop_instance_uids: tuple[str, ...]
    keys: tuple[str, ...]
    frame_numbers: tuple[int | None, ...]
    corrections: tuple[str, ...] = ()

    def to_patient(self, zyx: tuple[float, float, float]) -> tuple[float, float, float]:
        """Patient coordinates (x, y, z) in mm of a (possibly fractional) voxel position (z, y, x)."""
        x, y, z, _ = self.affine @ np.array([*zyx, 1.0])
        return float(x), float(y), float(z)

    def to_voxel(self, xyz_mm: tuple[float, float, float]) -> tuple[float, float, float]:
        """Fractional voxel position (z, y, x) of a patient position (x, y, z) in mm; inverse of to_patient."""
        k, i, j, _ = np.linalg.solve(self.affine, np.array([*xyz_mm, 1.0]))
        return float(k), float(i), float(j)

    def source_of(self, k: float) -> tuple[str, str, int | None]:
        """(key, SOP Instance UID, frame number or None) of the slice nearest to (fractional) slice ``k``."""
        index = min(max(round(k), 0), len(self.keys) - 1)
        return self.keys[index], self.sop_instance_uids[index], self.frame_numbers[index]


@dataclass(frozen=True)
class VolumePlan:
    """Where each frame goes. ``order`` lists the frames sorted along the normal; ``sources[k]`` is the frame
    that is (or, resampled, is nearest to) output slice k.

    ``shift_px[n]`` is the in-plane shift (rows, columns) that puts frame order[n] on the orthogonal grid
    (tilt); ``targets_mm`` the output slices' positions along the normal when the spacing was made regular.
    """

    frames: tuple[FrameRef, ...]
    order: tuple[int, ...]
    sources: tuple[int, ...]
    along_mm: np.ndarray  # positions of frames[order[n]] along the normal, mm
    spacing_zyx_mm: tuple[float, float, float]
    affine: np.ndarray
    shift_px: np.ndarray | None
    targets_mm: np.ndarray | None
    corrections: tuple[str, ...]

    @property
    def shape(self) -> tuple[int, int, int]:
        """Output shape (z, y, x)."""
        n = len(self.sources)
        return (n, *self.frames[0].shape)


def plan_volume(frames: Sequence[FrameRef], policy: IrregularSeries = IrregularSeries.REJECT) -> VolumePlan:
    """Sort ``frames`` along the slice normal and check the geometry; :class:`VolumeError` says what is wrong."""
    if len(frames) < 2:
        raise VolumeError(f"need at least 2 slices to build a volume, got {len(frames)}")
    for f in frames:
        if f.position is None or f.orientation is None or f.pixel_spacing is None:
            raise VolumeError(f"{_name(f)}: no ImagePositionPatient, ImageOrientationPatient or PixelSpacing")
    first = frames[0]
    for f in frames:
        if not np.allclose(f.orientation, first.orientation, atol=ORIENTATION_TOLERANCE):
            raise VolumeError(
                f"mixed orientations: {_name(f)} has {f.orientation.round(4).tolist()}, "
                f"{_name(first)} has {first.orientation.round(4).tolist()}"
            )
        if f.shape != first.shape or not np.allclose(f.pixel_spacing, first.pixel_spacing, rtol=1e-4):
            raise VolumeError(
                f"{_name(f)}: size {f.shape} or pixel spacing {f.pixel_spacing} differs from {_name(first)}: "
                f"{first.shape}, {first.pixel_spacing}"
            )
    row, col = first.orientation[:3], first.orientation[3:]
    normal = np.cross(row, col)
    along = np.array([f.position @ normal for f in frames])
    order = np.argsort(along, kind="stable")
    along = along[order]
    ordered = [frames[i] for i in order]
    steps = np.diff(along)
    if np.any(steps < DUPLICATE_MM):
        k = int(np.argmin(steps))
        raise VolumeError(
            f"duplicate slice position {along[k]:.3f} mm: {_name(ordered[k])} and {_name(ordered[k + 1])}"
        )
    corrections: list[str] = []
    dz = float(np.median(steps))
    worst = int(np.argmax(np.abs(steps - dz)))
    targets = None
    if abs(steps[worst] - dz) > SPACING_TOLERANCE * dz:
        problem = (
            f"irregular slice spacing: {steps[worst]:.3f} mm between {_name(ordered[worst])} and "
            f"{_name(ordered[worst + 1])}, median {dz:.3f} mm (gap or missing slice)"
        )
        if policy is IrregularSeries.REJECT or steps.max() > MAX_GAP_STEPS * dz:
            reason = "" if policy is IrregularSeries.REJECT else f"; wider than {MAX_GAP_STEPS:g} steps, not resampled"
            raise VolumeError(problem + reason)
        n_out = round((along[-1] - along[0]) / dz) + 1
        targets = along[0] + dz * np.arange(n_out)
        corrections.append(f"resampled {len(frames)} slices to {n_out} at {dz:.3f} mm: {problem}")
    offsets = np.array([f.position - ordered[0].position for f in ordered])
    in_plane = offsets - np.outer(offsets @ normal, normal)
    drift = float(np.linalg.norm(in_plane[-1]))
    shift = None
    if drift > TILT_TOLERANCE * max(float(np.linalg.norm(offsets[-1])), 1e-9):
        tilt_deg = float(np.degrees(np.arctan2(drift, along[-1] - along[0])))
        problem = f"gantry tilt: slices step {np.round(in_plane[-1], 3).tolist()} mm off the slice normal over " + (
            f"{along[-1] - along[0]:.1f} mm ({tilt_deg:.2f} degrees)"
        )
        if policy is IrregularSeries.REJECT:
            raise VolumeError(problem)
        dy, dx = first.pixel_spacing
        shift = np.stack([in_plane @ col / dy, in_plane @ row / dx], axis=1)
        corrections.append(f"resampled to an orthogonal grid: {problem}")
    dy, dx = first.pixel_spacing
    affine = np.eye(4)
    affine[:3, 0] = normal * dz
    affine[:3, 1] = col * dy
    affine[:3, 2] = row * dx
    affine[:3, 3] = ordered[0].position
    if targets is not None:
        nearest = np.clip(np.searchsorted(along, targets), 1, len(along) - 1)
        nearer_below = (targets - along[nearest - 1]) <= (along[nearest] - targets)
        sources = tuple(
            int(order[n - 1] if below else order[n]) for n, below in zip(nearest, nearer_below, strict=True)
        )
    else:
        sources = tuple(int(i) for i in order)
    return VolumePlan(
        frames=tuple(frames),
        order=tuple(int(i) for i in order),
        sources=sources,
        along_mm=along,
        spacing_zyx_mm=(dz, dy, dx),
        affine=affine,
        shift_px=shift,
        targets_mm=targets,
        corrections=tuple(corrections),
    )


def assemble(plan: VolumePlan, take: Callable[[int], np.ndarray]) -> Volume:
    """Put the pixels in place: ``take(i)`` returns frame i's values (rows, columns) and may release them.

    Each frame is taken once, in sorted order, so the caller can free its copy as it goes: the peak memory is
    the output volume plus a few frames (plus the sorted source frames when the spacing is resampled).
    """
    hu = np.empty(plan.shape, dtype=np.float32)

    def source(n: int) -> np.ndarray:
        pixels = take(plan.order[n])
        if plan.shift_px is None or not np.any(np.abs(plan.shift_px[n]) > 1e-3):
            return pixels
        from scipy import ndimage

        return ndimage.shift(pixels, plan.shift_px[n], order=1, mode="constant", cval=PADDING_HU)

    if plan.targets_mm is None:
        for n in range(len(plan.order)):
            hu[n] = source(n)
    else:
        sources = [source(n) for n in range(len(plan.order))]
        along = plan.along_mm
        for m, t in enumerate(plan.targets_mm):
            n = int(np.clip(np.searchsorted(along, t, side="right") - 1, 0, len(along) - 2))
            w = float(np.clip((t - along[n]) / (along[n + 1] - along[n]), 0.0, 1.0))
            np.multiply(sources[n], 1.0 - w, out=hu[m])
            hu[m] += w * sources[n + 1]
    refs = [plan.frames[i] for i in plan.sources]
    return Volume(
        hu=hu,
        spacing_zyx_mm=plan.spacing_zyx_mm,
        affine=plan.affine,
        sop_instance_uids=tuple(f.sop_instance_uid for f in refs),
        keys=tuple(f.key for f in refs),
        frame_numbers=tuple(f.frame_number for f in refs),
        corrections=plan.corrections,
    )


def build_volume(
    frames: Sequence[FrameRef], pixels: Sequence[np.ndarray], policy: IrregularSeries = IrregularSeries.REJECT
) -> Volume:
    """Plan and assemble in one call: ``pixels[i]`` (rows, columns) are the values of ``frames[i]``."""
    return assemble(plan_volume(frames, policy), lambda i: pixels[i])


def _name(f: FrameRef) -> str:
    return f"{f.key} frame {f.frame_number}" if f.multi_frame else f.key
