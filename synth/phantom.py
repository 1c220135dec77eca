"""Synthetic chest-CT phantoms in Hounsfield units, with nodule ground truth.

All geometry is defined in millimetres so that a phantom looks the same at any voxel spacing.
Arrays are indexed (z, y, x); z runs from feet to head, y from anterior to posterior and x from the
patient's right to left (DICOM LPS patient axes).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np
from scipy import ndimage

logger = logging.getLogger(__name__)

MIN_HU = -1024.0
MAX_HU = 3071.0
AIR_HU = -1000.0
FAT_HU = -100.0
LUNG_HU = -850.0
SOFT_TISSUE_HU = 40.0
VESSEL_HU = 40.0
BONE_CORTEX_HU = 900.0
BONE_MARROW_HU = 350.0

MIN_NODULE_DIAMETER_MM = 5.0
MAX_NODULE_DIAMETER_MM = 25.0
MAX_NODULES = 4


class NoduleKind(StrEnum):
    """Radiological type of a nodule; only solid nodules are generated for now."""

    SOLID = "solid"


@dataclass(frozen=True)
class NoduleTruth:
    """One true nodule.

    `center_zyx_vox` is in (fractional) voxel coordinates of the phantom volume, axis order (z, y, x);
    `diameter_mm` is the sphere's diameter in mm.
    """

    center_zyx_vox: tuple[float, float, float]
    diameter_mm: float
    kind: NoduleKind = NoduleKind.SOLID


@dataclass
class Phantom:
    """A synthetic chest CT volume.

    `hu` is float32 Hounsfield units, axis order (z, y, x); `spacing_zyx_mm` is the voxel size in mm.
    """

    hu: np.ndarray
    spacing_zyx_mm: tuple[float, float, float]
    nodules: list[NoduleTruth] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.hu.ndim != 3:
            raise ValueError(f"hu must be 3-D (z, y, x), got shape {self.hu.shape}")
        if len(self.spacing_zyx_mm) != 3 or min(self.spacing_zyx_mm) <= 0:
            raise ValueError(f"spacing_zyx_mm must be three positive values in mm, got {self.spacing_zyx_mm}")


def _check_geometry(shape_zyx: tuple[int, int, int], spacing_zyx_mm: tuple[float, float, float]) -> None:
    if len(shape_zyx) != 3 or min(shape_zyx) < 8:
        raise ValueError(f"shape_zyx must be three sizes >= 8, got {shape_zyx}")
    if len(spacing_zyx_mm) != 3 or min(spacing_zyx_mm) <= 0:
        raise ValueError(f"spacing_zyx_mm must be three positive values in mm, got {spacing_zyx_mm}")


def _soft_inside(signed_depth_mm: np.ndarray, edge_mm: float) -> np.ndarray:
    """Partial-volume weight in [0, 1]: 1 deep inside (depth > 0), 0 outside, smooth over ~`edge_mm`."""
    return 0.5 * (1.0 + np.tanh(signed_depth_mm / edge_mm))


def make_phantom(
    rng: np.random.Generator,
    *,
    shape_zyx: tuple[int, int, int] = (48, 128, 128),
    spacing_zyx_mm: tuple[float, float, float] = (2.5, 2.5, 2.5),
    n_nodules: int | None = None,
    noise_rng: np.random.Generator | None = None,
) -> Phantom:
    """Make one synthetic chest CT.

    Anatomy: air outside (-1000 HU), an elliptical body (fat layer ~-100 HU around soft tissue ~0..60 HU),
    two lungs (~-850 HU) holding tubular vessels (~40 HU, the realistic false-positive source), a vertebra
    (marrow ~350 HU, cortex ~900 HU), and Gaussian noise (sd 20..40 HU), clipped to -1024..3071 HU as real
    scanners do. `n_nodules` solid spherical nodules (20..60 HU, diameter 5..25 mm, partial-volume edges) lie
    fully inside the lungs; None draws 0..4.

    Everything is drawn from `rng`, so equal generator states give equal phantoms. If `noise_rng` is given the
    noise comes from it instead, which renders the same anatomy twice with different noise (follow-up scans).
    """
    shape_zyx = tuple(int(s) for s in shape_zyx)  # type: ignore[assignment]
    spacing_zyx_mm = tuple(float(s) for s in spacing_zyx_mm)  # type: ignore[assignment]
    _check_geometry(shape_zyx, spacing_zyx_mm)
    if n_nodules is not None and not 0 <= n_nodules <= MAX_NODULES:
        raise ValueError(f"n_nodules must be in 0..{MAX_NODULES}, got {n_nodules}")

    nz, ny, nx = shape_zyx
    dz, dy, dx = spacing_zyx_mm
    # Voxel-centre coordinates in mm, broadcastable to (z, y, x).
    z = (np.arange(nz, dtype=np.float32) * dz)[:, None, None]
    y = (np.arange(ny, dtype=np.float32) * dy)[None, :, None]
    x = (np.arange(nx, dtype=np.float32) * dx)[None, None, :]
    extent_z, extent_y, extent_x = nz * dz, ny * dy, nx * dx

    # Body: an elliptic cylinder with a fat layer.
    cx = extent_x / 2 + rng.uniform(-5, 5)
    cy = extent_y / 2 + rng.uniform(0, 10)
    body_ax = min(rng.uniform(135, 155), 0.47 * extent_x)
    body_ay = min(rng.uniform(95, 115), 0.47 * extent_y)
    size = min(body_ax / 145.0, body_ay / 105.0)  # 1 for an average adult; smaller fields of view shrink all
    fat_mm = rng.uniform(8, 18) * size
    body_r = np.sqrt(((x - cx) / body_ax) ** 2 + ((y - cy) / body_ay) ** 2)  # 1 at the skin
    body_depth_mm = (1.0 - body_r) * min(body_ax, body_ay)  # approximate depth below skin
    body = _soft_inside(body_depth_mm, 0.7)
    inner = _soft_inside(body_depth_mm - fat_mm, 1.5)
    tissue_hu = SOFT_TISSUE_HU + rng.uniform(-20, 20)
    slab = AIR_HU + body * (FAT_HU - AIR_HU) + inner * (tissue_hu - FAT_HU)
    hu = np.broadcast_to(slab, shape_zyx).astype(np.float32)

    # Lungs: ellipsoids left and right of the mediastinum, tapering towards the apex (high z).
    lung_cz = extent_z * rng.uniform(0.35, 0.5)
    lung_az = max(extent_z * rng.uniform(0.75, 0.9), 60.0)
    lung_depth = np.full(shape_zyx, -np.inf, dtype=np.float32)
    lung_frames = []
    for side in (-1.0, 1.0):
        lx = cx + side * body_ax * rng.uniform(0.40, 0.46)
        ly = cy - body_ay * rng.uniform(0.0, 0.06)
        ax_l = body_ax * rng.uniform(0.27, 0.32)
        ay_l = body_ay * rng.uniform(0.55, 0.65)
        r = np.sqrt(((x - lx) / ax_l) ** 2 + ((y - ly) / ay_l) ** 2 + ((z - lung_cz) / lung_az) ** 2)
        lung_depth = np.maximum(lung_depth, (1.0 - r) * min(ax_l, ay_l))
        lung_frames.append((lx, ly, ax_l, ay_l))
    lung = _soft_inside(lung_depth, 1.0)
    hu += lung * (LUNG_HU - hu)
    lung_mask = lung_depth > 0

    # Vertebra behind the mediastinum.
    sx, sy = cx, cy + body_ay * rng.uniform(0.6, 0.68)
    spine_r = body_ay * rng.uniform(0.12, 0.16)
    spine_depth = spine_r - np.sqrt((x - sx) ** 2 + (y - sy) ** 2)
    cortex = _soft_inside(spine_depth, 0.7)
    marrow = _soft_inside(spine_depth - 2.5, 0.7)
    bone = cortex * (BONE_CORTEX_HU - tissue_hu) + marrow * (BONE_MARROW_HU - BONE_CORTEX_HU)
    hu += np.broadcast_to(bone, shape_zyx)

    # Vessels: tapering tubes from each hilum out into the lung.
    coords = (z, y, x)
    for lx, ly, ax_l, _ay_l in lung_frames:
        hilum = np.array([lung_cz + rng.uniform(-10, 10), ly + rng.uniform(-5, 5), lx - np.sign(lx - cx) * ax_l * 0.7])
        for _ in range(int(rng.integers(4, 8))):
            direction = rng.normal(size=3)
            direction[2] = abs(direction[2]) * np.sign(lx - cx)  # point laterally
            direction /= np.linalg.norm(direction)
            length = rng.uniform(50, 110) * size
            _add_tube(
                hu,
                coords,
                spacing_zyx_mm,
                hilum,
                hilum + direction * length,
                r0=rng.uniform(2.0, 3.0),
                r1=rng.uniform(0.8, 1.2),
                value_hu=VESSEL_HU,
                mask=lung_mask,
            )

    # Nodules, fully inside the lungs and apart from each other.
    count = int(rng.integers(0, MAX_NODULES + 1)) if n_nodules is None else n_nodules
    nodules = _place_nodules(rng, count, lung_depth, spacing_zyx_mm)
    for nodule in nodules:
        center_mm = np.array(nodule.center_zyx_vox) * np.array(spacing_zyx_mm)
        dist = np.sqrt((z - center_mm[0]) ** 2 + (y - center_mm[1]) ** 2 + (x - center_mm[2]) ** 2)
        weight = _soft_inside(nodule.diameter_mm / 2 - dist, 0.6)
        hu += weight * (rng.uniform(20, 60) - hu)

    # Partial-volume blur about half a voxel, then scanner noise.
    hu = ndimage.gaussian_filter(hu, sigma=0.5, mode="nearest")
    noise_sd = (noise_rng or rng).uniform(20, 40)
    hu += (noise_rng or rng).normal(0.0, noise_sd, size=shape_zyx).astype(np.float32)
    # Scanners report -1024..3071 HU (12 bits); noisy air below -1024 is clipped as on real CT.
    np.clip(hu, MIN_HU, MAX_HU, out=hu)
    logger.debug("phantom %s at %s mm with %d nodules", shape_zyx, spacing_zyx_mm, len(nodules))
    return Phantom(hu=hu.astype(np.float32), spacing_zyx_mm=spacing_zyx_mm, nodules=nodules)


def _add_tube(
    hu: np.ndarray,
    coords: tuple[np.ndarray, np.ndarray, np.ndarray],
    spacing_zyx_mm: tuple[float, float, float],
    start_mm: np.ndarray,
    end_mm: np.ndarray,
    *,
    r0: float,
    r1: float,
    value_hu: float,
    mask: np.ndarray,
) -> None:
    """Paint in place a tube from `start_mm` to `end_mm` ((z, y, x), mm), radius tapering r0 -> r1 mm."""
    spacing = np.array(spacing_zyx_mm)
    lo = np.floor((np.minimum(start_mm, end_mm) - r0 - 2) / spacing).astype(int)
    hi = np.ceil((np.maximum(start_mm, end_mm) + r0 + 2) / spacing).astype(int) + 1
    lo = np.clip(lo, 0, hu.shape)
    hi = np.clip(hi, 0, hu.shape)
    if np.any(hi <= lo):
        return
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    zz = coords[0][box[0]]
    yy = coords[1][:, box[1]]
    xx = coords[2][:, :, box[2]]
    seg = end_mm - start_mm
    seg_len2 = float(seg @ seg)
    t = ((zz - start_mm[0]) * seg[0] + (yy - start_mm[1]) * seg[1] + (xx - start_mm[2]) * seg[2]) / seg_len2
    t = np.clip(t, 0.0, 1.0)
    dist = np.sqrt(
        (zz - start_mm[0] - t * seg[0]) ** 2
        + (yy - start_mm[1] - t * seg[1]) ** 2
        + (xx - start_mm[2] - t * seg[2]) ** 2
    )
    radius = r0 + (r1 - r0) * t
    weight = _soft_inside(radius - dist, 0.5) * mask[box]
    hu[box] += weight * (value_hu - hu[box])


def _place_nodules(
    rng: np.random.Generator,
    count: int,
    lung_depth_mm: np.ndarray,
    spacing_zyx_mm: tuple[float, float, float],
) -> list[NoduleTruth]:
    """Draw `count` nodule spheres lying at least 2 mm inside the lungs and 5 mm apart from each other."""
    lung = lung_depth_mm > 0
    # True distance (mm) to the lung boundary, so irregular lung shapes are handled too.
    depth = ndimage.distance_transform_edt(lung, sampling=spacing_zyx_mm)
    spacing = np.array(spacing_zyx_mm)
    nodules: list[NoduleTruth] = []
    for _ in range(count):
        for _attempt in range(50):
            # Log-uniform diameters: small nodules are the common case.
            diameter = float(np.exp(rng.uniform(np.log(MIN_NODULE_DIAMETER_MM), np.log(MAX_NODULE_DIAMETER_MM))))
            candidates = np.argwhere(depth >= diameter / 2 + 2.0)
            if len(candidates) == 0:
                continue
            center_vox = candidates[rng.integers(len(candidates))] + rng.uniform(-0.5, 0.5, size=3)
            center_mm = center_vox * spacing
            apart = all(
                np.linalg.norm(center_mm - np.array(n.center_zyx_vox) * spacing) > (diameter + n.diameter_mm) / 2 + 5
                for n in nodules
            )
            if apart:
                nodules.append(
                    NoduleTruth(
                        center_zyx_vox=tuple(float(c) for c in center_vox),  # type: ignore[arg-type]
                        diameter_mm=round(diameter, 2),
                    )
                )
                break
        else:
            logger.debug("could not place nodule %d of %d", len(nodules) + 1, count)
    return nodules
