"""Measure one lung nodule in a CT volume: segmentation, Lung-RADS axes, volume and type.

Given the HU volume (float, axis order z, y, x), its voxel size (mm, z, y, x) and a candidate centre (input
voxel coordinates z, y, x, as a detector gives it, possibly a voxel or two off), :func:`measure_nodule`
segments the nodule in a patch around the centre and measures it the way a radiologist following Lung-RADS
would:

- long axis: the largest diameter (mm) on the axial plane through the nodule's centre; short axis: the
  largest width (mm) perpendicular to it on the same plane; mean diameter = (long + short) / 2, each
  rounded to 0.1 mm (half up, :func:`screening.types.mean_diameter_mm`);
- volume (mm3) of the nodule, from the partial volume of the input voxels around its 3-D segmentation;
- type from the HU distribution: solid (soft tissue, about -300 HU and above), ground glass (about -750 to
  -300 HU) or part-solid (a ground-glass nodule with a solid core), and for part-solid nodules the mean
  diameter (mm) of the solid component, measured like the nodule on the same plane;
- the segmentation mask on the input grid (boolean, patch coordinates plus the patch origin) to outline it.

Method (all on a patch around the centre, resampled by linear interpolation to an isotropic grid of about
0.5 mm, so that thick slices are measured in mm and edges get sub-voxel positions):

1. Lung level: the median of the patch's lung voxels; tissue: at or above half-way between it and ground glass
   (-600 HU), about -725 HU, after a light smoothing.
2. Chest wall and mediastinum: tissue thick enough to hold a ball of 13 mm (20 mm for a nodule larger than
   that), found on a 1.5 mm grid around the patch (edge voxels continue past the field of view); the nodule is
   looked for outside it.
3. Seed: near the given centre (two input voxels), the point deepest inside tissue, a mm of depth traded for
   each mm away from the centre, then uphill to the local maximum of depth: the nodule's centre and its
   inscribed radius r.
4. Vessels: morphological opening with a ball of 0.75 r (thinner vessels vanish), a short reconstruction of
   the margin, then an ellipsoid fitted to the free surface (rays from the seed that leave the nodule into
   the lung, away from vessel junctions; robust refits drop vessel stubs). The nodule is kept within the
   ellipsoid grown by 12 % where it faces the lung, 3 % where a vessel or the wall joins it. With too little
   free surface (a juxtapleural nodule) a sphere is fitted (geometric least squares), and tissue inside it
   hidden in the wall is restored.
5. Type, from the input voxels of the nodule: partial volume spreads a solid nodule's edge voxels evenly
   between lung and soft tissue, so a ground-glass plateau shows as an excess of voxels at -680..-480 HU over
   those at -400..-200 HU. No solid voxels deep inside: ground glass; else no plateau: solid; else part-solid.
   A dense part long and thin inside a ground-glass nodule is a vessel, not a solid core.
6. Boundary at half-way between the lung and the nodule's outer density (solid about -410 HU, ground glass
   and part-solid about -725 HU); axes on the axial plane through the centroid (calipers on the outer edges
   of the boundary pixels), each lengthened by :data:`SLICE_SAMPLING_K` x slice spacing^2 / mean diameter
   (:func:`_undo_slice_sampling`: slices sample a nodule off its equator); the outline on the input grid: the
   input voxels at nodule density inside the segmentation; the volume from the partial volume of the input
   voxels on and around the outline (:func:`_partial_volume_mm3`: each counts for the share of nodule its
   density gives); the solid core half-way between ground glass and solid, measured like the nodule.

:func:`evaluate_on_phantoms` measures the synthetic phantoms' nodules against their true measurements
(``python -m models.measurement --n 20 --seed 2`` prints the figures at the detector's working grid and at
a native grid).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

from screening.types import Measurement, NoduleType, mean_diameter_mm, round_mm

if TYPE_CHECKING:
    from synth.nodules import NoduleMeasurement as TrueMeasurement
    from synth.nodules import NoduleShape
    from synth.phantom import Phantom

logger = logging.getLogger(__name__)

LUNG_HU = -850.0  # reference lung parenchyma, when the patch holds too little lung to estimate it
GROUND_GLASS_HU = -600.0  # reference ground glass
AIR_HU = -950.0  # below: air (outside the body, airways), not lung...
AIR_EDGE_MM = 3.0  # ...nor the partial-volume edge this close to air
SOLID_HU = -300.0  # at and above: solid (soft tissue) attenuation
MIN_SOLID_CORE_MM3 = 4.0  # a solid component smaller than this (about 2 mm across) is not one
MAX_PATCH_HALF_MM = 70.0
DEFAULT_DIAMETER_MM = 10.0
SMOOTHING_MM = 0.4  # Gaussian sigma applied before thresholding
WALL_BALLS_MM = (13.0, 20.0)  # tissue holding a ball of this radius is chest wall or mediastinum, not a nodule
WALL_STEP_MM = 1.5  # grid of the chest-wall search
WALL_MARGIN_MM = 1.5  # the wall is taken this much thinner, so that its rounding never bites into a nodule
SEED_DISTANCE_PENALTY = 1.0  # mm of depth traded for each mm away from the given centre
OPENING_SHARE = 0.75  # opening ball radius / the nodule's inscribed radius
RECONSTRUCTION_SHARE = 0.12  # margin given back after the opening / inscribed radius
MAX_EXTENT_SHARE = 1.45  # without a fitted shape, a nodule lies within this many inscribed radii of its centre
RAY_COUNT = 400  # rays cast from the centre to find the nodule's surface
RAY_REACH = 4.0  # rays reach this many inscribed radii (a juxtapleural nodule shows a small one)
FIRST_REACH = 1.4  # the first fit takes the surface within this many inscribed radii (vessel stubs beyond)
JUXTAPLEURAL_FIRST_REACH = 2.2  # the same when the wall hides part of the nodule (and of its inscribed ball)
EDGE_PIXELS = 1.0  # added to the span of pixel centres: calipers on the outer edges of the boundary pixels
MIN_FREE_RAYS = 40  # fewer rays ending in the lung: no shape is fitted
ELLIPSOID_MIN_FREE_SHARE = 0.6  # with less of the surface free, a sphere is fitted instead of an ellipsoid
OUTLIER_TOLERANCE = 0.15  # surface points beyond the fitted shape by this share are vessel stubs
SHAPE_TOLERANCE = 0.12  # the nodule is kept within its fitted shape grown by this share (margin bumps)...
JUNCTION_TOLERANCE = 0.03  # ...or this share where a vessel or the wall joins it
FREE_DIRECTION_COSINE = 0.978  # a direction within about 12 degrees of a free ray is free
JUXTAPLEURAL_WALL_SHARE = 0.1  # above this share of its surface against the wall, a nodule is juxtapleural
GLASS_BAND_HU = (-680.0, -480.0)  # a ground-glass plateau's density
EDGE_BAND_HU = (-400.0, -200.0)  # as wide, between ground glass and soft tissue: edges only
PLATEAU_SHARE = 0.15  # excess of ground-glass voxels (share of the nodule) that makes a plateau...
PLATEAU_NOISE = 1.0  # ...or, for a nodule of n voxels, this / sqrt(n): few voxels give a noisy share
CORE_OPENING_SHARE = 0.7  # the core is opened with a ball of this share of its inscribed radius (vessels go) ...
CORE_OPENING_MM = 1.0  # ... of this radius at most: vessels through a core are 1 to 2 mm wide (see _solid_component)
VESSEL_ELONGATION = 2.5  # a dense part longer than this many times its width is a vessel, not a core
CORE_DEPTH_SHARE = 0.2  # a solid core lies deeper than this share of the inscribed radius (not a vessel at the edge)
SPICULE_RIM_MM = 1.0  # tissue this close to the segmentation is its partial-volume rim, not an appendage
SPICULE_REACH_SHARE = 1.3  # an appendage reaching further than this many equivalent radii is a vessel
SPICULE_MIN_LENGTH_MM = 0.5  # shorter appendages are noise on the rim, not listed
SPICULE_FULL_MM = 3.2  # a spicule this long (mm beyond the rim) gives a spiculation score of 1
SLICE_SAMPLING_K = 0.305  # axes + this x slice^2 / diameter (mm): see _undo_slice_sampling
PARTIAL_VOLUME_FLOOR = -0.5  # a voxel's nodule share in the volume is at least this (noise below the lung level)
SPICULATED_SCORE = 0.5  # from this score on (a spicule of 1.6 mm), a nodule is spiculated; see _spicules

__all__ = [
    "NATIVE_GRID",
    "WORKING_GRID",
    "NoduleMeasurement",
    "NoduleOutcome",
    "PhantomEvaluation",
    "evaluate_on_phantoms",
    "measure_nodule",
    "phantom_with_truth",
    "spicule_score",
]


@dataclass(frozen=True)
class NoduleMeasurement:
    """One nodule measured on one CT.

    Lengths in mm (rounded to 0.1 mm, half up), volume in mm3, densities in HU. ``mask`` is the segmentation
    on the INPUT grid (boolean, axis order z, y, x) of the patch whose first voxel is ``mask_origin_zyx_vox``
    in the input volume, so ``hu[origin[0] + k, origin[1] + i, origin[2] + j]`` is inside the nodule where
    ``mask[k, i, j]``. ``center_zyx_vox`` is the centre of the segmentation in input voxel coordinates;
    ``axial_slice`` the input slice index nearest to the plane of the axes. ``solid_component_mm`` is the
    mean diameter of the solid core, for part-solid nodules only; ``solid_fraction`` the share of the
    nodule's volume at solid density; ``mean_hu`` its mean density; ``juxtapleural`` True when part of the
    nodule was restored inside the chest wall; ``plateau_share`` the ground-glass evidence the type rests on
    (see :func:`_classify`). ``spicule_lengths_mm`` are the lengths (mm, longest first) of the spicules found
    (:func:`_spicules`), and ``spiculation`` a score from 0 to 1: the longest spicule's length over
    :data:`SPICULE_FULL_MM`, capped at 1; the nodule counts as spiculated from :data:`SPICULATED_SCORE` on.
    """

    long_axis_mm: float
    short_axis_mm: float
    mean_diameter_mm: float
    volume_mm3: float
    nodule_type: NoduleType
    solid_component_mm: float | None
    center_zyx_vox: tuple[float, float, float]
    axial_slice: int
    mask: np.ndarray = field(repr=False)
    mask_origin_zyx_vox: tuple[int, int, int]
    solid_fraction: float
    mean_hu: float
    juxtapleural: bool = False
    plateau_share: float = 0.0
    spicule_lengths_mm: tuple[float, ...] = ()
    spiculation: float = 0.0

    @property
    def spiculated(self) -> bool:
        """True when the spiculation score reaches :data:`SPICULATED_SCORE` (a spicule of 1.6 mm or longer)."""
        return self.spiculation >= SPICULATED_SCORE

    def to_measurement(self, *, spiculated: bool | None = None) -> Measurement:
        """The screening rules' :class:`screening.types.Measurement` of this nodule; ``spiculated`` None: as
        measured (:attr:`spiculated`)."""
        return Measurement.from_axes(
            self.nodule_type,
            self.long_axis_mm,
            self.short_axis_mm,
            solid_component_mm=self.solid_component_mm,
            spiculated=self.spiculated if spiculated is None else spiculated,
        )


def measure_nodule(
    hu: np.ndarray,
    spacing_zyx_mm: tuple[float, float, float],
    center_zyx_vox: tuple[float, float, float],
    *,
    approx_diameter_mm: float | None = None,
    as_solid: bool = False,
) -> NoduleMeasurement:
    """Segment and measure the nodule at ``center_zyx_vox`` of ``hu``.

    ``hu``: HU volume, axis order (z, y, x); ``spacing_zyx_mm``: voxel size in mm (z, y, x);
    ``center_zyx_vox``: the candidate centre in voxel coordinates (z, y, x), within about two voxels of the
    nodule; ``approx_diameter_mm``: the detector's size estimate, if any (sets the first patch size);
    ``as_solid``: measure it as a solid nodule (boundary half-way to its soft-tissue level, no solid component)
    whatever its densities say, for a nodule that another reader types solid.

    Raises ValueError, naming the centre and the reason, when there is no nodule at the centre (nothing
    denser than ground glass within two voxels, or only chest wall or mediastinum), when the centre lies
    outside the volume, or when the structure there does not fit in a patch of 2 x 70 mm. Takes about 0.3 s
    (one CPU core).
    """
    hu = np.asarray(hu)
    if hu.ndim != 3:
        raise ValueError(f"hu must be 3-D (z, y, x), got shape {hu.shape}")
    spacing = np.asarray(spacing_zyx_mm, dtype=float)
    if spacing.shape != (3,) or not np.all(np.isfinite(spacing)) or spacing.min() <= 0:
        raise ValueError(f"spacing_zyx_mm must be three positive values in mm, got {spacing_zyx_mm}")
    centre = np.asarray(center_zyx_vox, dtype=float)
    if centre.shape != (3,) or not np.all(np.isfinite(centre)):
        raise ValueError(f"center_zyx_vox must be three finite voxel coordinates, got {center_zyx_vox}")
    if np.any(centre < -0.5) or np.any(centre > np.array(hu.shape) - 0.5):
        raise ValueError(f"no nodule at centre {tuple(center_zyx_vox)}: outside the volume of shape {hu.shape}")
    if approx_diameter_mm is not None and not (np.isfinite(approx_diameter_mm) and approx_diameter_mm > 0):
        raise ValueError(f"approx_diameter_mm must be a positive number of mm, got {approx_diameter_mm}")
    diameter = float(approx_diameter_mm) if approx_diameter_mm is not None else DEFAULT_DIAMETER_MM
    half = max(12.0, 1.5 * diameter + 6.0)
    while True:
        result = _measure_in_patch(hu, spacing, centre, half, diameter, as_solid=as_solid)
        if result is not None:
            return result
        if half >= MAX_PATCH_HALF_MM:
            raise ValueError(
                f"no nodule at centre {tuple(center_zyx_vox)}: the structure there does not fit in a patch of "
                f"2 x {MAX_PATCH_HALF_MM:.0f} mm (not a nodule, or merged with a large structure)"
            )
        half = min(MAX_PATCH_HALF_MM, half * 1.6)
        logger.debug("nodule at %s touches the patch border: growing the patch to +-%.0f mm", centre, half)


@dataclass
class _Patch:
    """A box of the input volume resampled to an isotropic grid of ``step`` mm."""

    origin: np.ndarray  # first input voxel (z, y, x) of the box, int
    data: np.ndarray  # the input voxels of the box (HU)
    fine: np.ndarray  # HU on the fine grid
    step: float  # fine grid step, mm
    spacing: np.ndarray  # input voxel size, mm
    clipped: np.ndarray  # (3, 2) bool: box side clipped by the volume's edge (low, high) per axis

    def to_fine(self, vox: np.ndarray) -> np.ndarray:
        """Fine-grid coordinates of input voxel coordinates."""
        return (vox - self.origin) * self.spacing / self.step

    def to_input(self, fine: np.ndarray) -> np.ndarray:
        """Input voxel coordinates of fine-grid coordinates."""
        return np.asarray(fine) * self.step / self.spacing + self.origin


def _extract(
    hu: np.ndarray, spacing: np.ndarray, centre: np.ndarray, half_mm: float, step: float, *, pad: bool = False
) -> _Patch:
    """The box of +-``half_mm`` around ``centre`` (input voxels), resampled to ``step`` mm. Where the box
    leaves the volume it is cut, or with ``pad`` filled with the volume's edge voxels (tissue cut by the
    field of view goes on)."""
    half_vox = np.ceil(half_mm / spacing).astype(int)
    c = np.round(centre).astype(int)
    want_lo, want_hi = c - half_vox, c + half_vox + 1
    lo = np.maximum(want_lo, 0)
    hi = np.minimum(want_hi, np.array(hu.shape))
    clipped = np.stack([want_lo < 0, want_hi > np.array(hu.shape)], axis=1)
    data = np.asarray(hu[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]], dtype=np.float32)
    if pad and clipped.any():
        data = np.pad(data, list(zip(lo - want_lo, want_hi - hi, strict=True)), mode="edge")
        lo = want_lo
    shape = np.floor((np.array(data.shape) - 1) * spacing / step).astype(int) + 1
    fine = ndimage.affine_transform(
        data, np.diag(step / spacing), output_shape=tuple(shape), order=1, mode="nearest"
    ).astype(np.float32)
    return _Patch(origin=lo, data=data, fine=fine, step=step, spacing=spacing, clipped=clipped)


def _ball_mask(shape: tuple[int, ...], centre: np.ndarray, radii: np.ndarray) -> np.ndarray:
    grids = np.ogrid[tuple(slice(0, n) for n in shape)]
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, radii, strict=True)) <= 1.0


def _grown_box(mask: np.ndarray, grow: int) -> tuple[slice, ...]:
    """The bounding box of a non-empty ``mask`` grown by ``grow`` voxels on each side, clipped to the array."""
    box = []
    for axis in range(mask.ndim):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        box.append(slice(max(0, int(hit[0]) - grow), min(mask.shape[axis], int(hit[-1]) + grow + 1)))
    return tuple(box)


def _depth_mm(mask: np.ndarray, step: float) -> np.ndarray:
    """``ndimage.distance_transform_edt(mask, sampling=step)``, bit for bit: mm from each voxel of ``mask`` to the
    nearest voxel outside it (0 outside ``mask``), on a grid of ``step`` mm.

    Computed on the mask's bounding box grown by one voxel (clipped to the array, whose outside scipy never takes
    as background): any background voxel beyond that box projects onto the box's outer layer, which is background
    and strictly nearer to every voxel inside, so the nearest background voxels all lie in the box (and the
    feature transform meets the same candidates in the same order there)."""
    if not mask.any():
        return np.zeros(mask.shape)
    box = _grown_box(mask, 1)
    if all(b.stop - b.start == n for b, n in zip(box, mask.shape, strict=True)):
        return ndimage.distance_transform_edt(mask, sampling=step)
    depth = np.zeros(mask.shape)
    depth[box] = ndimage.distance_transform_edt(mask[box], sampling=step)
    return depth


def _distance_mm(mask: np.ndarray, step: float, within_mm: float) -> np.ndarray:
    """``ndimage.distance_transform_edt(~mask, sampling=step)`` (mm to the nearest voxel of ``mask``, grid of
    ``step`` mm) bit for bit wherever it is at most ``within_mm``; elsewhere a value above ``within_mm`` (inf
    beyond the box below; all inf for an empty ``mask``).

    Computed on the mask's bounding box grown by ceil(within_mm / step) + 1 voxels (clipped to the array): all
    voxels of ``mask`` lie inside it, so the distances there are those of the whole array, and any voxel outside
    it is more than ``within_mm`` from every voxel of ``mask``."""
    distance = np.full(mask.shape, np.inf)
    if not mask.any():
        return distance
    box = _grown_box(mask, int(np.ceil(within_mm / step)) + 1)
    distance[box] = ndimage.distance_transform_edt(~mask[box], sampling=step)
    return distance


def _dilate(mask: np.ndarray, radius_mm: float, step: float) -> np.ndarray:
    """Voxels within ``radius_mm`` (mm) of ``mask`` (grid of ``step`` mm)."""
    return _distance_mm(mask, step, radius_mm) <= radius_mm


def _erode(mask: np.ndarray, radius_mm: float, step: float) -> np.ndarray:
    """Voxels of ``mask`` farther than ``radius_mm`` (mm) from any voxel outside it (grid of ``step`` mm)."""
    return _depth_mm(mask, step) > radius_mm


def _component_at(mask: np.ndarray, point: tuple[int, ...]) -> np.ndarray:
    labels, _ = ndimage.label(mask)
    label = labels[point]
    return labels == label if label else np.zeros_like(mask)


def _measure_in_patch(
    hu: np.ndarray,
    spacing: np.ndarray,
    centre: np.ndarray,
    half_mm: float,
    diameter_guess: float,
    debug: dict | None = None,
    *,
    as_solid: bool = False,
) -> NoduleMeasurement | None:
    """Measure in a patch of +-``half_mm``; None when the nodule touches the patch border. ``debug``, when
    given, receives the intermediate masks (for diagnosis); ``as_solid``: see :func:`measure_nodule`."""
    step = float(np.clip(diameter_guess / 20.0, 0.35, 0.6))
    patch = _extract(hu, spacing, centre, half_mm, step)
    fine = patch.fine
    lung_values = patch.data[patch.data < -750.0]
    background = float(np.median(lung_values)) if lung_values.size > 50 else LUNG_HU
    low_threshold = (background + GROUND_GLASS_HU) / 2
    smooth = ndimage.gaussian_filter(fine, SMOOTHING_MM / step)  # tames noise for the thresholds
    low = smooth >= low_threshold

    # Cut from the chest wall: tissue thick enough to hold a ball larger than any nodule. A nodule larger
    # than the first ball is all "wall": then a larger ball, which a thin wall may no longer hold.
    for ball_mm in WALL_BALLS_MM:
        envelope = ~_wall_mask(hu, spacing, centre, patch, low_threshold, ball_mm)
        tissue = low & envelope
        found = _find_seed(tissue, patch, centre)
        if found is not None:
            break
    else:
        what = "only chest wall or mediastinum" if _find_seed(low, patch, centre) else "no voxel"
        raise ValueError(
            f"no nodule at centre {tuple(float(v) for v in centre)}: {what} at or above {low_threshold:.0f} HU "
            f"(ground glass or denser) within two voxels ({np.round(_search_mm(patch), 1).tolist()} mm, z y x)"
        )
    seed, inscribed = found
    region = _component_at(tissue, seed)

    # From here on, a box around the seed that holds any nodule of this inscribed radius (rays reach as far).
    box = tuple(
        slice(max(0, c - reach), min(n, c + reach + 1))
        for c, n, reach in zip(seed, fine.shape, [int((RAY_REACH * inscribed + 3.0) / step)] * 3, strict=True)
    )
    fine, low, envelope, region = fine[box], low[box], envelope[box], region[box]
    seed = (seed[0] - box[0].start, seed[1] - box[1].start, seed[2] - box[2].start)

    # Cut from vessels: opening with a ball a little smaller than the nodule's inscribed radius (thinner
    # vessels vanish, the nodule stays), then a short reconstruction that gives back its margin.
    opening_radius = OPENING_SHARE * inscribed
    core = _erode(region, opening_radius, step)
    if core[seed]:
        core = _component_at(core, seed)
        opened = _dilate(core, opening_radius, step)
        region = region & _dilate(opened, max(step, RECONSTRUCTION_SHARE * inscribed), step)
        region = _component_at(region, seed)
    wall_margin = WALL_MARGIN_MM + 2 * step
    # distance_transform_edt(envelope) without the wall: scipy's distances to a voxel before the array's corner
    near_wall = (
        _dilate(~envelope, wall_margin, step) if not envelope.all() else _depth_mm(envelope, step) <= wall_margin
    )
    boundary = region & ~ndimage.binary_erosion(region)
    wall_share = float((boundary & near_wall).sum() / max(int(boundary.sum()), 1))
    logger.debug(
        "patch +-%.0f mm step %.2f: lung %.0f HU, seed %s depth %.1f mm, region %d voxels, wall share %.2f",
        *(half_mm, step, background, seed, inscribed, int(region.sum()), wall_share),
    )
    if debug is not None:
        debug.update(patch=patch, box=box, low=low, envelope=envelope, seed=seed, region=region, fine=fine)

    # Vessel stubs that survived the opening stick out of the nodule's smooth shape: an ellipsoid fitted
    # to the free surface (facing the lung) gives that shape; the nodule is kept within it.
    first_reach = JUXTAPLEURAL_FIRST_REACH if wall_share > JUXTAPLEURAL_WALL_SHARE else FIRST_REACH
    shape = _fit_shape(region, ~low, seed, inscribed / step, first_reach)
    limit = _within(shape, fine.shape, SHAPE_TOLERANCE, JUNCTION_TOLERANCE)
    if limit is None:
        limit = _ball_mask(fine.shape, np.array(seed), np.full(3, MAX_EXTENT_SHARE * inscribed / step + 1))
    region = _largest_component_near(region & limit, seed)
    if _touches_border(_paste(region, box, patch), patch):
        return None

    # Type from the input voxels inside the nodule.
    values = _input_values(patch, _paste(region, box, patch))
    if values.size == 0:
        values = fine[region]
    deep = _depth_mm(region, step) >= CORE_DEPTH_SHARE * inscribed
    deep_values = _input_values(patch, _paste(region & deep, box, patch))
    nodule_type, glass_level, solid_level, plateau = _classify(values, deep_values, np.prod(spacing))
    if as_solid:
        nodule_type = NoduleType.SOLID

    # The boundary half-way between the lung and the nodule's outer density.
    outer_level = solid_level if nodule_type is NoduleType.SOLID else min(glass_level, SOLID_HU - 50.0)
    threshold = (background + outer_level) / 2
    inside = fine >= threshold
    reach = _dilate(region, SMOOTHING_MM + step, step) & envelope  # the smoothing shrank the region a little
    nodule = _largest_component_near(reach & inside, seed)
    if not nodule.any():
        raise ValueError(
            f"no nodule at centre {tuple(float(v) for v in centre)}: nothing left at {threshold:.0f} HU "
            "after separating vessels and chest wall"
        )

    # Refit on the final boundary; inside the fitted shape, tissue hidden by the wall or a vessel is nodule.
    juxtapleural = False
    shape = _fit_shape(nodule, ~inside, seed, inscribed / step, first_reach)
    if shape is not None:
        clip = _within(shape, fine.shape, SHAPE_TOLERANCE, JUNCTION_TOLERANCE)
        fill = _within(shape, fine.shape, 0.0)
        visible = int(nodule.sum())
        shaped = _largest_component_near((nodule & clip) | (inside & fill), seed)
        if shaped.sum() >= 0.5 * visible:  # else the fit went astray: keep the thresholded nodule
            nodule = shaped
        hidden = nodule & ~envelope
        juxtapleural = bool(wall_share > JUXTAPLEURAL_WALL_SHARE and hidden.sum() > 0.05 * visible)
    if debug is not None:
        debug.update(nodule=nodule, values=values, plateau=plateau, shape=shape)

    spicules = _spicules(nodule, low & envelope, ~envelope, step)

    points = np.argwhere(nodule)
    centroid = points.mean(axis=0)
    plane = int(centroid[0] + 0.5)
    long_axis, short_axis = _undo_slice_sampling(*_axes(np.argwhere(nodule[plane]) * step, step), float(spacing[0]))

    solid_component = None
    if nodule_type is NoduleType.PART_SOLID:
        core_threshold = (outer_level + solid_level) / 2
        depth_mm = inscribed * CORE_DEPTH_SHARE
        solid_component = _solid_component(
            fine, nodule & envelope, core_threshold, depth_mm, step, centroid, plane, float(spacing[0])
        )
        if solid_component is None:  # the dense part is a vessel crossing a ground-glass nodule
            nodule_type = NoduleType.GROUND_GLASS
        elif solid_component == 0.0:  # a core of a voxel or two: the diameter of a sphere of its volume
            core_mm3 = float((deep_values >= SOLID_HU).sum() * np.prod(spacing))
            solid_component = round_mm((6.0 * core_mm3 / np.pi) ** (1 / 3))
        if solid_component is not None:
            solid_component = min(solid_component, mean_diameter_mm(long_axis, short_axis))
    solid_fraction = float((fine[nodule] >= SOLID_HU).mean())

    # On the input grid: the input voxels at nodule density within the segmentation (the outline); the volume
    # from the partial volume of the voxels on and around it (a count of whole voxels is coarse on thick slices).
    mask_input = _to_input_mask(patch, _paste(ndimage.binary_dilation(nodule), box, patch)) & (patch.data >= threshold)
    volume = _partial_volume_mm3(patch.data, mask_input, spacing, background, outer_level)
    centre_vox = patch.to_input(centroid + np.array([b.start for b in box]))
    long_r, short_r = round_mm(long_axis), round_mm(short_axis)
    logger.debug(
        "nodule at %s: %s, %.1f x %.1f mm, %.0f mm3", centre_vox.round(1), nodule_type, long_r, short_r, volume
    )
    return NoduleMeasurement(
        long_axis_mm=long_r,
        short_axis_mm=short_r,
        mean_diameter_mm=mean_diameter_mm(long_r, short_r),
        volume_mm3=round(volume, 1),
        nodule_type=nodule_type,
        solid_component_mm=solid_component,
        center_zyx_vox=(float(centre_vox[0]), float(centre_vox[1]), float(centre_vox[2])),
        axial_slice=int(np.clip(round(centre_vox[0]), 0, hu.shape[0] - 1)),
        mask=mask_input,
        mask_origin_zyx_vox=(int(patch.origin[0]), int(patch.origin[1]), int(patch.origin[2])),
        solid_fraction=solid_fraction,
        mean_hu=float(fine[nodule].mean()),
        juxtapleural=juxtapleural,
        plateau_share=plateau,
        spicule_lengths_mm=tuple(round(v, 2) for v in spicules),
        spiculation=spicule_score(spicules[0]) if spicules else 0.0,
    )


def spicule_score(length_mm: float) -> float:
    """The spiculation score (0..1, rounded to 3 decimals) of a spicule reaching `length_mm` mm beyond the rim: its
    length over :data:`SPICULE_FULL_MM`, capped at 1 (spiculated from :data:`SPICULATED_SCORE`, 1.6 mm)."""
    return round(min(1.0, float(length_mm) / SPICULE_FULL_MM), 3)


def _partial_volume_mm3(
    data: np.ndarray, mask: np.ndarray, spacing: np.ndarray, lung_hu: float, nodule_hu: float
) -> float:
    """Volume (mm3) of the nodule outlined by ``mask`` on the input voxels ``data`` (HU, z y x, voxel size
    ``spacing`` mm), from partial volume: each voxel counts for the share of nodule its density gives,
    (HU - ``lung_hu``) / (``nodule_hu`` - ``lung_hu``), capped at 1 (a solid core, a vessel inside) and at
    :data:`PARTIAL_VOLUME_FLOOR` below (noise on lung averages out, a dark outlier cannot cancel the nodule).

    The voxels summed: the outline, a pixel around it on each slice and the slices just beyond each end (a
    nodule's cap lighter than half-way), less other tissue at nodule density (a vessel, the chest wall) and a
    pixel around it. Edge voxels give the volume a fraction of a voxel each instead of all or nothing, so a
    small nodule on thick slices is measured to a few percent where counting whole voxels errs by one or two
    of them (see :func:`evaluate_on_phantoms`).
    """
    in_plane = np.ones((1, 3, 3), dtype=bool)
    footprint = ndimage.binary_dilation(mask, structure=in_plane)
    slices = np.flatnonzero(mask.any(axis=(1, 2)))
    if slices.size == 0:
        return 0.0
    first, last = int(slices[0]), int(slices[-1])
    if first > 0:
        footprint[first - 1] |= footprint[first]
    if last + 1 < mask.shape[0]:
        footprint[last + 1] |= footprint[last]
    other = (data >= (lung_hu + nodule_hu) / 2) & ~mask
    footprint &= ~(ndimage.binary_dilation(other, structure=in_plane) & ~mask)
    share = np.clip((data[footprint] - lung_hu) / (nodule_hu - lung_hu), PARTIAL_VOLUME_FLOOR, 1.0)
    return max(0.0, float(share.sum() * np.prod(spacing)))


def _spicules(nodule: np.ndarray, tissue: np.ndarray, wall: np.ndarray, step: float) -> list[float]:
    """Lengths (mm beyond the rim, longest first) of the appendages of ``tissue`` that stick out of ``nodule`` and
    end in the lung: spicules. All masks are on the same fine grid of ``step`` mm; ``wall`` is the chest wall.

    The segmentation leaves spicules out (the opening and the fitted shape cut them like vessel stubs), but the
    tissue mask (ground glass or denser) keeps them. Tissue farther than :data:`SPICULE_RIM_MM` from the nodule
    (its partial-volume rim lies nearer) splits into components; a spicule is one that touches the rim and
    ends within :data:`SPICULE_REACH_SHARE` equivalent radii of the nodule (a vessel goes on), away from the
    wall and the patch border. Appendages shorter than :data:`SPICULE_MIN_LENGTH_MM` are not listed.

    On 80 synthetic phantoms at 2.5 x 1.4 x 1.4 mm (seeds 11 and 12, 40 each: ``python -m models.measurement
    --spiculation --n 40 --seed 11``), 2 of 187 smooth solid or part-solid nodules of 4 mm or more had an
    appendage of 1.6 mm or more, against 31 of 41 spiculated ones of 8 mm or more (AUC 0.86; 10 of 22 under 8 mm,
    where spicules are shorter and thinner than a voxel): hence :data:`SPICULATED_SCORE` at 1.6 mm. Spicules of
    a juxtapleural nodule that run into the wall are not seen.
    """
    volume = float(nodule.sum()) * step**3
    radius = (3.0 * volume / (4.0 * np.pi)) ** (1 / 3)
    reach = SPICULE_REACH_SHARE * radius + SPICULE_RIM_MM
    outside = _distance_mm(nodule, step, reach)  # exact up to reach: farther appendages are vessels anyway
    appendages = tissue & (outside > SPICULE_RIM_MM)
    labels, count = ndimage.label(appendages, structure=np.ones((3, 3, 3), dtype=bool))
    if count == 0:
        return []
    index = np.arange(1, count + 1)
    labelled = labels > 0  # the statistics over these voxels only: the same, without sorting the whole patch
    nearest = ndimage.minimum(outside[labelled], labels[labelled], index)
    farthest = ndimage.maximum(outside[labelled], labels[labelled], index)
    if wall.any():
        near_wall = ndimage.maximum(_dilate(wall, 2 * step, step)[labelled], labels[labelled], index)
    else:
        near_wall = np.zeros(count)
    border = np.zeros(count + 1, dtype=bool)
    for axis in range(3):
        for side in (0, -1):
            border[np.unique(np.take(labels, side, axis=axis))] = True
    lengths = []
    for n in range(count):
        attached = nearest[n] <= SPICULE_RIM_MM + 1.5 * step
        if attached and not border[n + 1] and not near_wall[n] and farthest[n] <= reach:
            length = float(farthest[n]) - SPICULE_RIM_MM
            if length >= SPICULE_MIN_LENGTH_MM:
                lengths.append(length)
    return sorted(lengths, reverse=True)


def _search_mm(patch: _Patch) -> np.ndarray:
    """How far from the given centre the nodule's centre is looked for (mm, z y x): two voxels, at least 2 mm."""
    return np.maximum(2.0 * patch.spacing, 2.0)


def _find_seed(tissue: np.ndarray, patch: _Patch, centre: np.ndarray) -> tuple[tuple[int, int, int], float] | None:
    """The nodule's centre on the fine grid and its inscribed radius (mm); None when no ``tissue`` is near.

    Near the given ``centre`` (see :func:`_search_mm`), the point deepest inside ``tissue``, each mm away from
    the centre costing :data:`SEED_DISTANCE_PENALTY` mm of depth (a nodule's centre rather than a thicker
    vessel's beside it); then uphill in depth to the local maximum.
    """
    step = patch.step
    near = patch.to_fine(centre)
    window = _ball_mask(tissue.shape, near, _search_mm(patch) / step) & tissue
    if not window.any():
        return None
    depth = _depth_mm(tissue, step)
    grids = np.ogrid[tuple(slice(0, n) for n in tissue.shape)]
    distance = np.sqrt(sum((g - c) ** 2 for g, c in zip(grids, near, strict=True))) * step
    scored = np.where(window, depth - SEED_DISTANCE_PENALTY * distance, -np.inf)
    seed = _climb(depth, np.unravel_index(int(np.argmax(scored)), tissue.shape))
    return seed, float(depth[seed])


def _solid_component(
    fine: np.ndarray,
    nodule: np.ndarray,
    threshold: float,
    depth_mm: float,
    step: float,
    centroid: np.ndarray,
    plane: int,
    slice_mm: float,
) -> float | None:
    """Mean diameter (mm) of the solid core of a part-solid ``nodule`` on the axial ``plane``; 0.0 when the
    core is too small for the fine grid; None when the dense part inside the nodule is a vessel crossing it.

    The core is the part at or above ``threshold`` HU lying deeper than ``depth_mm`` in the nodule (not a vessel
    touching its margin), opened (by at most :data:`CORE_OPENING_MM`) to drop thinner vessels running through
    it, nearest to the ``centroid``. A dense part more than :data:`VESSEL_ELONGATION` times longer than wide is
    a vessel, not a core. Its axes get the slice-sampling correction of the whole nodule's (``slice_mm`` apart,
    :func:`_undo_slice_sampling`): on 124 part-solid nodules of 100 phantoms at 2.5 x 1.4 x 1.4 mm measured
    part-solid, the bias went from -0.87 / -0.72 mm to -0.17 / -0.01 mm (two sets of phantoms, RMS 0.97 / 0.99 to
    0.54 / 0.73 mm); the correction alone left -0.40 mm, the opening by 0.7 of the core's radius eating its rim.
    """
    dense = fine >= threshold
    interior = _depth_mm(nodule, step) >= depth_mm
    inside = nodule & interior & dense
    if not inside.any():
        return 0.0
    # A vessel through the nodule thinner than the core: opened away.
    radius = min(CORE_OPENING_SHARE * float(_depth_mm(inside, step).max()), CORE_OPENING_MM)
    opened = _dilate(_erode(inside, radius, step), radius, step) & inside
    core = _largest_component_near(opened if opened.any() else inside, tuple(np.round(centroid).astype(int)))
    # What is left long and thin is a vessel crossing a ground-glass nodule, not a core.
    points = np.argwhere(core) * step
    if len(points) >= 4:
        spread = np.linalg.eigvalsh(np.cov(points.T))
        if spread[-1] > VESSEL_ELONGATION**2 * max(spread[0], step**2 / 12):
            return None
    core_plane = core[plane] if core[plane].any() else core[int(np.argwhere(core)[:, 0].mean() + 0.5)]
    core_long, core_short = _undo_slice_sampling(*_axes(np.argwhere(core_plane) * step, step), slice_mm)
    return mean_diameter_mm(core_long, core_short)


def _wall_mask(
    hu: np.ndarray, spacing: np.ndarray, centre: np.ndarray, patch: _Patch, threshold: float, ball_mm: float
) -> np.ndarray:
    """Chest wall and mediastinum on ``patch``'s fine grid: tissue (at or above ``threshold`` HU) reached by a
    ball of ``ball_mm`` radius that fits in tissue and air (below :data:`AIR_HU`: outside the body, a thin wall
    still counts), found on a coarser grid with room around the patch; taken :data:`WALL_MARGIN_MM` thinner, so
    that the ball's rounding never bites into a nodule against the wall."""
    half = float(np.max((np.array(patch.data.shape) - 1) * spacing)) / 2 + 2 * ball_mm
    context = _extract(hu, spacing, centre, half, WALL_STEP_MM, pad=True)
    smooth = ndimage.gaussian_filter(context.fine, 0.5)
    air = _dilate(smooth < AIR_HU, AIR_EDGE_MM, WALL_STEP_MM)  # with the skin's partial-volume edge
    not_lung = (smooth >= threshold) | air
    wall = _dilate(_erode(not_lung, ball_mm, WALL_STEP_MM), ball_mm - WALL_MARGIN_MM, WALL_STEP_MM)
    if not wall.any():  # interpolating zeros gives zeros
        return np.zeros(patch.fine.shape, dtype=bool)
    offset = (patch.origin - context.origin) * spacing / WALL_STEP_MM
    on_fine = ndimage.affine_transform(
        wall.astype(np.float32),
        np.full(3, patch.step / WALL_STEP_MM),
        offset=offset,
        output_shape=patch.fine.shape,
        order=1,
        mode="nearest",
    )
    return on_fine >= 0.5


def _classify(values: np.ndarray, deep_values: np.ndarray, voxel_mm3: float) -> tuple[NoduleType, float, float, float]:
    """Type of a nodule from the HU of its input voxels: (type, ground-glass level, solid level, plateau share).

    Partial volume spreads the edge voxels of a solid nodule evenly between lung and soft tissue, so its
    voxels between -680 and -480 HU are about as many as those between -400 and -200 HU. A ground-glass
    plateau (whole nodule or shell of a part-solid one) adds many more in the first band: the excess, as a
    share of the nodule's voxels, is the plateau share; it must also stand out of the counting noise. Without
    a plateau the nodule is solid, with one part-solid; but a nodule whose interior (``deep_values``, away from
    vessels touching its surface) holds less than :data:`MIN_SOLID_CORE_MM3` of solid voxels is ground glass.
    """
    glass = int(((values >= GLASS_BAND_HU[0]) & (values < GLASS_BAND_HU[1])).sum())
    edge = int(((values >= EDGE_BAND_HU[0]) & (values < EDGE_BAND_HU[1])).sum())
    plateau = float(glass - edge) / max(values.size, 1)
    dense = values >= SOLID_HU + 200.0
    solid_level = float(np.median(values[dense])) if dense.any() else 0.0
    glass_values = values[(values >= GLASS_BAND_HU[0]) & (values < GLASS_BAND_HU[1])]
    glass_level = float(np.median(glass_values)) if glass >= 5 else GROUND_GLASS_HU
    if (deep_values >= SOLID_HU).sum() * voxel_mm3 < MIN_SOLID_CORE_MM3:
        nodule_type = NoduleType.GROUND_GLASS
    elif plateau < max(PLATEAU_SHARE, PLATEAU_NOISE / np.sqrt(max(values.size, 1))):
        nodule_type = NoduleType.SOLID
    else:
        nodule_type = NoduleType.PART_SOLID
    return nodule_type, glass_level, solid_level, plateau


def _climb(depth: np.ndarray, start: tuple[int, ...]) -> tuple[int, int, int]:
    """From ``start``, step to the deepest of the 26 neighbours until none is deeper: a local maximum."""
    point = np.array(start)
    upper = np.array(depth.shape) - 1
    for _ in range(10_000):
        lo, hi = np.maximum(point - 1, 0), np.minimum(point + 1, upper)
        box = depth[lo[0] : hi[0] + 1, lo[1] : hi[1] + 1, lo[2] : hi[2] + 1]
        best = np.array(np.unravel_index(int(np.argmax(box)), box.shape)) + lo
        if box.max() <= depth[tuple(point)]:
            break
        point = best
    return int(point[0]), int(point[1]), int(point[2])


def _paste(mask: np.ndarray, box: tuple[slice, ...], patch: _Patch) -> np.ndarray:
    """``mask`` of the ``box`` of ``patch``'s fine grid, on the whole fine grid."""
    whole = np.zeros(patch.fine.shape, dtype=bool)
    whole[box] = mask
    return whole


def _largest_component_near(mask: np.ndarray, point: tuple[int, ...]) -> np.ndarray:
    """The component of ``mask`` containing ``point``, else the largest one."""
    labels, count = ndimage.label(mask)
    if count == 0:
        return mask
    label = labels[point]
    if not label:
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        label = int(np.argmax(sizes))
    return labels == label


def _touches_border(mask: np.ndarray, patch: _Patch) -> bool:
    """True when ``mask`` reaches a side of the patch that the volume's edge did not clip."""
    for axis in range(3):
        for side, index in ((0, 0), (1, mask.shape[axis] - 1)):
            if not patch.clipped[axis, side] and np.take(mask, index, axis=axis).any():
                return True
    return False


def _input_values(patch: _Patch, mask: np.ndarray) -> np.ndarray:
    """The input voxels (HU) whose centres fall inside the fine ``mask``."""
    grids = np.indices(patch.data.shape).reshape(3, -1).T
    fine_index = np.round(grids * patch.spacing / patch.step).astype(int)
    inside = np.all(fine_index < np.array(mask.shape), axis=1)
    hit = np.zeros(len(grids), dtype=bool)
    hit[inside] = mask[tuple(fine_index[inside].T)]
    return patch.data.reshape(-1)[hit]


def _to_input_mask(patch: _Patch, mask: np.ndarray) -> np.ndarray:
    grids = np.indices(patch.data.shape).reshape(3, -1).T
    fine_index = np.minimum(np.round(grids * patch.spacing / patch.step).astype(int), np.array(mask.shape) - 1)
    return mask[tuple(fine_index.T)].reshape(patch.data.shape)


@dataclass(frozen=True)
class _Ellipsoid:
    """``(x - centre)^T matrix (x - centre) <= 1``, fine-grid voxel coordinates."""

    centre: np.ndarray
    matrix: np.ndarray
    free_directions: np.ndarray | None = None  # (n, 3) unit vectors of the rays that ended in the lung


def _directions(count: int) -> np.ndarray:
    """``count`` unit vectors spread evenly over the sphere (a Fibonacci lattice), (count, 3)."""
    i = np.arange(count) + 0.5
    polar = np.arccos(1 - 2 * i / count)
    azimuth = np.pi * (1 + 5**0.5) * i
    return np.stack([np.cos(polar), np.sin(polar) * np.sin(azimuth), np.sin(polar) * np.cos(azimuth)], axis=1)


def _fit_shape(
    mask: np.ndarray, lung: np.ndarray, seed: tuple[int, ...], inscribed: float, first_reach: float
) -> _Ellipsoid | None:
    """The ellipsoid of ``mask``'s free surface, seen from ``seed``; None when too little of it is free.

    Rays from the seed find where they leave the mask; an exit into ``lung`` is free surface, an exit into
    anything else (a vessel, the wall, a cut) is not used. The first fit takes the free points within
    ``first_reach`` times the ``inscribed`` radius (voxels) of the seed (a vessel stub reaches further); each
    refit drops the points standing out of the fitted shape by more than :data:`OUTLIER_TOLERANCE` or sunk by
    more than twice that. A sphere is fitted instead of an ellipsoid when the free surface covers too little
    of the nodule to fix an ellipsoid's axes.
    """
    directions = _directions(RAY_COUNT)
    t = np.arange(0.0, RAY_REACH * max(inscribed, 1.0), 0.25)
    points = np.asarray(seed, dtype=float) + t[:, None, None] * directions[None, :, :]
    flat = points.reshape(-1, 3).T
    inside = ndimage.map_coordinates(mask.astype(np.uint8), flat, order=0, mode="constant").reshape(len(t), -1) > 0
    leaves = ~inside.all(axis=0)
    exit_index = np.argmin(inside, axis=0)
    radius = t[exit_index] - 0.125
    beyond = np.asarray(seed, dtype=float) + (t[exit_index] + 0.5)[:, None] * directions
    to_lung = ndimage.map_coordinates(lung.astype(np.uint8), beyond.T, order=0, mode="constant", cval=1) > 0
    free = leaves & to_lung
    if free.sum() < MIN_FREE_RAYS:
        return None
    free_directions = directions[free]
    # Away from where vessels join: a free ray whose neighbours are all free.
    clear = free & free[_neighbours(len(directions))].all(axis=1)
    if clear.sum() >= MIN_FREE_RAYS:
        free = clear
    surface = np.asarray(seed, dtype=float) + radius[:, None] * directions
    use_sphere = free.mean() < ELLIPSOID_MIN_FREE_SHARE
    keep = free & (radius <= first_reach * inscribed)
    if keep.sum() < MIN_FREE_RAYS:
        keep = free.copy()
    ellipsoid = None
    for _ in range(4):
        fitted = _fit_sphere(surface[keep]) if use_sphere else _fit_ellipsoid(surface[keep])
        if fitted is None:
            if use_sphere:
                return ellipsoid
            use_sphere = True
            continue
        ellipsoid = dataclasses.replace(fitted, free_directions=free_directions)
        d = surface - ellipsoid.centre
        scaled = np.sqrt(np.einsum("ij,jk,ik->i", d, ellipsoid.matrix, d))
        new_keep = free & (scaled < 1 + OUTLIER_TOLERANCE) & (scaled > 1 - 2 * OUTLIER_TOLERANCE)
        if new_keep.sum() < MIN_FREE_RAYS or np.array_equal(new_keep, keep):
            break
        keep = new_keep
    return ellipsoid


@functools.cache
def _neighbours(count: int) -> np.ndarray:
    """Indices (count, 6) of the six nearest directions of each of :func:`_directions`."""
    directions = _directions(count)
    return np.argsort(-directions @ directions.T, axis=1)[:, 1:7]


def _fit_ellipsoid(points: np.ndarray) -> _Ellipsoid | None:
    """Least-squares ellipsoid through ``points`` (general quadric); None when the quadric is no ellipsoid or
    a too elongated one (axis ratio over 2)."""
    offset = points.mean(axis=0)
    scale = max(float(np.abs(points - offset).max()), 1.0)
    z, y, x = ((points - offset) / scale).T
    design = np.stack([z * z, y * y, x * x, 2 * z * y, 2 * z * x, 2 * y * x, 2 * z, 2 * y, 2 * x], axis=1)
    coef, *_ = np.linalg.lstsq(design, np.ones(len(points)), rcond=None)
    a = np.array([[coef[0], coef[3], coef[4]], [coef[3], coef[1], coef[5]], [coef[4], coef[5], coef[2]]])
    try:
        centre = -np.linalg.solve(a, coef[6:9])
    except np.linalg.LinAlgError:
        return None
    k = 1.0 + centre @ a @ centre
    eigen = np.linalg.eigvalsh(a / k) if k > 0 else np.zeros(3)
    if eigen.min() <= 0 or eigen.max() / eigen.min() > 4.0:
        return None
    return _Ellipsoid(centre=centre * scale + offset, matrix=a / k / scale**2)


def _fit_sphere(points: np.ndarray) -> _Ellipsoid | None:
    """Sphere through ``points``: an algebraic least-squares fit, refined to the geometric one (the algebraic fit
    comes out small on the part of a sphere a juxtapleural nodule shows); None when the fit is flat or tiny."""
    offset = points.mean(axis=0)
    p = points - offset
    coef, *_ = np.linalg.lstsq(np.column_stack([2 * p, np.ones(len(p))]), (p**2).sum(axis=1), rcond=None)
    radius_sq = coef[3] + coef[:3] @ coef[:3]
    if radius_sq <= 0:
        return None
    centre, radius = coef[:3], float(np.sqrt(radius_sq))
    for _ in range(10):  # Gauss-Newton on the distances to the sphere
        d = p - centre
        norm = np.maximum(np.linalg.norm(d, axis=1), 1e-9)
        jacobian = np.column_stack([-d / norm[:, None], -np.ones(len(p))])
        delta, *_ = np.linalg.lstsq(jacobian, -(norm - radius), rcond=None)
        centre, radius = centre + delta[:3], radius + float(delta[3])
        if np.abs(delta).max() < 1e-3:
            break
    spread = float(np.ptp(points, axis=0).max())
    if not spread / 4 <= radius <= spread:
        return None
    return _Ellipsoid(centre=centre + offset, matrix=np.eye(3) / radius**2)


def _within(
    ellipsoid: _Ellipsoid | None,
    shape: tuple[int, ...],
    tolerance: float,
    junction_tolerance: float | None = None,
) -> np.ndarray | None:
    """Voxels of a grid of ``shape`` inside ``ellipsoid`` grown by the share ``tolerance``; None for no ellipsoid.

    With ``junction_tolerance``, the band between that share and ``tolerance`` is kept only in the directions
    of free rays: the margin may bulge where it faces the lung, not where a vessel or the wall joins it.
    """
    if ellipsoid is None:
        return None
    scale = 1.0 + tolerance
    grids = np.ogrid[tuple(slice(0, n) for n in shape)]
    d = [g - c for g, c in zip(grids, ellipsoid.centre, strict=True)]
    m = ellipsoid.matrix
    q = sum(m[i, j] * d[i] * d[j] for i in range(3) for j in range(3))
    inside = q <= scale**2
    if junction_tolerance is None or ellipsoid.free_directions is None or not len(ellipsoid.free_directions):
        return inside
    junction_scale = 1.0 + junction_tolerance
    band = np.argwhere(inside & (q > junction_scale**2))
    if len(band):
        offsets = band - ellipsoid.centre
        offsets /= np.maximum(np.linalg.norm(offsets, axis=1, keepdims=True), 1e-9)
        cosine = (offsets @ ellipsoid.free_directions.T).max(axis=1)
        blocked = band[cosine < FREE_DIRECTION_COSINE]
        inside[tuple(blocked.T)] = False
    return inside


def _undo_slice_sampling(long_mm: float, short_mm: float, slice_mm: float) -> tuple[float, float]:
    """The axes (mm) lengthened by what sampling the nodule in slices ``slice_mm`` apart takes off them.

    The slices nearest the nodule's equator lie up to half a slice away from it, where a sphere of diameter d
    is narrower by about 2 dz^2 / d; linear interpolation between them does not restore the equator. Both
    axes get ``SLICE_SAMPLING_K * slice_mm**2 / mean`` (the mean at least one slice). The constant was fitted
    on 720 nodules of synthetic phantoms (seeds 31 to 34, slices 1.25, 2, 2.5 and 3 mm): the mean-diameter
    bias at 2.5 mm slices went from -0.42 / -0.32 / -0.14 / -0.08 mm (4-6 / 6-8 / 8-15 / 15+ mm) to
    +0.02 / -0.03 / +0.04 / +0.02 mm; the sharp-edge geometry alone gives 1/6.
    """
    mean = max((long_mm + short_mm) / 2, slice_mm)
    delta = SLICE_SAMPLING_K * slice_mm**2 / mean
    return long_mm + delta, short_mm + delta


def _axes(points: np.ndarray, pixel_mm: float) -> tuple[float, float]:
    """Long axis (largest Feret diameter) and the largest width perpendicular to it, mm, of the pixels whose
    centres are ``points`` (mm, in plane).

    As calipers are put on the outer edges of the boundary pixels (and as :func:`synth.nodules.measure` measures),
    :data:`EDGE_PIXELS` pixel is added to the span of the pixel centres.
    """
    if len(points) < 3:
        return pixel_mm, pixel_mm
    try:
        hull = points[ConvexHull(points).vertices]
    except QhullError:
        hull = points
    dist = np.linalg.norm(hull[:, None, :] - hull[None, :, :], axis=-1)
    i, j = np.unravel_index(int(np.argmax(dist)), dist.shape)
    direction = (hull[j] - hull[i]) / max(float(dist[i, j]), 1e-9)
    across = hull @ np.array([-direction[1], direction[0]])
    edge = EDGE_PIXELS * pixel_mm
    return float(dist[i, j] + edge), float(across.max() - across.min() + edge)


# --- Evaluation on synthetic phantoms -------------------------------------------------------------------------

WORKING_GRID = ((48, 128, 128), (2.5, 2.5, 2.5))  # the detector's working grid (models/registry.json)
NATIVE_GRID = ((96, 384, 384), (1.25, 0.7, 0.7))  # a typical native screening CT grid (about the same field)


@dataclass(frozen=True)
class NoduleOutcome:
    """One true nodule against its measurement (None when measuring failed, ``error`` then says why)."""

    truth_mean_diameter_mm: float
    truth_long_axis_mm: float
    truth_short_axis_mm: float
    truth_volume_mm3: float
    truth_type: NoduleType
    truth_solid_component_mm: float | None
    juxtapleural: bool
    spiculated: bool
    measured: NoduleMeasurement | None
    error: str | None = None


@dataclass(frozen=True)
class PhantomEvaluation:
    """Figures of :func:`evaluate_on_phantoms`: mm, fractions, relative errors."""

    shape_zyx: tuple[int, int, int]
    spacing_zyx_mm: tuple[float, float, float]
    n_phantoms: int
    outcomes: list[NoduleOutcome]

    @property
    def n_nodules(self) -> int:
        """True nodules measured (or tried)."""
        return len(self.outcomes)

    @property
    def n_failed(self) -> int:
        """Nodules for which measuring raised an error."""
        return sum(o.measured is None for o in self.outcomes)

    def _ok(self, min_diameter_mm: float = 0.0) -> list[NoduleOutcome]:
        return [o for o in self.outcomes if o.measured is not None and o.truth_mean_diameter_mm >= min_diameter_mm]

    def mean_diameter_mae_mm(self, min_diameter_mm: float = 6.0) -> float:
        """Mean absolute error of the mean diameter (mm) over nodules of at least ``min_diameter_mm``."""
        ok = self._ok(min_diameter_mm)
        return float(np.mean([abs(o.measured.mean_diameter_mm - o.truth_mean_diameter_mm) for o in ok])) if ok else 0.0

    def mean_diameter_bias_mm(self, min_diameter_mm: float = 6.0) -> float:
        """Mean signed error of the mean diameter (mm, measured - true)."""
        ok = self._ok(min_diameter_mm)
        return float(np.mean([o.measured.mean_diameter_mm - o.truth_mean_diameter_mm for o in ok])) if ok else 0.0

    def type_accuracy(self, min_diameter_mm: float = 0.0) -> float:
        """Share of nodules (failures count as wrong) whose type is right."""
        all_ = [o for o in self.outcomes if o.truth_mean_diameter_mm >= min_diameter_mm]
        right = [o for o in all_ if o.measured is not None and o.measured.nodule_type is o.truth_type]
        return len(right) / len(all_) if all_ else 0.0

    def volume_relative_error(self, min_diameter_mm: float = 6.0) -> float:
        """Median of |measured - true| / true volume."""
        ok = self._ok(min_diameter_mm)
        errors = [abs(o.measured.volume_mm3 - o.truth_volume_mm3) / o.truth_volume_mm3 for o in ok]
        return float(np.median(errors)) if errors else 0.0

    def solid_component_mae_mm(self) -> float:
        """Mean absolute error of the solid component (mm), part-solid nodules typed part-solid."""
        pairs = [
            (o.measured.solid_component_mm, o.truth_solid_component_mm)
            for o in self._ok()
            if o.truth_solid_component_mm is not None and o.measured.solid_component_mm is not None
        ]
        return float(np.mean([abs(a - b) for a, b in pairs])) if pairs else 0.0

    def spiculation_figures(self, min_diameter_mm: float, max_diameter_mm: float = np.inf) -> dict[str, float]:
        """Spiculation against the truth for the measured solid and part-solid nodules (the synthetic ground-glass
        ones carry no spicules) of ``min_diameter_mm`` to under ``max_diameter_mm`` (true mean diameter):
        counts, ROC AUC of the score (ties count half; NaN without both classes), sensitivity and specificity of
        :attr:`NoduleMeasurement.spiculated`, accuracy."""
        group = [
            o
            for o in self._ok(min_diameter_mm)
            if o.truth_mean_diameter_mm < max_diameter_mm and o.truth_type is not NoduleType.GROUND_GLASS
        ]
        positive = [o.measured.spiculation for o in group if o.spiculated]
        negative = [o.measured.spiculation for o in group if not o.spiculated]
        pairs = np.subtract.outer(np.array(positive), np.array(negative)) if positive and negative else None
        auc = float(np.mean((pairs > 0) + 0.5 * (pairs == 0))) if pairs is not None else float("nan")
        hits = sum(o.measured.spiculated for o in group if o.spiculated)
        false_alarms = sum(o.measured.spiculated for o in group if not o.spiculated)
        return {
            "spiculated": len(positive),
            "smooth": len(negative),
            "auc": auc,
            "sensitivity": hits / len(positive) if positive else float("nan"),
            "specificity": 1 - false_alarms / len(negative) if negative else float("nan"),
            "accuracy": (hits + len(negative) - false_alarms) / len(group) if group else float("nan"),
        }

    def spiculation_summary(self) -> str:
        """Spiculation by size band (:meth:`spiculation_figures`), one line per band."""
        lines = [f"spiculation, grid {self.shape_zyx} at {self.spacing_zyx_mm} mm (solid and part-solid nodules):"]
        for low, high in ((4.0, 6.0), (6.0, 8.0), (8.0, 15.0), (15.0, np.inf), (8.0, np.inf), (4.0, np.inf)):
            f = self.spiculation_figures(low, high)
            band = f"{low:g} to < {high:g} mm" if np.isfinite(high) else f">= {low:g} mm"
            lines.append(
                f"  {band}: {f['spiculated']} spiculated, {f['smooth']} smooth, AUC {f['auc']:.3f}, "
                f"sensitivity {f['sensitivity']:.3f}, specificity {f['specificity']:.3f}, accuracy {f['accuracy']:.3f}"
            )
        return "\n".join(lines)

    def summary(self) -> str:
        """A few lines for a log or a report: the headline figures, then the mean diameter by kind of nodule."""
        n6 = len(self._ok(6.0))
        errors = [abs(o.measured.mean_diameter_mm - o.truth_mean_diameter_mm) for o in self._ok(6.0)]
        p90 = float(np.percentile(errors, 90)) if errors else 0.0
        lines = [
            f"grid {self.shape_zyx} at {self.spacing_zyx_mm} mm, {self.n_phantoms} phantoms, {self.n_nodules} nodules "
            f"({n6} measured >= 6 mm, {self.n_failed} failed): mean diameter MAE {self.mean_diameter_mae_mm():.2f} mm "
            f"(>= 6 mm; bias {self.mean_diameter_bias_mm():+.2f}, 90th percentile {p90:.2f}; all sizes "
            f"{self.mean_diameter_mae_mm(0.0):.2f}), type accuracy {self.type_accuracy():.3f} "
            f"(>= 6 mm {self.type_accuracy(6.0):.3f}), volume median |rel. error| {self.volume_relative_error():.3f}, "
            f"solid component MAE {self.solid_component_mae_mm():.2f} mm"
        ]
        for juxtapleural in (False, True):
            for kind in (NoduleType.SOLID, NoduleType.PART_SOLID, NoduleType.GROUND_GLASS):
                group = [o for o in self._ok(6.0) if o.truth_type is kind and o.juxtapleural is juxtapleural]
                if group:
                    e = np.array([o.measured.mean_diameter_mm - o.truth_mean_diameter_mm for o in group])
                    where = "juxtapleural" if juxtapleural else "in the lung"
                    lines.append(
                        f"  {kind.label} {where}: {len(group)}, MAE {np.abs(e).mean():.2f}, bias {e.mean():+.2f} mm"
                    )
        return "\n".join(lines)


def phantom_with_truth(
    rng: np.random.Generator,
    *,
    shape_zyx: tuple[int, int, int],
    spacing_zyx_mm: tuple[float, float, float],
    n_nodules: int,
) -> tuple[Phantom, list[tuple[NoduleShape, TrueMeasurement]]]:
    """:func:`synth.phantom.make_phantom`'s phantom, with each nodule's shape and full true measurement.

    The same draws in the same order as ``make_phantom`` (a test checks that both give the same volume), so
    the nodules also carry their true long and short axes, volume and solid component. Returns the
    Phantom and a list of (NoduleShape, synth.nodules.NoduleMeasurement), one per ``phantom.nodules``.
    """
    from synth.anatomy import make_anatomy
    from synth.nodules import measure, random_shape
    from synth.phantom import KINDS, MAX_NODULE_DIAMETER_MM, MIN_NODULE_DIAMETER_MM, NoduleTruth, Phantom
    from synth.pose import Pose
    from synth.render import render_study, scan_grid

    anatomy = make_anatomy(rng)
    pose = Pose.random(rng)
    low, high = anatomy.z_range
    level = float(rng.uniform(low * 0.5, high * 0.5))
    pose = Pose((*pose.shift_mm[:2], pose.shift_mm[2] - level), pose.yaw_deg, pose.pitch_deg, pose.breathing)
    grid = scan_grid(anatomy, pose, shape_zyx=shape_zyx, spacing_zyx_mm=spacing_zyx_mm)
    shapes: list[NoduleShape] = []
    truths: list[NoduleTruth] = []
    details: list[tuple[NoduleShape, TrueMeasurement]] = []
    for _ in range(n_nodules * 20):
        if len(shapes) == n_nodules:
            break
        diameter = float(np.exp(rng.uniform(np.log(MIN_NODULE_DIAMETER_MM), np.log(MAX_NODULE_DIAMETER_MM))))
        kind = KINDS[int(rng.integers(len(KINDS)))]
        shape = random_shape(
            rng,
            anatomy,
            diameter_mm=diameter,
            kind=kind,
            juxtapleural=bool(rng.random() < 0.2),
            spiculated=kind.value != "ground_glass" and bool(rng.random() < 0.25),
            avoid=[(s.centre, max(s.semi_axes_mm)) for s in shapes],
        )
        if shape is None:
            continue
        voxel = grid.to_voxel(pose.to_world(shape.centre))
        margin = diameter / 2 / np.array(spacing_zyx_mm)
        if all(margin[a] <= voxel[a] <= shape_zyx[a] - 1 - margin[a] for a in range(3)):
            shapes.append(shape)
            truth = measure(shape, 1.0)
            truths.append(NoduleTruth(voxel, truth.mean_diameter_mm, kind))
            details.append((shape, truth))
    hu = render_study(anatomy, [(s, 1.0) for s in shapes], pose, grid, mas=float(rng.uniform(25, 80)), rng=rng)
    return Phantom(hu=hu, spacing_zyx_mm=spacing_zyx_mm, nodules=truths), details


def evaluate_on_phantoms(
    n: int,
    seed: int,
    *,
    shape_zyx: tuple[int, int, int] = WORKING_GRID[0],
    spacing_zyx_mm: tuple[float, float, float] = WORKING_GRID[1],
    nodules_per_phantom: int = 4,
    offset_vox: float = 1.0,
) -> PhantomEvaluation:
    """Measure every true nodule of ``n`` phantoms (seeds ``[seed, i]``) from its true centre moved by a random
    offset of up to ``offset_vox`` voxels along each axis (at least one voxel along one), as a detector's
    centre would be; compare with the truth (see :class:`PhantomEvaluation`)."""
    outcomes = []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        phantom, details = phantom_with_truth(
            rng, shape_zyx=shape_zyx, spacing_zyx_mm=spacing_zyx_mm, n_nodules=nodules_per_phantom
        )
        jitter = np.random.default_rng([seed, i, 1])
        for truth, (shape, true) in zip(phantom.nodules, details, strict=True):
            offset = jitter.integers(-1, 2, size=3) * offset_vox
            if not offset.any():
                offset[int(jitter.integers(3))] = offset_vox * (1 if jitter.random() < 0.5 else -1)
            centre = tuple(float(v) for v in np.array(truth.center_zyx_vox) + offset)
            truth_type = NoduleType(truth.kind.value)
            try:
                measured: NoduleMeasurement | None = measure_nodule(phantom.hu, spacing_zyx_mm, centre)
                error = None
            except ValueError as exc:
                measured, error = None, str(exc)
            outcomes.append(
                NoduleOutcome(
                    truth_mean_diameter_mm=true.mean_diameter_mm,
                    truth_long_axis_mm=true.long_axis_mm,
                    truth_short_axis_mm=true.short_axis_mm,
                    truth_volume_mm3=true.volume_mm3,
                    truth_type=truth_type,
                    truth_solid_component_mm=true.solid_component_mm,
                    juxtapleural=shape.juxtapleural,
                    spiculated=shape.spiculated,
                    measured=measured,
                    error=error,
                )
            )
    return PhantomEvaluation(shape_zyx=shape_zyx, spacing_zyx_mm=spacing_zyx_mm, n_phantoms=n, outcomes=outcomes)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Measurement accuracy on synthetic phantoms, at two grids.")
    parser.add_argument("--n", type=int, default=20, help="phantoms per grid")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--spiculation",
        action="store_true",
        help="spiculation by size band instead, at the longitudinal evaluation's grid (100 x 256 x 256, 2.5 x 1.4 mm)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.spiculation:
        evaluation = evaluate_on_phantoms(args.n, args.seed, shape_zyx=(100, 256, 256), spacing_zyx_mm=(2.5, 1.4, 1.4))
        logger.info("%s", evaluation.spiculation_summary())
        raise SystemExit(0)
    for shape_zyx, spacing in (WORKING_GRID, NATIVE_GRID):
        logger.info(
            "%s", evaluate_on_phantoms(args.n, args.seed, shape_zyx=shape_zyx, spacing_zyx_mm=spacing).summary()
        )
