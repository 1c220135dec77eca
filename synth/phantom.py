"""One synthetic chest CT volume in memory, with its nodules: what training and model tests use.

The same anatomy, nodules and renderer as the archive (:mod:`synth.archive`), without DICOM: a
random patient in a random pose, scanned over ``shape_zyx`` voxels somewhere along the lungs.
Arrays are indexed (z, y, x); z runs from feet to head, y from anterior to posterior and x from the
patient's right to left (DICOM LPS patient axes).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from synth.anatomy import make_anatomy
from synth.nodules import MAX_DIAMETER_MM, NoduleKind, measure, random_shape
from synth.pose import Pose
from synth.render import render_study, scan_grid

logger = logging.getLogger(__name__)

MIN_NODULE_DIAMETER_MM = 4.0
MAX_NODULE_DIAMETER_MM = 25.0
MAX_NODULES = 6
KINDS = (NoduleKind.SOLID, NoduleKind.SOLID, NoduleKind.PART_SOLID, NoduleKind.GROUND_GLASS)

__all__ = ["MAX_NODULES", "NoduleKind", "NoduleTruth", "Phantom", "make_phantom"]


@dataclass(frozen=True)
class NoduleTruth:
    """One true nodule: centre in voxel coordinates (z, y, x), Lung-RADS mean diameter in mm, type, whether
    it carries spicules (only solid and part-solid nodules do) and whether it touches the pleura."""

    center_zyx_vox: tuple[float, float, float]
    diameter_mm: float
    kind: NoduleKind = NoduleKind.SOLID
    spiculated: bool = False
    juxtapleural: bool = False


@dataclass
class Phantom:
    """A synthetic chest CT volume: ``hu`` float32 HU (z, y, x), ``spacing_zyx_mm`` voxel size in mm."""

    hu: np.ndarray
    spacing_zyx_mm: tuple[float, float, float]
    nodules: list[NoduleTruth] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.hu.ndim != 3:
            raise ValueError(f"hu must be 3-D (z, y, x), got shape {self.hu.shape}")
        if len(self.spacing_zyx_mm) != 3 or min(self.spacing_zyx_mm) <= 0:
            raise ValueError(f"spacing_zyx_mm must be three positive values in mm, got {self.spacing_zyx_mm}")


def make_phantom(
    rng: np.random.Generator,
    *,
    shape_zyx: tuple[int, int, int] = (48, 128, 128),
    spacing_zyx_mm: tuple[float, float, float] = (2.5, 2.5, 2.5),
    n_nodules: int | None = None,
    noise_rng: np.random.Generator | None = None,
    min_nodule_mm: float = MIN_NODULE_DIAMETER_MM,
    max_nodule_mm: float = MAX_NODULE_DIAMETER_MM,
) -> Phantom:
    """One random chest CT with ``n_nodules`` nodules in the scanned range (None: 0 to 4).

    Nodules are solid, part-solid or ground glass, ``min_nodule_mm`` (default 4) to ``max_nodule_mm`` (default
    25, at most synth.nodules.MAX_DIAMETER_MM = 30) in diameter,
    log-uniform, some juxtapleural, some spiculated;
    they are placed inside the scanned range. Deterministic for ``rng`` (and ``noise_rng``).
    """
    if len(shape_zyx) != 3 or min(shape_zyx) < 8:
        raise ValueError(f"shape_zyx must be three sizes >= 8, got {shape_zyx}")
    if len(spacing_zyx_mm) != 3 or min(spacing_zyx_mm) <= 0:
        raise ValueError(f"spacing_zyx_mm must be three positive values in mm, got {spacing_zyx_mm}")
    count = int(rng.integers(0, 5)) if n_nodules is None else n_nodules
    if not 0 <= count <= MAX_NODULES:
        raise ValueError(f"n_nodules must be 0 to {MAX_NODULES}, got {n_nodules}")
    if not 0 < min_nodule_mm < max_nodule_mm <= MAX_DIAMETER_MM:
        raise ValueError(
            f"need 0 < min_nodule_mm < max_nodule_mm <= {MAX_DIAMETER_MM} mm, got {min_nodule_mm} and {max_nodule_mm}"
        )
    anatomy = make_anatomy(rng)
    pose = Pose.random(rng)
    low, high = anatomy.z_range
    level = float(rng.uniform(low * 0.5, high * 0.5))  # which part of the lungs this scan covers
    pose = Pose((*pose.shift_mm[:2], pose.shift_mm[2] - level), pose.yaw_deg, pose.pitch_deg, pose.breathing)
    grid = scan_grid(anatomy, pose, shape_zyx=shape_zyx, spacing_zyx_mm=spacing_zyx_mm)

    shapes = []
    truths = []
    for _ in range(count * 20):  # draw until `count` nodules lie inside the scanned volume
        if len(shapes) == count:
            break
        diameter = float(np.exp(rng.uniform(np.log(min_nodule_mm), np.log(max_nodule_mm))))
        kind = KINDS[int(rng.integers(len(KINDS)))]
        shape = random_shape(
            rng,
            anatomy,
            diameter_mm=diameter,
            kind=kind,
            juxtapleural=bool(rng.random() < 0.2),
            spiculated=kind != NoduleKind.GROUND_GLASS and bool(rng.random() < 0.25),
            avoid=[(s.centre, max(s.semi_axes_mm)) for s in shapes],
        )
        if shape is None:
            continue
        voxel = grid.to_voxel(pose.to_world(shape.centre))
        margin = diameter / 2 / np.array(spacing_zyx_mm)
        if all(margin[a] <= voxel[a] <= shape_zyx[a] - 1 - margin[a] for a in range(3)):
            shapes.append(shape)
            truths.append(
                NoduleTruth(voxel, measure(shape, 1.0).mean_diameter_mm, kind, shape.spiculated, shape.juxtapleural)
            )
    hu = render_study(
        anatomy, [(s, 1.0) for s in shapes], pose, grid, mas=float(rng.uniform(25, 80)), rng=noise_rng or rng
    )
    logger.debug("phantom %s at %s mm with %d nodules", shape_zyx, spacing_zyx_mm, len(truths))
    return Phantom(hu=hu, spacing_zyx_mm=spacing_zyx_mm, nodules=truths)
