"""The candidate classifier: a small 3-D CNN on the patch around each detector candidate.

Two heads share one backbone: a nodule-versus-not logit (false-positive reduction) and three type logits
(solid, part-solid, ground glass; only meaningful for nodules). A study's abnormality score is the highest
nodule probability among its candidates (:func:`study_score`).

Patches: a cube of ``patch_size`` voxels at the classifier's own voxel size (its registry entry's
``Preprocessing.spacing_zyx_mm``), centred on a candidate given in the INPUT volume's voxel coordinates
(z, y, x), sampled trilinearly straight from the input volume (no whole-volume resampling), air (-1000 HU)
outside the volume, then windowed to [0, 1] with the entry's ``window_hu``.
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

from models.registry import RegisteredModel
from screening.types import NoduleType

if TYPE_CHECKING:
    from models.preprocessing import Preprocessing
    from models.registry import ModelEntry

logger = logging.getLogger(__name__)

AIR_HU = -1000.0
NOT_NODULE = "not_nodule"
TYPE_CATEGORIES: tuple[NoduleType, ...] = (NoduleType.SOLID, NoduleType.PART_SOLID, NoduleType.GROUND_GLASS)
# The registry's categories: "not a nodule", or a nodule of one of the types (the type head's order).
CLASSIFIER_CATEGORIES: tuple[str, ...] = (NOT_NODULE, *(t.value for t in TYPE_CATEGORIES))


def _block(c_in: int, c_out: int) -> nn.Sequential:
    """Two 3x3x3 convolutions with BatchNorm and ReLU."""
    return nn.Sequential(
        nn.Conv3d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm3d(c_out),
        nn.ReLU(inplace=True),
        nn.Conv3d(c_out, c_out, 3, padding=1, bias=False),
        nn.BatchNorm3d(c_out),
        nn.ReLU(inplace=True),
    )


class CandidateNet(nn.Module):
    """3-D CNN: a stride-2 stem, three conv blocks (two halvings between them), global average + max pooling, two heads.

    Input (N, 1, P, P, P) windowed patches in [0, 1]; output ``(nodule_logit (N,), type_logits (N, num_types))``.
    ``patch_size`` P is the input the model was trained on (any size works thanks to the global pooling).
    """

    def __init__(self, *, patch_size: int = 32, width: int = 8, num_types: int = 3, dropout: float = 0.2) -> None:
        super().__init__()
        if patch_size < 8:
            raise ValueError(f"patch_size must be >= 8 voxels, got {patch_size}")
        if width < 1:
            raise ValueError(f"width must be >= 1, got {width}")
        if num_types < 1:
            raise ValueError(f"num_types must be >= 1, got {num_types}")
        self.patch_size = patch_size
        self.num_types = num_types
        self.features = nn.Sequential(
            nn.Conv3d(1, width, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm3d(width),
            nn.ReLU(inplace=True),
            _block(width, 2 * width),
            nn.MaxPool3d(2),
            _block(2 * width, 4 * width),
            nn.MaxPool3d(2),
            _block(4 * width, 8 * width),
        )
        pooled = 2 * 8 * width  # average and max pooling side by side
        self.dropout = nn.Dropout(dropout)
        self.nodule_head = nn.Linear(pooled, 1)
        self.type_head = nn.Linear(pooled, num_types)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.features(x)
        pooled = torch.cat([features.mean(dim=(2, 3, 4)), features.amax(dim=(2, 3, 4))], dim=1)
        pooled = self.dropout(pooled)
        return self.nodule_head(pooled)[:, 0], self.type_head(pooled)


def build_candidate_classifier(
    *, patch_size: int = 32, width: int = 8, num_types: int = 3, dropout: float = 0.2
) -> CandidateNet:
    """Build the candidate CNN (random init). `patch_size` in voxels of the classifier's grid."""
    return CandidateNet(patch_size=patch_size, width=width, num_types=num_types, dropout=dropout)


BUILDERS: dict[str, Callable[..., nn.Module]] = {"candidate_cnn_3d": build_candidate_classifier}


def build_from_architecture(architecture: dict[str, Any]) -> nn.Module:
    """Build a classifier from a registry `architecture` entry: {"builder": name, "kwargs": {...}}."""
    name = architecture.get("builder")
    if name not in BUILDERS:
        raise ValueError(f"unknown classifier builder {name!r}; known: {sorted(BUILDERS)}")
    return BUILDERS[name](**architecture.get("kwargs", {}))


def extract_patches(
    hu: np.ndarray | torch.Tensor,
    spacing_zyx_mm: tuple[float, float, float],
    centers_zyx_vox: Sequence[Sequence[float]] | np.ndarray,
    *,
    patch_size: int,
    patch_spacing_zyx_mm: tuple[float, float, float],
    pad_hu: float = AIR_HU,
) -> torch.Tensor:
    """Cubes of `patch_size` voxels (at `patch_spacing_zyx_mm` mm) around each centre, in HU; (N, P, P, P) float32.

    `hu` is the input volume (z, y, x) in HU with voxel size `spacing_zyx_mm` (mm); `centers_zyx_vox` are (N, 3)
    centres in its voxel coordinates (z, y, x), fractional allowed. The patch centre ((P - 1) / 2 along each
    axis) falls on the given centre; values come from trilinear interpolation of the input, `pad_hu` (air)
    outside it.
    """
    if hu.ndim != 3:
        raise ValueError(f"hu must be 3-D (z, y, x), got shape {tuple(hu.shape)}")
    if len(spacing_zyx_mm) != 3 or min(spacing_zyx_mm) <= 0:
        raise ValueError(f"spacing_zyx_mm must be three positive values in mm, got {spacing_zyx_mm}")
    if len(patch_spacing_zyx_mm) != 3 or min(patch_spacing_zyx_mm) <= 0:
        raise ValueError(f"patch_spacing_zyx_mm must be three positive values in mm, got {patch_spacing_zyx_mm}")
    if patch_size < 1:
        raise ValueError(f"patch_size must be >= 1, got {patch_size}")
    centers = torch.as_tensor(np.asarray(centers_zyx_vox, dtype=np.float64)).reshape(-1, 3)
    n = centers.shape[0]
    if n == 0:
        return torch.empty((0, patch_size, patch_size, patch_size), dtype=torch.float32)
    volume = torch.as_tensor(hu, dtype=torch.float32) - pad_hu  # zero padding below is then air
    size = torch.tensor(volume.shape, dtype=torch.float64)
    step = torch.tensor(patch_spacing_zyx_mm, dtype=torch.float64) / torch.tensor(spacing_zyx_mm, dtype=torch.float64)
    offsets = torch.arange(patch_size, dtype=torch.float64) - (patch_size - 1) / 2  # (P,)
    coords = centers[:, :, None] + step[None, :, None] * offsets[None, None, :]  # (N, 3, P) input voxels
    normalised = ((2 * coords + 1) / size[None, :, None] - 1).float()  # align_corners=False convention
    p = patch_size
    gz = normalised[:, 0, :, None, None].expand(n, p, p, p)
    gy = normalised[:, 1, None, :, None].expand(n, p, p, p)
    gx = normalised[:, 2, None, None, :].expand(n, p, p, p)
    grid = torch.stack([gx, gy, gz], dim=-1).reshape(1, n * p, p, p, 3)  # grid_sample wants (x, y, z)
    patches = F.grid_sample(volume[None, None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return patches.reshape(n, p, p, p) + pad_hu


def window(patches_hu: torch.Tensor, window_hu: tuple[float, float]) -> torch.Tensor:
    """Map HU to [0, 1]: `window_hu` (low, high) to 0 and 1, clipped outside."""
    low, high = window_hu
    return ((patches_hu - low) / (high - low)).clamp(0.0, 1.0)


@dataclass(frozen=True)
class Classification:
    """The classifier's reading of one candidate.

    `center_zyx_vox`: the candidate centre (input voxels, z, y, x); `nodule_probability` in 0..1;
    `is_nodule`: probability >= the registry's threshold; `nodule_type`: the most likely type (meaningful
    only for nodules) and `type_probabilities` (sum to 1).
    """

    center_zyx_vox: tuple[float, float, float]
    nodule_probability: float
    is_nodule: bool
    nodule_type: NoduleType
    type_probabilities: dict[NoduleType, float]


def study_score(classifications: Sequence[Classification]) -> float:
    """Study-level abnormality score in 0..1: the highest nodule probability of the study's candidates (0 if none).

    The maximum, not a noisy-OR 1 - prod(1 - p): the number of candidates depends on the detector's threshold
    and on how many vessels a scan shows, and a noisy-OR grows with that count (ten candidates at 0.1 give 0.65),
    while the maximum reads as "the most suspicious finding" whatever the count.
    """
    return max((c.nodule_probability for c in classifications), default=0.0)


class CandidateClassifier(RegisteredModel):
    """A loaded, registered classifier; `name`, `version`, `sha256`, `preprocessing_version` are provenance."""

    def __init__(self, model: nn.Module, entry: ModelEntry, *, device: str = "cpu") -> None:
        categories = tuple(entry.categories)
        if categories[:1] != (NOT_NODULE,) or len(categories) < 2:
            raise ValueError(f"classifier categories must be ({NOT_NODULE!r}, types...), got {entry.categories}")
        self.model = model.to(device).eval()
        self.entry = entry
        self.device = device
        self.preprocessing: Preprocessing = entry.preprocessing
        self.threshold: float = entry.score_threshold
        self.types: tuple[NoduleType, ...] = tuple(NoduleType(c) for c in categories[1:])
        self.patch_size: int = int(entry.architecture.get("kwargs", {}).get("patch_size", 32))

    def patches(
        self, hu: np.ndarray, spacing_zyx_mm: tuple[float, float, float], centers_zyx_vox: Sequence[Sequence[float]]
    ) -> torch.Tensor:
        """The windowed model inputs (N, 1, P, P, P) for `centers_zyx_vox` (input voxels, z, y, x)."""
        patches = extract_patches(
            hu,
            spacing_zyx_mm,
            centers_zyx_vox,
            patch_size=self.patch_size,
            patch_spacing_zyx_mm=self.preprocessing.spacing_zyx_mm,
        )
        return window(patches, self.preprocessing.window_hu)[:, None]

    def classify(
        self,
        hu: np.ndarray,
        spacing_zyx_mm: tuple[float, float, float],
        centers_zyx_vox: Sequence[Sequence[float]],
        *,
        batch_size: int = 64,
    ) -> list[Classification]:
        """Classify candidates at `centers_zyx_vox` ((N, 3) input voxels, z, y, x) of `hu` (HU, voxel size in mm).

        Returns one :class:`Classification` per centre, in the given order.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        centers = np.asarray(centers_zyx_vox, dtype=np.float64).reshape(-1, 3)
        device_type = torch.device(self.device).type
        autocast = torch.autocast("cuda") if device_type == "cuda" else contextlib.nullcontext()
        probabilities, type_probabilities = [], []
        with torch.inference_mode(), autocast:
            for start in range(0, len(centers), batch_size):
                inputs = self.patches(hu, spacing_zyx_mm, centers[start : start + batch_size]).to(self.device)
                nodule_logit, type_logits = self.model(inputs)
                probabilities.append(torch.sigmoid(nodule_logit.float()).cpu())
                type_probabilities.append(torch.softmax(type_logits.float(), dim=1).cpu())
        if not probabilities:
            return []
        p_nodule = torch.cat(probabilities).numpy()
        p_types = torch.cat(type_probabilities).numpy()
        results = [
            Classification(
                center_zyx_vox=(float(c[0]), float(c[1]), float(c[2])),
                nodule_probability=float(p),
                is_nodule=bool(p >= self.threshold),
                nodule_type=self.types[int(np.argmax(pt))],
                type_probabilities={t: float(v) for t, v in zip(self.types, pt, strict=True)},
            )
            for c, p, pt in zip(centers, p_nodule, p_types, strict=True)
        ]
        logger.debug(
            "%s@%s: %d candidates, %d nodules at %.3f",
            self.name,
            self.version,
            len(results),
            sum(r.is_nodule for r in results),
            self.threshold,
        )
        return results
