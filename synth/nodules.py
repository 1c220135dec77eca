"""Lung nodules: shape, density, placement, drawing and their true measurements.

A nodule is an ellipsoid with an irregular margin, in the body frame (mm). Solid nodules are about
0 to 50 HU; ground-glass ones about -600 HU; part-solid ones a ground-glass shell around a solid
core. Some touch the pleura (juxtapleural), some carry spicules. Sizes change over time by a
``scale`` applied to every axis (volume scales by ``scale ** 3``).

True measurements follow Lung-RADS: the long axis and the perpendicular short axis on the axial
plane through the centre, mean diameter ``(long + short) / 2`` to 0.1 mm; the volume in mm3; and for
part-solid nodules the mean diameter of the solid core. Spicules are not measured, as in practice.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np
from scipy.spatial import ConvexHull, QhullError

from synth.anatomy import Anatomy, Box, Segment, lobe_of, lung_depth_mm, paint_tube, soft_inside
from synth.pose import BodyGrid

GROUND_GLASS_HU = -600.0
MIN_DIAMETER_MM = 3.0
MAX_DIAMETER_MM = 30.0


class NoduleKind(StrEnum):
    """Radiological type of a nodule."""

    SOLID = "solid"
    PART_SOLID = "part_solid"
    GROUND_GLASS = "ground_glass"


@dataclass(frozen=True)
class NoduleShape:
    """One nodule at its reference size (scale 1): everything but its size over time.

    ``centre`` in the body frame (mm, x y z); ``semi_axes_mm`` of the ellipsoid before the margin's
    irregularity; ``rotation`` the 3x3 matrix from the nodule's axes to the body frame (rows);
    ``margin`` harmonics (direction x y z, frequency, phase, relative amplitude); ``spicules``
    (direction x y z, length relative to the radius).
    """

    kind: NoduleKind
    centre: tuple[float, float, float]
    semi_axes_mm: tuple[float, float, float]
    rotation: tuple[tuple[float, float, float], ...]
    solid_hu: float
    core_fraction: float  # part-solid: radius of the solid core relative to the whole
    margin: tuple[tuple[float, float, float, float, float, float], ...]
    spicules: tuple[tuple[float, float, float, float], ...]
    lobe: str
    juxtapleural: bool

    @property
    def spiculated(self) -> bool:
        """True when the nodule carries spicules."""
        return bool(self.spicules)


@dataclass(frozen=True)
class NoduleMeasurement:
    """True size of a nodule at one scale: axes and mean diameter (mm, 0.1 mm), volume (mm3)."""

    long_axis_mm: float
    short_axis_mm: float
    mean_diameter_mm: float
    volume_mm3: float
    solid_component_mm: float | None


def random_shape(
    rng: np.random.Generator,
    anatomy: Anatomy,
    *,
    diameter_mm: float,
    kind: NoduleKind,
    juxtapleural: bool,
    spiculated: bool,
    avoid: list[tuple[tuple[float, float, float], float]],
) -> NoduleShape | None:
    """Place a nodule of mean ``diameter_mm`` in a lung, away from the ``avoid`` (centre, radius) list.

    Returns None when no place fits after a number of tries.
    """
    radius = diameter_mm / 2
    elongation = rng.uniform(0.8, 1.0, size=3)
    semi = radius * elongation / np.cbrt(np.prod(elongation))
    for _ in range(200):
        lung = anatomy.lungs[int(rng.integers(2))]
        point = np.array(lung.centre) + rng.uniform(-1, 1, size=3) * np.array(lung.semi_axes)
        side, depth = lung_depth_mm(anatomy, tuple(point))
        if side != lung.side:
            continue
        wanted = (radius * 0.4 < depth < radius * 0.9) if juxtapleural else depth > radius + 4.0
        base_clearance = point[2] - (lung.centre[2] - 0.55 * lung.semi_axes[2]) - radius - 3.0
        heart = np.sqrt(sum(((point[i] - anatomy.heart_centre[i]) / anatomy.heart_semi_axes[i]) ** 2 for i in range(3)))
        apart = all(np.linalg.norm(point - np.array(c)) > radius + r + 6.0 for c, r in avoid)
        if wanted and base_clearance > 0 and heart > 1.25 and apart:
            break
    else:
        return None
    rotation, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    margin = tuple(
        (*_unit(rng), float(rng.uniform(2.0, 5.0)), float(rng.uniform(0, 2 * np.pi)), float(rng.uniform(0.02, 0.05)))
        for _ in range(4)
    )
    spicules = (
        tuple((*_unit(rng), float(rng.uniform(0.5, 1.1))) for _ in range(int(rng.integers(5, 10))))
        if spiculated
        else ()
    )
    return NoduleShape(
        kind=kind,
        centre=tuple(float(v) for v in point),
        semi_axes_mm=tuple(float(v) for v in semi),
        rotation=tuple(tuple(float(v) for v in row) for row in rotation),
        solid_hu=float(rng.uniform(5.0, 50.0)),
        core_fraction=float(rng.uniform(0.35, 0.65)),
        margin=margin,
        spicules=spicules,
        lobe=lobe_of(anatomy, tuple(point)),
        juxtapleural=juxtapleural,
    )


def _unit(rng: np.random.Generator) -> tuple[float, float, float]:
    v = rng.normal(size=3)
    v /= np.linalg.norm(v)
    return float(v[0]), float(v[1]), float(v[2])


def _normalised_radius(shape: NoduleShape, scale: float, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """0 at the centre, 1 on the irregular surface, for body-frame points (mm)."""
    rot = np.array(shape.rotation)
    d = np.stack([x - shape.centre[0], y - shape.centre[1], z - shape.centre[2]], axis=-1)
    local = d @ rot  # coordinates along the nodule's own axes
    semi = np.array(shape.semi_axes_mm) * scale
    rho = np.sqrt(((local / semi) ** 2).sum(axis=-1))
    norm = np.maximum(np.linalg.norm(local, axis=-1), 1e-6)
    bump = np.ones_like(rho)
    for ux, uy, uz, freq, phase, amplitude in shape.margin:
        cos_angle = (local[..., 0] * ux + local[..., 1] * uy + local[..., 2] * uz) / norm
        bump += amplitude * np.sin(freq * np.pi * cos_angle + phase)
    return rho / bump


def draw_nodule(hu: np.ndarray, body: BodyGrid, box: Box, shape: NoduleShape, scale: float, lung: np.ndarray) -> None:
    """Paint ``shape`` at ``scale`` into ``hu`` (the voxels of ``box``); never darkens what is there."""
    extent = max(shape.semi_axes_mm) * scale * (2.2 if shape.spicules else 1.3) + 2.0
    centre = np.array(shape.centre)
    sub = body.box_around(centre - extent, centre + extent, box)
    if sub is None:
        return
    local = tuple(slice(s.start - b.start, s.stop - b.start) for s, b in zip(sub, box, strict=True))
    x, y, z = body.coords(sub)
    radius = min(shape.semi_axes_mm) * scale
    rho = _normalised_radius(shape, scale, x, y, z)
    region = hu[local]
    if shape.kind == NoduleKind.SOLID:
        target = np.full_like(region, shape.solid_hu)
        weight = soft_inside((1.0 - rho) * radius)
    else:
        weight = soft_inside((1.0 - rho) * radius)
        target = np.full_like(region, GROUND_GLASS_HU) + 25.0 * np.sin(x / 1.7) * np.cos(y / 2.3)
        if shape.kind == NoduleKind.PART_SOLID:
            core = soft_inside((shape.core_fraction - rho) * radius)
            target += core * (shape.solid_hu - target)
    painted = region + weight * (target - region)
    np.maximum(region, painted, out=region)
    rot = np.array(shape.rotation)
    for ux, uy, uz, length in shape.spicules:
        direction = rot @ np.array([ux, uy, uz]) * np.array(shape.semi_axes_mm) * scale
        spicule = Segment(tuple(centre + 0.8 * direction), tuple(centre + (1.0 + length) * direction), 0.8, 0.35)
        paint_tube(hu, body, box, spicule, shape.solid_hu, lung)


def measure(shape: NoduleShape, scale: float) -> NoduleMeasurement:
    """True measurements at ``scale`` (see the module docstring): 0.25 mm in plane, 0.5 mm for the volume."""
    extent = max(shape.semi_axes_mm) * scale * 1.2 + 1.0
    step2d = 0.25
    axis = np.arange(-extent, extent + step2d, step2d)
    gx, gy = np.meshgrid(axis, axis, indexing="xy")
    cx, cy, cz = shape.centre
    rho2d = _normalised_radius(shape, scale, gx + cx, gy + cy, np.full_like(gx, cz))
    long_axis, short_axis = _axes(np.stack([gx[rho2d <= 1.0], gy[rho2d <= 1.0]], axis=1), step2d)
    solid = None
    if shape.kind == NoduleKind.PART_SOLID:
        core = rho2d <= shape.core_fraction
        core_long, core_short = _axes(np.stack([gx[core], gy[core]], axis=1), step2d)
        solid = round((core_long + core_short) / 2, 1)
    step3d = 0.5
    axis3 = np.arange(-extent, extent + step3d, step3d)
    x, y, z = np.meshgrid(axis3 + cx, axis3 + cy, axis3 + cz, indexing="ij")
    volume = float((_normalised_radius(shape, scale, x, y, z) <= 1.0).sum() * step3d**3)
    long_axis, short_axis = round(long_axis, 1), round(short_axis, 1)
    return NoduleMeasurement(
        long_axis_mm=long_axis,
        short_axis_mm=short_axis,
        mean_diameter_mm=round((long_axis + short_axis) / 2, 1),
        volume_mm3=round(volume, 1),
        solid_component_mm=solid,
    )


def _axes(points: np.ndarray, pixel_mm: float) -> tuple[float, float]:
    """Long axis (largest Feret diameter) and the largest width perpendicular to it, in mm."""
    if len(points) < 3:
        return pixel_mm, pixel_mm
    try:
        hull = points[ConvexHull(points).vertices]
    except QhullError:
        hull = points
    diffs = hull[:, None, :] - hull[None, :, :]
    dist = np.linalg.norm(diffs, axis=-1)
    i, j = np.unravel_index(np.argmax(dist), dist.shape)
    direction = (hull[j] - hull[i]) / max(dist[i, j], 1e-9)
    normal = np.array([-direction[1], direction[0]])
    across = hull @ normal
    return float(dist[i, j] + pixel_mm), float(across.max() - across.min() + pixel_mm)
