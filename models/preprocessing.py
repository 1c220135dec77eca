"""Preprocessing bound to a model: resampling to the working grid and HU windowing.

The parameters live in the model's registry entry, so training and inference use the very same values.
Volumes are indexed (z, y, x); spacings are in mm; intensities in Hounsfield units (HU). torch is imported
when a volume is processed, not with this module (the registry reads Preprocessing without torch).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Preprocessing:
    """How a volume is brought to a model's input.

    `spacing_zyx_mm`: the working grid's voxel size in mm; `window_hu`: (low, high) HU mapped to [0, 1];
    `version`: recorded with every finding as provenance.
    """

    spacing_zyx_mm: tuple[float, float, float]
    window_hu: tuple[float, float]
    version: str

    def __post_init__(self) -> None:
        if len(self.spacing_zyx_mm) != 3 or min(self.spacing_zyx_mm) <= 0:
            raise ValueError(f"spacing_zyx_mm must be three positive values in mm, got {self.spacing_zyx_mm}")
        if len(self.window_hu) != 2 or self.window_hu[0] >= self.window_hu[1]:
            raise ValueError(f"window_hu must be (low, high) with low < high, got {self.window_hu}")
        if not self.version:
            raise ValueError(f"version must be a non-empty string, got {self.version!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible form, as stored in the registry."""
        return {
            "spacing_zyx_mm": list(self.spacing_zyx_mm),
            "window_hu": list(self.window_hu),
            "version": self.version,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocessing:
        """Inverse of `to_dict`; KeyError names a missing field."""
        return cls(
            spacing_zyx_mm=tuple(float(v) for v in data["spacing_zyx_mm"]),  # type: ignore[arg-type]
            window_hu=tuple(float(v) for v in data["window_hu"]),  # type: ignore[arg-type]
            version=str(data["version"]),
        )

    def grid_shape(
        self, shape_zyx: tuple[int, ...], spacing_zyx_mm: tuple[float, float, float]
    ) -> tuple[int, int, int]:
        """Shape (z, y, x) of a volume of `shape_zyx` voxels at `spacing_zyx_mm` once on the working grid."""
        return tuple(  # type: ignore[return-value]
            max(1, round(n * s / w)) for n, s, w in zip(shape_zyx, spacing_zyx_mm, self.spacing_zyx_mm, strict=True)
        )

    def to_model_grid(
        self, hu: np.ndarray | torch.Tensor, spacing_zyx_mm: tuple[float, float, float]
    ) -> tuple[torch.Tensor, tuple[float, float, float]]:
        """Resample `hu` ((z, y, x), HU, voxel size `spacing_zyx_mm`) to the working grid and window it.

        Returns a float32 tensor (z, y, x) with values in [0, 1], and `scale_zyx` = (grid size / input size)
        per axis. A working-grid coordinate u maps back to the input voxel coordinate (u + 0.5) / scale - 0.5
        (see `grid_to_input_vox`); trilinear interpolation, align_corners=False.
        """
        if hu.ndim != 3:
            raise ValueError(f"hu must be 3-D (z, y, x), got shape {tuple(hu.shape)}")
        if len(spacing_zyx_mm) != 3 or min(spacing_zyx_mm) <= 0:
            raise ValueError(f"spacing_zyx_mm must be three positive values in mm, got {spacing_zyx_mm}")
        import torch
        import torch.nn.functional as F  # noqa: N812

        volume = torch.as_tensor(hu, dtype=torch.float32)
        in_shape = tuple(volume.shape)
        out_shape = self.grid_shape(in_shape, spacing_zyx_mm)
        if out_shape != in_shape:
            volume = F.interpolate(volume[None, None], size=out_shape, mode="trilinear", align_corners=False)[0, 0]
        low, high = self.window_hu
        volume = ((volume - low) / (high - low)).clamp_(0.0, 1.0)
        scale = tuple(o / i for o, i in zip(out_shape, in_shape, strict=True))
        return volume.contiguous(), scale  # type: ignore[return-value]


def grid_to_input_vox(
    coord_zyx: tuple[float, float, float], scale_zyx: tuple[float, float, float]
) -> tuple[float, float, float]:
    """Map a working-grid voxel coordinate (z, y, x) to the input volume's voxel coordinate."""
    return tuple((c + 0.5) / s - 0.5 for c, s in zip(coord_zyx, scale_zyx, strict=True))  # type: ignore[return-value]


def input_to_grid_vox(
    coord_zyx: tuple[float, float, float], scale_zyx: tuple[float, float, float]
) -> tuple[float, float, float]:
    """Map an input voxel coordinate (z, y, x) to the working grid; inverse of `grid_to_input_vox`."""
    return tuple((c + 0.5) * s - 0.5 for c, s in zip(coord_zyx, scale_zyx, strict=True))  # type: ignore[return-value]
