"""A patient's chest, defined analytically in the body frame (mm), and drawn on any voxel grid.

The body frame follows DICOM LPS axes: x from the patient's right to left, y from anterior to
posterior, z from feet to head; its origin is the centre of the chest at mid-lung height. Each
study places the body differently in the scanner (:mod:`synth.pose`); drawing takes, for every voxel,
its position in the body frame, so the same anatomy appears shifted, rotated and breathing-scaled.

Structures: an elliptical body (subcutaneous fat around soft tissue), two lungs with branching
vessels (nodule-like density: the realistic false positives), the heart, the trachea, the spine with
discs and spinal canal, ribs and sternum. The scanner table is drawn by the renderer (it does not
move with the patient).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from synth.pose import BodyGrid

Box = tuple[slice, slice, slice]

AIR_HU = -1000.0
FAT_HU = -100.0
SOFT_TISSUE_HU = 40.0
BLOOD_HU = 45.0
LUNG_HU = -850.0
CORTEX_HU = 800.0
MARROW_HU = 250.0
DISC_HU = 90.0
CSF_HU = 10.0

EDGE_MM = 0.6  # width of the partial-volume ramp at tissue boundaries


@dataclass(frozen=True)
class Segment:
    """A tapering tube in the body frame: ends (x, y, z) in mm, radii in mm."""

    start: tuple[float, float, float]
    end: tuple[float, float, float]
    r0: float
    r1: float


@dataclass(frozen=True)
class Lung:
    """One lung: an ellipsoid in the body frame (centre and semi-axes in mm, x, y, z) with a flat base."""

    side: str  # "right" or "left" (the patient's)
    centre: tuple[float, float, float]
    semi_axes: tuple[float, float, float]


@dataclass(frozen=True)
class Anatomy:
    """Everything that is the same in every study of one patient (mm, body frame)."""

    body_semi_axes: tuple[float, float]  # x, y of the outer skin ellipse
    fat_mm: float
    lungs: tuple[Lung, Lung]
    heart_centre: tuple[float, float, float]
    heart_semi_axes: tuple[float, float, float]
    spine_y: float
    vertebra_radius: float
    rib_pitch_mm: float
    rib_phase_mm: float
    vessels: tuple[Segment, ...]
    fissure_slope: float  # oblique fissure: z = centre_z + slope * (y - centre_y)
    horizontal_fissure_dz: float  # right horizontal fissure height above the lung centre

    @property
    def z_range(self) -> tuple[float, float]:
        """Lowest and highest z (mm) of the lungs: the screening scan covers at least this."""
        lows = [lung.centre[2] - lung.semi_axes[2] for lung in self.lungs]
        highs = [lung.centre[2] + lung.semi_axes[2] for lung in self.lungs]
        return min(lows), max(highs)


def make_anatomy(rng: np.random.Generator) -> Anatomy:
    """Draw one patient's anatomy: adult chest sizes with natural variation."""
    a = rng.uniform(145.0, 175.0)  # half body width, mm
    b = a * rng.uniform(0.62, 0.72)  # half body depth
    lung_half_height = rng.uniform(95.0, 125.0)
    lungs = []
    for side, sign in (("right", -1.0), ("left", 1.0)):
        centre = (sign * a * rng.uniform(0.42, 0.47), b * rng.uniform(0.0, 0.06), 0.0)
        semi = (a * rng.uniform(0.30, 0.34), b * rng.uniform(0.60, 0.66), lung_half_height * rng.uniform(0.95, 1.05))
        lungs.append(Lung(side, centre, semi))
    right, left = lungs
    anatomy_without_vessels = Anatomy(
        body_semi_axes=(a, b),
        fat_mm=rng.uniform(8.0, 22.0),
        lungs=(right, left),
        heart_centre=(a * 0.12, -b * 0.25, -lung_half_height * 0.45),
        heart_semi_axes=(a * 0.30, b * 0.42, lung_half_height * 0.42),
        spine_y=b * 0.42,
        vertebra_radius=rng.uniform(15.0, 19.0),
        rib_pitch_mm=rng.uniform(24.0, 30.0),
        rib_phase_mm=rng.uniform(0.0, 30.0),
        vessels=(),
        fissure_slope=rng.uniform(0.9, 1.3),
        horizontal_fissure_dz=rng.uniform(5.0, 25.0),
    )
    vessels = tuple(v for lung in (right, left) for v in _vessel_tree(rng, lung, anatomy_without_vessels))
    return Anatomy(**{**anatomy_without_vessels.__dict__, "vessels": vessels})


def _vessel_tree(rng: np.random.Generator, lung: Lung, anatomy: Anatomy) -> list[Segment]:
    """A branching tree from the hilum (medial side of the lung) out towards the pleura."""
    cx, cy, cz = lung.centre
    ax, ay, az = lung.semi_axes
    medial = -np.sign(cx)
    hilum = np.array([cx + medial * ax * 0.75, cy - ay * 0.05, cz + az * 0.1])
    segments: list[Segment] = []
    stack = []
    for _ in range(int(rng.integers(6, 9))):
        direction = rng.normal(size=3)
        direction[0] = abs(direction[0]) * -medial  # lateral
        stack.append((hilum, direction / np.linalg.norm(direction), rng.uniform(3.0, 4.2), 0))
    while stack:
        start, direction, radius, depth = stack.pop()
        length = rng.uniform(18.0, 32.0) * (0.85**depth)
        end = start + direction * length
        if _lung_depth(lung, end) < 2.0 or radius < 0.6:
            continue
        r1 = radius * rng.uniform(0.72, 0.82)
        segments.append(Segment(tuple(start), tuple(end), float(radius), float(r1)))
        if depth < 5:
            for turn in (-1.0, 1.0):
                branch = direction + turn * rng.uniform(0.35, 0.7) * _perpendicular(rng, direction)
                stack.append((end, branch / np.linalg.norm(branch), r1 * rng.uniform(0.85, 1.0), depth + 1))
    return segments


def _perpendicular(rng: np.random.Generator, direction: np.ndarray) -> np.ndarray:
    other = rng.normal(size=3)
    other -= (other @ direction) * direction
    return other / np.linalg.norm(other)


def _lung_depth(lung: Lung, point: np.ndarray) -> float:
    """Approximate depth (mm) of a body-frame point inside ``lung``; negative outside."""
    rho = np.sqrt(sum(((point[i] - lung.centre[i]) / lung.semi_axes[i]) ** 2 for i in range(3)))
    return float((1.0 - rho) * min(lung.semi_axes))


def lung_depth_mm(anatomy: Anatomy, point: tuple[float, float, float]) -> tuple[str, float]:
    """The lung a body-frame point is in (the deeper one) and its approximate depth there (mm)."""
    depths = [(lung.side, _lung_depth(lung, np.asarray(point))) for lung in anatomy.lungs]
    return max(depths, key=lambda d: d[1])


def lobe_of(anatomy: Anatomy, point: tuple[float, float, float]) -> str:
    """Lobe of a body-frame point: RUL, RML, RLL, LUL or LLL (oblique and horizontal fissures)."""
    side, _ = lung_depth_mm(anatomy, point)
    lung = anatomy.lungs[0] if side == "right" else anatomy.lungs[1]
    _, y, z = point
    oblique_z = lung.centre[2] + anatomy.fissure_slope * (y - lung.centre[1])
    if side == "left":
        return "LUL" if z > oblique_z else "LLL"
    if z <= oblique_z:
        return "RLL"
    return "RUL" if z > lung.centre[2] + anatomy.horizontal_fissure_dz else "RML"


UPPER_LOBES = frozenset({"RUL", "LUL"})


def soft_inside(depth_mm: np.ndarray, edge_mm: float = EDGE_MM) -> np.ndarray:
    """Partial-volume weight in [0, 1] from a signed depth in mm (positive inside)."""
    return np.clip(0.5 + depth_mm / (2.0 * edge_mm), 0.0, 1.0).astype(np.float32)


def blend(hu: np.ndarray, weight: np.ndarray, value_hu: float | np.ndarray) -> None:
    """Paint ``value_hu`` over ``hu`` in place with partial-volume ``weight``."""
    hu += weight * (value_hu - hu)


def draw_anatomy(anatomy: Anatomy, body: BodyGrid, box: Box) -> tuple[np.ndarray, np.ndarray]:
    """HU (float32) and lung weight in [0, 1] of the voxels in ``box`` of ``body``'s grid."""
    x, y, z = body.coords(box)
    a, b = anatomy.body_semi_axes
    rho = np.sqrt((x / a) ** 2 + (y / b) ** 2)  # 1 at the skin
    mean_axis = (a + b) / 2
    hu = np.full(x.shape, AIR_HU, dtype=np.float32)
    blend(hu, soft_inside((1.0 - rho) * mean_axis), FAT_HU)
    inner = 1.0 - anatomy.fat_mm / mean_axis
    muscle = SOFT_TISSUE_HU + 8.0 * np.sin(x / 23.0 + 0.7 * z / 31.0) * np.cos(y / 19.0)
    blend(hu, soft_inside((inner - rho) * mean_axis), muscle)

    lung_weight = np.zeros(x.shape, dtype=np.float32)
    for lung in anatomy.lungs:
        cx, cy, cz = lung.centre
        sx, sy, sz = lung.semi_axes
        lr = np.sqrt(((x - cx) / sx) ** 2 + ((y - cy) / sy) ** 2 + ((z - cz) / sz) ** 2)
        base = z - (cz - 0.55 * sz)  # the diaphragm flattens the base of each lung
        depth = np.minimum((1.0 - lr) * min(sx, sy), base)
        np.maximum(lung_weight, soft_inside(depth), out=lung_weight)
    hx, hy, hz = anatomy.heart_centre
    ha, hb, hc = anatomy.heart_semi_axes
    heart = np.sqrt(((x - hx) / ha) ** 2 + ((y - hy) / hb) ** 2 + ((z - hz) / hc) ** 2)
    heart_weight = soft_inside((1.0 - heart) * min(ha, hb))
    lung_weight *= 1.0 - heart_weight
    trachea = np.sqrt(x**2 + (y + b * 0.1) ** 2)
    trachea_weight = soft_inside(9.0 - trachea) * soft_inside(z - anatomy.z_range[1] * 0.35)
    lung_texture = LUNG_HU + 12.0 * np.sin(x / 7.0 + y / 11.0) * np.sin(z / 9.0)
    blend(hu, lung_weight, lung_texture)
    blend(hu, heart_weight, BLOOD_HU)
    blend(hu, trachea_weight, AIR_HU)

    for vessel in anatomy.vessels:
        paint_tube(hu, body, box, vessel, BLOOD_HU, lung_weight)

    _draw_spine(hu, anatomy, x, y, z)
    _draw_ribs(hu, anatomy, x, y, z, rho)
    return hu, lung_weight


def _draw_spine(hu: np.ndarray, anatomy: Anatomy, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> None:
    """Vertebral bodies (cortex, marrow, a disc every 28 mm) and the spinal canal behind them."""
    r = anatomy.vertebra_radius
    near = np.nonzero((np.abs(x) < r + 16.0) & (y > anatomy.spine_y - r - 3.0) & (y < anatomy.spine_y + r + 23.0))
    x, y, z = x[near], y[near], z[near]
    region = hu[near]
    dist = np.sqrt(x**2 + (y - anatomy.spine_y) ** 2)
    disc = soft_inside(2.5 - np.abs(((z + 7.0) % 28.0) - 14.0))  # a 5 mm disc every 28 mm
    value = np.where(dist > r - 2.0, CORTEX_HU, MARROW_HU)
    blend(region, soft_inside(r - dist), np.where(disc > 0.5, DISC_HU, value))
    canal = np.sqrt(x**2 + (y - anatomy.spine_y - r - 7.0) ** 2)
    blend(region, soft_inside(13.0 - canal), CORTEX_HU * 0.75)
    blend(region, soft_inside(7.0 - canal), CSF_HU)
    hu[near] = region


def _draw_ribs(hu: np.ndarray, anatomy: Anatomy, x: np.ndarray, y: np.ndarray, z: np.ndarray, rho: np.ndarray) -> None:
    """Ribs hug the inside of the chest wall and descend from back to front; the sternum is in front."""
    a, b = anatomy.body_semi_axes
    mean_axis = (a + b) / 2
    ring = 1.0 - (anatomy.fat_mm + 9.0) / mean_axis
    near = np.nonzero(np.abs(rho - ring) * mean_axis < 8.0)  # only the band of the chest wall
    x, y, z = x[near], y[near], z[near]
    region = hu[near]
    radial = (rho[near] - ring) * mean_axis
    theta = np.arctan2(x / a, y / b)  # 0 at the spine (posterior), +-pi at the sternum
    descent = 35.0 * (1.0 - np.cos(theta)) / 2.0  # ribs run ~35 mm lower in front than at the back
    along = z + descent - anatomy.rib_phase_mm
    dz = along - anatomy.rib_pitch_mm * np.round(along / anatomy.rib_pitch_mm)
    dist = np.sqrt((radial / 1.4) ** 2 + dz**2)  # oval cross-section, ~11 x 8 mm
    lateral = np.abs(theta) > 0.35  # no rib across the spine
    anterior = np.abs(theta) < 2.75  # ribs end at the costal cartilage, before the sternum
    weight = soft_inside(4.0 - dist) * (lateral & anterior)
    blend(region, weight, np.where(dist > 2.2, CORTEX_HU * 0.85, MARROW_HU))
    sternum = soft_inside(np.minimum(14.0 - np.abs(x), 5.0 - np.abs(radial))) * (y < 0)
    blend(region, sternum, CORTEX_HU * 0.6)
    hu[near] = region


def paint_tube(
    hu: np.ndarray,
    body: BodyGrid,
    box: Box,
    segment: Segment,
    value_hu: float,
    mask: np.ndarray | None,
) -> None:
    """Paint a tapering tube into ``hu`` (the voxels of ``box``), only where ``mask`` allows."""
    start, end = np.array(segment.start), np.array(segment.end)
    margin = max(segment.r0, segment.r1) + 2.0
    sub = body.box_around(np.minimum(start, end) - margin, np.maximum(start, end) + margin, box)
    if sub is None:
        return
    local = tuple(slice(s.start - b.start, s.stop - b.start) for s, b in zip(sub, box, strict=True))
    px, py, pz = body.coords(sub)
    seg = end - start
    t = np.clip(((px - start[0]) * seg[0] + (py - start[1]) * seg[1] + (pz - start[2]) * seg[2]) / (seg @ seg), 0, 1)
    dist = np.sqrt(
        (px - start[0] - t * seg[0]) ** 2 + (py - start[1] - t * seg[1]) ** 2 + (pz - start[2] - t * seg[2]) ** 2
    )
    weight = soft_inside(segment.r0 + (segment.r1 - segment.r0) * t - dist)
    if mask is not None:
        weight *= mask[local]
    hu[local] += weight * (value_hu - hu[local])
