"""Preprocessing bound to a model: resampling to the working grid, crop or pad, and HU windowing.

The parameters live in the model's registry entry, so training and inference use the very same values.
A :class:`GridMap` maps coordinates between the model's input and the volume it came from, both ways.
Volumes are indexed (z, y, x); spacings are in mm; intensities in Hounsfield units (HU). torch is imported
when a volume is processed, not with this module (the registry reads Preprocessing without torch).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch


_OPTIONAL_FIELDS = ("crop_body", "body_threshold_hu", "margin_mm", "pad_multiple")  # absent from older entries


@dataclass(frozen=True)
class GridMap:
    """Where the model's input sits in the volume it came from.

    ``scale_zyx`` = working-grid size / input size per axis; ``offset_zyx`` = the index, in the whole resampled
    grid, of the model input's voxel 0 (the crop start; negative where padding was added before it).
    Resampling is trilinear with align_corners=False, so grid coordinate g is input coordinate (g + 0.5) / scale - 0.5.
    """

    scale_zyx: tuple[float, float, float]
    offset_zyx: tuple[int, int, int] = (0, 0, 0)

    def to_input(self, coord_zyx: tuple[float, float, float]) -> tuple[float, float, float]:
        """Input voxel coordinate (z, y, x) of a model-input voxel coordinate."""
        return tuple(  # type: ignore[return-value]
            (c + o + 0.5) / s - 0.5 for c, o, s in zip(coord_zyx, self.offset_zyx, self.scale_zyx, strict=True)
        )

    def to_grid(self, coord_zyx: tuple[float, float, float]) -> tuple[float, float, float]:
        """Model-input voxel coordinate (z, y, x) of an input voxel coordinate; inverse of :meth:`to_input`."""
        return tuple(  # type: ignore[return-value]
            (c + 0.5) * s - 0.5 - o for c, o, s in zip(coord_zyx, self.offset_zyx, self.scale_zyx, strict=True)
        )


@dataclass(frozen=True)
class Preprocessing:
    """How a volume is brought to a model's input.

    `spacing_zyx_mm`: the working grid's voxel size in mm; `window_hu`: (low, high) HU mapped to [0, 1];
    `version`: recorded with every finding as provenance. `crop_body`: crop y and x to the body (voxels above
    `body_threshold_hu`, plus `margin_mm`), which skips the air around the patient; `pad_multiple`: pad y and x
    (with the window's low value) to a multiple of this many voxels, as strided networks like.
    """

    spacing_zyx_mm: tuple[float, float, float]
    window_hu: tuple[float, float]
    version: str
    crop_body: bool = False
    body_threshold_hu: float = -500.0
    margin_mm: float = 10.0
    pad_multiple: int = 1

    def __post_init__(self) -> None:
        if len(self.spacing_zyx_mm) != 3 or min(self.spacing_zyx_mm) <= 0:
            raise ValueError(f"spacing_zyx_mm must be three positive values in mm, got {self.spacing_zyx_mm}")
        if len(self.window_hu) != 2 or self.window_hu[0] >= self.window_hu[1]:
            raise ValueError(f"window_hu must be (low, high) with low < high, got {self.window_hu}")
        if not self.version:
            raise ValueError(f"version must be a non-empty string, got {self.version!r}")
        if self.pad_multiple < 1:
            raise ValueError(f"pad_multiple must be >= 1, got {self.pad_multiple}")
        if self.margin_mm < 0:
            raise ValueError(f"margin_mm must be >= 0 mm, got {self.margin_mm}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible form, as stored in the registry (the optional steps only where they are used)."""
        data: dict[str, Any] = {
            "spacing_zyx_mm": list(self.spacing_zyx_mm),
            "window_hu": list(self.window_hu),
            "version": self.version,
        }
        if self.crop_body:
            data.update(crop_body=True, body_threshold_hu=self.body_threshold_hu, margin_mm=self.margin_mm)
        if self.pad_multiple != 1:
            data["pad_multiple"] = self.pad_multiple
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocessing:
        """Inverse of `to_dict`; KeyError names a missing field."""
        optional = {name: data[name] for name in _OPTIONAL_FIELDS if name in data}
        return cls(
            spacing_zyx_mm=tuple(float(v) for v in data["spacing_zyx_mm"]),  # type: ignore[arg-type]
            window_hu=tuple(float(v) for v in data["window_hu"]),  # type: ignore[arg-type]
            version=str(data["version"]),
            **optional,
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
    ) -> tuple[torch.Tensor, GridMap]:
        """Bring `hu` ((z, y, x), HU, voxel size `spacing_zyx_mm`) to the model's input.

        Resample to the working grid (trilinear, align_corners=False), crop to the body and pad as configured,
        and window to [0, 1]. Returns a float32 tensor (z, y, x) and the :class:`GridMap` back to `hu`'s voxels.
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
        offset = [0, 0, 0]
        if self.crop_body:
            volume, (y0, x0) = self._crop_to_body(volume)
            offset[1:] = [y0, x0]
        low, high = self.window_hu
        volume = ((volume - low) / (high - low)).clamp_(0.0, 1.0)
        if self.pad_multiple > 1:
            ny, nx = volume.shape[1:]
            pad_y, pad_x = (-ny) % self.pad_multiple, (-nx) % self.pad_multiple
            if pad_y or pad_x:
                before_y, before_x = pad_y // 2, pad_x // 2
                volume = F.pad(volume, (before_x, pad_x - before_x, before_y, pad_y - before_y), value=0.0)
                offset[1] -= before_y
                offset[2] -= before_x
        scale = tuple(o / i for o, i in zip(out_shape, in_shape, strict=True))
        return volume.contiguous(), GridMap(scale, tuple(offset))  # type: ignore[arg-type]

    def _crop_to_body(self, volume: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Crop y and x to the voxels above `body_threshold_hu` (any slice), plus the margin; (y0, x0) kept."""
        body = (volume > self.body_threshold_hu).any(dim=0)
        if not bool(body.any()):
            return volume, (0, 0)
        rows = body.any(dim=1).nonzero().flatten()
        cols = body.any(dim=0).nonzero().flatten()
        my = round(self.margin_mm / self.spacing_zyx_mm[1])
        mx = round(self.margin_mm / self.spacing_zyx_mm[2])
        y0, y1 = max(int(rows[0]) - my, 0), min(int(rows[-1]) + 1 + my, volume.shape[1])
        x0, x1 = max(int(cols[0]) - mx, 0), min(int(cols[-1]) + 1 + mx, volume.shape[2])
        return volume[:, y0:y1, x0:x1], (y0, x0)


def grid_to_input_vox(
    coord_zyx: tuple[float, float, float], scale_zyx: tuple[float, float, float]
) -> tuple[float, float, float]:
    """Map a working-grid voxel coordinate (z, y, x) to the input volume's voxel coordinate (no crop or pad)."""
    return GridMap(scale_zyx).to_input(coord_zyx)


def input_to_grid_vox(
    coord_zyx: tuple[float, float, float], scale_zyx: tuple[float, float, float]
) -> tuple[float, float, float]:
    """Map an input voxel coordinate (z, y, x) to the working grid; inverse of `grid_to_input_vox`."""
    return GridMap(scale_zyx).to_grid(coord_zyx)
