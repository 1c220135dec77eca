"""Render one study: the patient's anatomy and nodules in a pose, on the scanner's grid, with noise.

Drawn slab by slab (a few slices at a time), so memory stays in proportion to one series.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from synth.anatomy import Anatomy, draw_anatomy, soft_inside
from synth.nodules import NoduleShape, draw_nodule
from synth.pose import BodyGrid, Grid, Pose

MIN_HU, MAX_HU = -1024.0, 3071.0  # what a 12-bit CT scanner reports
SLAB_SLICES = 16
TABLE_SKIN_HU, TABLE_CORE_HU = 300.0, -850.0
REFERENCE_MAS, REFERENCE_NOISE_HU = 100.0, 18.0
NOISE_CORRELATION_PX = 0.6  # CT noise is correlated in plane


def noise_sd_hu(mas: float) -> float:
    """Image noise (HU, standard deviation) at a tube current-time product ``mas``: sd ~ 1 / sqrt(dose)."""
    if mas <= 0:
        raise ValueError(f"mas must be positive, got {mas}")
    return REFERENCE_NOISE_HU * float(np.sqrt(REFERENCE_MAS / mas))


def scan_grid(
    anatomy: Anatomy, pose: Pose, *, shape_zyx: tuple[int, int, int], spacing_zyx_mm: tuple[float, float, float]
) -> Grid:
    """The grid a technologist would plan: centred in plane, centred on the lungs along the table."""
    nz, ny, nx = shape_zyx
    dz, dy, dx = spacing_zyx_mm
    low, high = anatomy.z_range
    centre_z = pose.to_world((0.0, 0.0, (low + high) / 2))[2]
    origin = (-(nx - 1) * dx / 2, -(ny - 1) * dy / 2, round(centre_z - (nz - 1) * dz / 2, 2))
    return Grid(shape_zyx=shape_zyx, spacing_zyx_mm=spacing_zyx_mm, origin_xyz_mm=origin)


def render_study(
    anatomy: Anatomy,
    nodules: list[tuple[NoduleShape, float]],
    pose: Pose,
    grid: Grid,
    *,
    mas: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """HU volume (float32, z y x) of ``anatomy`` with ``nodules`` (shape, scale) in ``pose`` on ``grid``.

    Noise has the standard deviation :func:`noise_sd_hu` gives for ``mas``, correlated in plane.
    """
    body = BodyGrid(grid, pose)
    nz, ny, nx = grid.shape_zyx
    hu = np.empty(grid.shape_zyx, dtype=np.float32)
    table_top_y = pose.shift_mm[1] + anatomy.body_semi_axes[1] + 1.0
    noise_scale = noise_sd_hu(mas) / _filtered_noise_sd(NOISE_CORRELATION_PX)
    for k0 in range(0, nz, SLAB_SLICES):
        box = (slice(k0, min(k0 + SLAB_SLICES, nz)), slice(0, ny), slice(0, nx))
        slab, lung = draw_anatomy(anatomy, body, box)
        for shape, scale in nodules:
            draw_nodule(slab, body, box, shape, scale, lung)
        _draw_table(slab, grid, box, table_top_y)
        noise = rng.standard_normal(size=slab.shape, dtype=np.float32)
        slab += ndimage.gaussian_filter(noise, sigma=(0.0, NOISE_CORRELATION_PX, NOISE_CORRELATION_PX)) * noise_scale
        hu[box] = np.clip(slab, MIN_HU, MAX_HU)
    return hu


def _filtered_noise_sd(sigma_px: float) -> float:
    """Standard deviation of unit white noise after the in-plane Gaussian filter: the kernel's L2 norm."""
    delta = np.zeros((1, 33, 33))
    delta[0, 16, 16] = 1.0
    return float(np.sqrt((ndimage.gaussian_filter(delta, sigma=(0.0, sigma_px, sigma_px)) ** 2).sum()))


def _draw_table(hu: np.ndarray, grid: Grid, box: tuple[slice, slice, slice], top_y: float) -> None:
    """The scanner table in world coordinates: carbon skins around a foam core, gently curved."""
    _, dy, dx = grid.spacing_zyx_mm
    ox, oy, _ = grid.origin_xyz_mm
    y = oy + dy * np.arange(box[1].start, box[1].stop, dtype=np.float32)[:, None]
    x = ox + dx * np.arange(box[2].start, box[2].stop, dtype=np.float32)[None, :]
    top = top_y - 0.0006 * x**2
    depth = y - top  # mm below the table's top surface
    width = soft_inside(230.0 - np.abs(x))
    table = soft_inside(np.minimum(depth, 12.0 - depth)) * width
    core = soft_inside(np.minimum(depth - 2.0, 10.0 - depth)) * width
    hu += table[None] * (TABLE_SKIN_HU - hu)
    hu += core[None] * (TABLE_CORE_HU - hu)
