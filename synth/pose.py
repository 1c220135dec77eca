"""Where the body lies in the scanner for one study, and the voxel grid the scanner writes.

Each study places the patient a little differently: a shift on the table, a small rotation and a
breathing scale. ``world = shift + R (scale * body)``, in mm (DICOM LPS patient coordinates).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Pose:
    """Shift (mm, x y z), rotations (degrees: about z = yaw, about x = pitch) and breathing scale (z and y)."""

    shift_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    yaw_deg: float = 0.0
    pitch_deg: float = 0.0
    breathing: float = 1.0  # scale along z (and half of it along y): > 1 a deeper breath

    @staticmethod
    def random(rng: np.random.Generator) -> Pose:
        """A plausible placement: +-12 mm in plane, +-20 mm along the table, +-3 and +-2 degrees, +-4 % breath."""
        return Pose(
            shift_mm=(float(rng.uniform(-12, 12)), float(rng.uniform(-8, 8)), float(rng.uniform(-20, 20))),
            yaw_deg=float(rng.uniform(-3, 3)),
            pitch_deg=float(rng.uniform(-2, 2)),
            breathing=float(rng.uniform(0.96, 1.04)),
        )

    def body_to_world(self) -> np.ndarray:
        """The 4x4 affine from body-frame (x, y, z, 1) to world (x, y, z, 1), mm."""
        yaw, pitch = np.radians(self.yaw_deg), np.radians(self.pitch_deg)
        rz = np.array([[np.cos(yaw), -np.sin(yaw), 0], [np.sin(yaw), np.cos(yaw), 0], [0, 0, 1]])
        rx = np.array([[1, 0, 0], [0, np.cos(pitch), -np.sin(pitch)], [0, np.sin(pitch), np.cos(pitch)]])
        scale = np.diag([1.0, 1.0 + (self.breathing - 1.0) / 2, self.breathing])
        affine = np.eye(4)
        affine[:3, :3] = rz @ rx @ scale
        affine[:3, 3] = self.shift_mm
        return affine

    def to_world(self, point: tuple[float, float, float]) -> tuple[float, float, float]:
        """World position (mm) of a body-frame point."""
        x, y, z, _ = self.body_to_world() @ np.array([*point, 1.0])
        return float(x), float(y), float(z)


@dataclass(frozen=True)
class Grid:
    """An axial voxel grid: ``shape_zyx`` voxels of ``spacing_zyx_mm``; voxel (0, 0, 0) at ``origin_xyz_mm``."""

    shape_zyx: tuple[int, int, int]
    spacing_zyx_mm: tuple[float, float, float]
    origin_xyz_mm: tuple[float, float, float]

    def voxel_to_world(self) -> np.ndarray:
        """4x4 affine from voxel (k, i, j, 1) to world (x, y, z, 1), mm."""
        dz, dy, dx = self.spacing_zyx_mm
        affine = np.zeros((4, 4))
        affine[0, 2], affine[1, 1], affine[2, 0] = dx, dy, dz
        affine[:3, 3] = self.origin_xyz_mm
        affine[3, 3] = 1.0
        return affine

    def to_voxel(self, world: tuple[float, float, float]) -> tuple[float, float, float]:
        """Voxel coordinates (z, y, x) of a world point."""
        k, i, j, _ = np.linalg.inv(self.voxel_to_world()) @ np.array([*world, 1.0])
        return float(k), float(i), float(j)


class BodyGrid:
    """Body-frame coordinates of the voxels of ``grid`` for one ``pose``, computed per box on demand."""

    def __init__(self, grid: Grid, pose: Pose) -> None:
        self.grid = grid
        self.voxel_to_body = np.linalg.inv(pose.body_to_world()) @ grid.voxel_to_world()
        self.body_to_voxel = np.linalg.inv(self.voxel_to_body)

    def coords(self, box: tuple[slice, slice, slice]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Body-frame x, y, z (mm, float32) of every voxel in ``box``, each of the box's shape."""
        k, i, j = (np.arange(s.start, s.stop, dtype=np.float32) for s in box)
        m = self.voxel_to_body.astype(np.float32)
        out = []
        for row in m[:3]:
            out.append(row[0] * k[:, None, None] + row[1] * i[None, :, None] + row[2] * j[None, None, :] + row[3])
        return out[0], out[1], out[2]

    def box_around(
        self, lo_body: np.ndarray, hi_body: np.ndarray, within: tuple[slice, slice, slice]
    ) -> tuple[slice, slice, slice] | None:
        """The voxel box (inside ``within``) covering the body-frame box [lo, hi] (mm); None if empty."""
        corners = np.array(
            [
                [x, y, z, 1.0]
                for x in (lo_body[0], hi_body[0])
                for y in (lo_body[1], hi_body[1])
                for z in (lo_body[2], hi_body[2])
            ]
        )
        voxels = (self.body_to_voxel @ corners.T)[:3]
        lo = np.floor(voxels.min(axis=1)).astype(int) - 1
        hi = np.ceil(voxels.max(axis=1)).astype(int) + 2
        box = tuple(slice(max(lo[a], w.start), min(hi[a], w.stop)) for a, w in enumerate(within))
        return box if all(s.stop > s.start for s in box) else None  # type: ignore[return-value]
