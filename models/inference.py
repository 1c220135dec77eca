"""Run a registered nodule detector on a CT volume."""

from __future__ import annotations

import contextlib
import logging
import time
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from models.candidates import Candidate, SliceDetections, merge_slice_detections
from models.preprocessing import Preprocessing
from models.registry import RegisteredModel

if TYPE_CHECKING:
    from models.registry import ModelEntry

logger = logging.getLogger(__name__)


def slice_stack(volume: torch.Tensor, k: int) -> torch.Tensor:
    """The 2.5-D image of slice k: slices (k-1, k, k+1) of a (z, y, x) volume as channels, edges repeated."""
    last = volume.shape[0] - 1
    return volume[[max(k - 1, 0), k, min(k + 1, last)]]


def detect_slices(
    model: nn.Module, volume: torch.Tensor, *, device: str = "cpu", batch_size: int = 16
) -> list[SliceDetections]:
    """Run `model` (eval mode) on every slice of a working-grid volume (z, y, x) in batches; CPU results."""
    device_type = torch.device(device).type
    autocast = torch.autocast("cuda") if device_type == "cuda" else contextlib.nullcontext()
    results: list[SliceDetections] = []
    with torch.inference_mode(), autocast:
        for start in range(0, volume.shape[0], batch_size):
            ks = range(start, min(start + batch_size, volume.shape[0]))
            images = [slice_stack(volume, k).to(device) for k in ks]
            for k, out in zip(ks, model(images), strict=True):
                results.append(SliceDetections(k, out["boxes"].float().cpu(), out["scores"].float().cpu()))
    return results


class NoduleDetector(RegisteredModel):
    """A loaded, registered detector; `name`, `version`, `sha256`, `preprocessing_version` are provenance."""

    def __init__(self, model: nn.Module, entry: ModelEntry, *, device: str = "cpu") -> None:
        self.model = model.to(device).eval()
        self.entry = entry
        self.device = device
        self.preprocessing: Preprocessing = entry.preprocessing
        self.score_threshold: float = entry.score_threshold

    def detect(
        self,
        hu: np.ndarray,
        spacing_zyx_mm: tuple[float, float, float],
        *,
        batch_size: int = 16,
        score_threshold: float | None = None,
        stages_s: dict[str, float] | None = None,
    ) -> list[Candidate]:
        """Nodule candidates in `hu` (float32 HU, axis order (z, y, x), voxel size `spacing_zyx_mm` in mm).

        Candidates have centres in `hu`'s voxel coordinates and scores >= the registry's threshold (or
        `score_threshold` when given), best first. ``stages_s``, when given, receives the seconds spent in
        ``preprocess`` (to the model's grid) and in ``network`` (the slices through the network, merged).
        """
        if hu.ndim != 3:
            raise ValueError(f"hu must be 3-D (z, y, x), got shape {hu.shape}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        start = time.perf_counter()
        volume, grid = self.preprocessing.to_model_grid(hu, spacing_zyx_mm)
        preprocessed = time.perf_counter()
        detections = detect_slices(self.model, volume, device=self.device, batch_size=batch_size)
        candidates = merge_slice_detections(
            detections, grid_spacing_zyx_mm=self.preprocessing.spacing_zyx_mm, grid=grid
        )
        if stages_s is not None:
            stages_s["preprocess"] = preprocessed - start
            stages_s["network"] = time.perf_counter() - preprocessed
        threshold = self.score_threshold if score_threshold is None else score_threshold
        kept = [c for c in candidates if c.score >= threshold]
        logger.debug(
            "%s@%s: %d candidates, %d kept at %.3f",
            self.name,
            self.version,
            len(candidates),
            len(kept),
            threshold,
        )
        return kept
