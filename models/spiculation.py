"""The learned spiculation model: a small 3-D CNN on a scale-normalised patch around each measured nodule.

Spiculation (thin strands of tissue radiating from a nodule) makes a Lung-RADS category 3 or 4 nodule 4X. The
hand-made score of :mod:`models.measurement` (the longest appendage of the segmentation) misses faint spicules on
thick slices and takes vessels for spicules; this model reads the nodule's surroundings instead. From
:data:`HANDMADE_FROM_MM` on, the hand-made score of the second-longest spicule counts too.

Patches are SCALE-NORMALISED: a cube centred on the measured nodule centre (the INPUT volume's voxel coordinates
z, y, x) whose side is ``max(min_side_mm, side_radii x radius)``, radius = half the measured mean diameter (mm),
so that the nodule and its spicules (which reach about 2.1 radii from the centre) fill the same share of the
patch whatever the nodule's size. The cube is sampled on ``patch_size * supersample`` points per axis by
trilinear interpolation in world mm (the input's voxel size, so any slice thickness works), air (-1000 HU)
outside the volume, then averaged over ``supersample``^3 blocks (a box filter against aliasing of thin spicules
in large patches) down to ``patch_size``^3 voxels, and windowed to [0, 1] like the candidate classifier.

The patch geometry is part of the model's registry entry (its architecture's kwargs), so inference uses what
training used. Output: the probability (0..1) that the nodule is spiculated.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from models.classifier import AIR_HU, window
from models.measurement import spicule_score
from models.registry import RegisteredModel

if TYPE_CHECKING:
    from models.measurement import NoduleMeasurement
    from models.preprocessing import Preprocessing
    from models.registry import ModelEntry

logger = logging.getLogger(__name__)

HANDMADE_FROM_MM = 15.0
"""From this measured mean diameter (mm) on, a nodule's spiculation is the larger of the model's probability and
the hand-made score of its second-longest spicule (:func:`several_spicules_score`, :func:`large_nodule_spiculation`).
On large nodules the patch voxel grows with the nodule (1.3 mm at 28 mm) and the model misses thin spicules, which
the measurement traces on the input grid. On 160 validation and test phantoms with nodules to 30 mm (seeds
[9300000, i] and [9600000, i], i < 80; 2.5 x 1.4 x 1.4 mm), spiculated solid and part-solid nodules of 15 to 30 mm:
nodule-spiculation@0.2.0 alone found 43 of 57 and called 4 of 185 smooth ones spiculated; with the second spicule's
score 53 of 57 and 6 of 185 (``python -m models.evaluate_spiculation``). The threshold diameter matters little:
from 8 to 18 mm the errors over all sizes are the same."""

HANDMADE_SPICULES = 2
"""How many spicules the hand-made score of a large nodule asks for: it is that of the HANDMADE_SPICULES-th longest.
A spiculated nodule sends strands in several directions; one long appendage is most often a vessel that thins out
of the tissue mask within reach. With the longest spicule instead (the measurement's own
:attr:`models.measurement.NoduleMeasurement.spiculation`), the workers' reading found 54 of 57 of the nodules above
but called 14 of 185 smooth ones spiculated: 17 errors against 10. Over 6 to 30 mm the same holds on each half:
validation 19 errors against 14, test 8 against 6."""

SPICULATION_CATEGORIES: tuple[str, ...] = ("smooth", "spiculated")
"""The registry's categories: the model's probability is that of the second."""


@dataclass(frozen=True)
class PatchGeometry:
    """How a nodule's patch is cut: `patch_size` voxels per axis over a cube of side
    ``max(min_side_mm, side_radii * diameter_mm / 2)`` mm, sampled `supersample` times finer and box-averaged."""

    patch_size: int = 32
    side_radii: float = 5.0
    min_side_mm: float = 24.0
    supersample: int = 2

    def __post_init__(self) -> None:
        if self.patch_size < 8:
            raise ValueError(f"patch_size must be >= 8 voxels, got {self.patch_size}")
        if not self.side_radii > 0:
            raise ValueError(f"side_radii must be positive, got {self.side_radii}")
        if not self.min_side_mm > 0:
            raise ValueError(f"min_side_mm must be positive (mm), got {self.min_side_mm}")
        if self.supersample < 1:
            raise ValueError(f"supersample must be >= 1, got {self.supersample}")

    def side_mm(self, diameter_mm: float) -> float:
        """Side (mm) of the cube around a nodule of mean diameter `diameter_mm` (mm)."""
        return max(self.min_side_mm, self.side_radii * float(diameter_mm) / 2.0)


class SpiculationNet(nn.Module):
    """3-D CNN: two full-resolution 3x3x3 convolutions, then three stages that halve the grid and double the width,
    global average + max pooling and one logit.

    Input (N, 1, P, P, P) windowed patches in [0, 1]; output the spiculation logit (N,). The patch geometry
    (`patch_size`, `side_radii`, `min_side_mm`, `supersample`) is kept on the network as :attr:`geometry` (the
    registry entry's kwargs) and not used by :meth:`forward`: any P works thanks to the global pooling.
    """

    def __init__(
        self,
        *,
        patch_size: int = 32,
        side_radii: float = 5.0,
        min_side_mm: float = 24.0,
        supersample: int = 2,
        width: int = 6,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        if width < 1:
            raise ValueError(f"width must be >= 1, got {width}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.geometry = PatchGeometry(patch_size, side_radii, min_side_mm, supersample)
        w = width

        def conv(c_in: int, c_out: int) -> list[nn.Module]:
            return [nn.Conv3d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm3d(c_out), nn.ReLU(inplace=True)]

        self.features = nn.Sequential(
            *conv(1, w),
            *conv(w, w),
            nn.MaxPool3d(2),
            *conv(w, 2 * w),
            *conv(2 * w, 2 * w),
            nn.MaxPool3d(2),
            *conv(2 * w, 4 * w),
            *conv(4 * w, 4 * w),
            nn.MaxPool3d(2),
            *conv(4 * w, 8 * w),
        )
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(2 * 8 * w, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.features(x)
        pooled = torch.cat([features.mean(dim=(2, 3, 4)), features.amax(dim=(2, 3, 4))], dim=1)
        return self.head(self.dropout(pooled))[:, 0]


BUILDERS: dict[str, Callable[..., nn.Module]] = {"spiculation_cnn_3d": SpiculationNet}
"""Builders by registry name; a builder takes the architecture's kwargs (the patch geometry's units are those of
:class:`PatchGeometry`)."""


def build_from_architecture(architecture: dict[str, Any]) -> nn.Module:
    """Build a spiculation model from a registry `architecture` entry: {"builder": name, "kwargs": {...}}."""
    name = architecture.get("builder")
    if name not in BUILDERS:
        raise ValueError(f"unknown spiculation builder {name!r}; known: {sorted(BUILDERS)}")
    return BUILDERS[name](**architecture.get("kwargs", {}))


def extract_nodule_patches(
    hu: np.ndarray,
    spacing_zyx_mm: tuple[float, float, float],
    nodules: Sequence[tuple[Sequence[float], float]],
    geometry: PatchGeometry,
    *,
    size: int | None = None,
    pad_hu: float = AIR_HU,
) -> torch.Tensor:
    """Scale-normalised cubes (N, S, S, S) float32 HU around each (centre_zyx_vox, diameter_mm) of `nodules`.

    `hu` is the input volume (z, y, x) in HU with voxel size `spacing_zyx_mm` (mm); each centre is in its voxel
    coordinates (z, y, x, fractional allowed), each diameter the nodule's mean diameter in mm. The patch voxel is
    ``geometry.side_mm(diameter) / geometry.patch_size`` mm along every axis; `size` S (default the geometry's
    patch_size) voxels of that size are cut (a larger S gives context around the same scale, for augmentation).
    The patch centre ((S - 1) / 2 along each axis) falls on the given centre; `pad_hu` (air) outside the volume.
    Only the box of input voxels each patch needs is read, so memory does not grow with the volume.
    """
    if hu.ndim != 3:
        raise ValueError(f"hu must be 3-D (z, y, x), got shape {tuple(hu.shape)}")
    spacing = np.asarray(spacing_zyx_mm, dtype=np.float64)
    if spacing.shape != (3,) or not np.all(np.isfinite(spacing)) or spacing.min() <= 0:
        raise ValueError(f"spacing_zyx_mm must be three positive values in mm, got {spacing_zyx_mm}")
    size = geometry.patch_size if size is None else int(size)
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    s = geometry.supersample
    fine = size * s
    offsets = torch.arange(fine, dtype=torch.float64) - (fine - 1) / 2  # fine voxels around the centre
    shape = np.array(hu.shape)
    patches = []
    for centre_zyx_vox, diameter_mm in nodules:
        centre = np.asarray(centre_zyx_vox, dtype=np.float64)
        if centre.shape != (3,) or not np.all(np.isfinite(centre)):
            raise ValueError(f"centre must be three finite voxel coordinates (z, y, x), got {centre_zyx_vox}")
        if not (np.isfinite(diameter_mm) and diameter_mm > 0):
            raise ValueError(f"diameter_mm must be a positive number of mm, got {diameter_mm}")
        step_mm = geometry.side_mm(diameter_mm) / geometry.patch_size / s
        step_vox = step_mm / spacing  # (3,) input voxels per fine patch voxel
        reach = step_vox * (fine - 1) / 2
        low = np.clip(np.floor(centre - reach).astype(int) - 1, 0, shape - 1)
        high = np.clip(np.ceil(centre + reach).astype(int) + 2, low + 1, shape)
        if np.any(centre + reach < -1) or np.any(centre - reach > shape):
            patches.append(torch.full((size, size, size), pad_hu, dtype=torch.float32))
            continue
        box = tuple(slice(int(a), int(b)) for a, b in zip(low, high, strict=True))
        volume = torch.as_tensor(np.ascontiguousarray(hu[box]), dtype=torch.float32) - pad_hu  # zero padding = air
        sub = torch.tensor(volume.shape, dtype=torch.float64)
        coords = torch.as_tensor(centre - low)[:, None] + torch.as_tensor(step_vox)[:, None] * offsets[None, :]
        normalised = ((2 * coords + 1) / sub[:, None] - 1).float()  # align_corners=False convention
        gz = normalised[0, :, None, None].expand(fine, fine, fine)
        gy = normalised[1, None, :, None].expand(fine, fine, fine)
        gx = normalised[2, None, None, :].expand(fine, fine, fine)
        grid = torch.stack([gx, gy, gz], dim=-1)[None]  # grid_sample wants (x, y, z)
        sampled = F.grid_sample(volume[None, None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        if s > 1:
            sampled = F.avg_pool3d(sampled, s)
        patches.append(sampled[0, 0] + pad_hu)
    if not patches:
        return torch.empty((0, size, size, size), dtype=torch.float32)
    return torch.stack(patches)


def several_spicules_score(spicule_lengths_mm: Sequence[float]) -> float:
    """The hand-made spiculation score (0..1, spiculated from 0.5) of a nodule whose spicules are
    `spicule_lengths_mm` (mm beyond the rim, longest first, as measured): that of the :data:`HANDMADE_SPICULES`-th
    longest (:func:`models.measurement.spicule_score`); 0 with fewer spicules."""
    lengths = sorted((float(v) for v in spicule_lengths_mm), reverse=True)
    if len(lengths) < HANDMADE_SPICULES:
        return 0.0
    return spicule_score(lengths[HANDMADE_SPICULES - 1])


def combined_spiculation(probability: float, handmade: float, diameter_mm: float) -> float:
    """The spiculation (0..1, spiculated from 0.5) the workers store for a nodule of measured mean `diameter_mm`
    (mm) whose model `probability` (0..1) and hand-made score (0..1, :func:`several_spicules_score`) are given:
    the larger of the two from :data:`HANDMADE_FROM_MM` on, else the probability."""
    if diameter_mm >= HANDMADE_FROM_MM:
        return max(probability, handmade)
    return probability


def large_nodule_spiculation(probability: float, measurement: NoduleMeasurement) -> float:
    """:func:`combined_spiculation` of a measured nodule whose model `probability` (0..1) is given, with the
    hand-made score of its spicules (:func:`several_spicules_score`)."""
    return combined_spiculation(
        probability, several_spicules_score(measurement.spicule_lengths_mm), measurement.mean_diameter_mm
    )


class SpiculationModel(RegisteredModel):
    """A loaded, registered spiculation model; `name`, `version`, `sha256`, `preprocessing_version` are provenance.

    :meth:`predict` gives each nodule's probability of spiculation (0..1); a nodule counts as spiculated from
    :attr:`threshold` (the registry's score threshold) on.
    """

    def __init__(self, model: nn.Module, entry: ModelEntry, *, device: str = "cpu") -> None:
        if tuple(entry.categories) != SPICULATION_CATEGORIES:
            raise ValueError(f"spiculation categories must be {SPICULATION_CATEGORIES}, got {entry.categories}")
        geometry = getattr(model, "geometry", None)
        if not isinstance(geometry, PatchGeometry):
            raise TypeError(f"model must carry a PatchGeometry as .geometry, got {type(geometry).__name__}")
        self.model = model.to(device).eval()
        self.entry = entry
        self.device = device
        self.geometry: PatchGeometry = geometry
        self.preprocessing: Preprocessing = entry.preprocessing
        self.threshold: float = entry.score_threshold

    def patches(
        self,
        hu: np.ndarray,
        spacing_zyx_mm: tuple[float, float, float],
        nodules: Sequence[tuple[Sequence[float], float]],
    ) -> torch.Tensor:
        """The windowed model inputs (N, 1, P, P, P) for `nodules` ((centre_zyx_vox, diameter_mm) pairs)."""
        patches = extract_nodule_patches(hu, spacing_zyx_mm, nodules, self.geometry)
        return window(patches, self.preprocessing.window_hu)[:, None]

    def predict(
        self,
        hu: np.ndarray,
        spacing_zyx_mm: tuple[float, float, float],
        nodules: Sequence[tuple[Sequence[float], float]],
        *,
        batch_size: int = 32,
    ) -> list[float]:
        """Probability of spiculation (0..1) of each nodule, in the given order.

        `hu`: HU volume (z, y, x) with voxel size `spacing_zyx_mm` (mm); `nodules`: (centre_zyx_vox, diameter_mm)
        pairs, the measured centre in input voxel coordinates (z, y, x) and the measured mean diameter in mm.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        nodules = list(nodules)
        device_type = torch.device(self.device).type
        autocast = torch.autocast("cuda") if device_type == "cuda" else contextlib.nullcontext()
        probabilities: list[torch.Tensor] = []
        with torch.inference_mode(), autocast:
            for start in range(0, len(nodules), batch_size):
                inputs = self.patches(hu, spacing_zyx_mm, nodules[start : start + batch_size]).to(self.device)
                probabilities.append(torch.sigmoid(self.model(inputs).float()).cpu())
        if not probabilities:
            return []
        result = [float(p) for p in torch.cat(probabilities).numpy()]
        logger.debug(
            "%s@%s: %d nodules, %d spiculated at %.3f",
            self.name,
            self.version,
            len(result),
            sum(p >= self.threshold for p in result),
            self.threshold,
        )
        return result
