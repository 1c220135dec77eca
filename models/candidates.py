"""Merge per-slice 2-D detections into 3-D nodule candidates.

Boxes on adjacent slices that overlap (IoU above a threshold) belong to the same candidate (connected
components). Coordinates: slice index k along z on the working grid, boxes (x1, y1, x2, y2) in working-grid
pixels; results are mapped back to the input volume's voxel coordinates (z, y, x).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torchvision.ops import box_iou

from models.preprocessing import GridMap


@dataclass(frozen=True)
class SliceDetections:
    """Detections of one working-grid slice: `boxes` (N, 4) as (x1, y1, x2, y2) pixels, `scores` (N,)."""

    slice_index: int
    boxes: torch.Tensor
    scores: torch.Tensor


@dataclass(frozen=True)
class Candidate:
    """A 3-D nodule candidate.

    `center_zyx_vox`: centre in the INPUT volume's voxel coordinates (z, y, x); `extent_zyx_mm`: size along
    each axis in mm; `diameter_mm`: mean in-plane extent in mm; `score`: detector confidence in 0..1 (max over
    the candidate's slices).
    """

    center_zyx_vox: tuple[float, float, float]
    extent_zyx_mm: tuple[float, float, float]
    diameter_mm: float
    score: float


def merge_slice_detections(
    detections: list[SliceDetections],
    *,
    grid_spacing_zyx_mm: tuple[float, float, float],
    grid: GridMap,
    iou_threshold: float = 0.3,
) -> list[Candidate]:
    """Link boxes on adjacent slices with IoU > `iou_threshold` into 3-D candidates, best score first.

    Centre = score-weighted mean of the boxes' centres (z = slice index) on the working grid, mapped back
    to input voxels with `grid`; extent = span of slices and largest box
    side, in mm.
    """
    rows: list[tuple[int, np.ndarray, float]] = []  # (slice, box, score)
    by_slice: dict[int, list[int]] = {}
    for det in detections:
        for box, score in zip(det.boxes.cpu().numpy(), det.scores.cpu().numpy(), strict=True):
            by_slice.setdefault(det.slice_index, []).append(len(rows))
            rows.append((det.slice_index, box.astype(np.float64), float(score)))
    if not rows:
        return []

    parent = list(range(len(rows)))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for k, members in by_slice.items():
        following = by_slice.get(k + 1)
        if not following:
            continue
        boxes_a = torch.as_tensor(np.stack([rows[i][1] for i in members]))
        boxes_b = torch.as_tensor(np.stack([rows[i][1] for i in following]))
        iou = box_iou(boxes_a, boxes_b).numpy()
        for a, b in zip(*np.nonzero(iou > iou_threshold), strict=True):
            parent[find(members[a])] = find(following[b])

    groups: dict[int, list[int]] = {}
    for i in range(len(rows)):
        groups.setdefault(find(i), []).append(i)

    dz, dy, dx = grid_spacing_zyx_mm
    spacing = np.array(grid_spacing_zyx_mm)
    found: list[tuple[np.ndarray, float, Candidate]] = []  # (centre in grid mm, radius in mm, candidate)
    for members in groups.values():
        ks = np.array([rows[i][0] for i in members], dtype=np.float64)
        boxes = np.stack([rows[i][1] for i in members])
        scores = np.array([rows[i][2] for i in members])
        weights = scores / scores.sum()
        cy = (boxes[:, 1] + boxes[:, 3]) / 2 - 0.5  # pixel edges -> pixel-centre coordinates
        cx = (boxes[:, 0] + boxes[:, 2]) / 2 - 0.5
        center_grid = (float(weights @ ks), float(weights @ cy), float(weights @ cx))
        extent = (
            float((ks.max() - ks.min() + 1) * dz),
            float((boxes[:, 3] - boxes[:, 1]).max() * dy),
            float((boxes[:, 2] - boxes[:, 0]).max() * dx),
        )
        candidate = Candidate(
            center_zyx_vox=grid.to_input(center_grid),
            extent_zyx_mm=extent,
            diameter_mm=(extent[1] + extent[2]) / 2,
            score=float(scores.max()),
        )
        found.append((np.array(center_grid) * spacing, candidate.diameter_mm / 2, candidate))
    return _suppress_nested(found)


def _suppress_nested(found: list[tuple[np.ndarray, float, Candidate]]) -> list[Candidate]:
    """3-D non-maximum suppression: drop a candidate whose centre lies inside a better one (best first).

    Chains of boxes that do not overlap enough from slice to slice can split one nodule into two
    candidates at nearly the same place; the lower-scoring one is a duplicate, not a second nodule.
    """
    kept: list[tuple[np.ndarray, float, Candidate]] = []
    for centre_mm, radius_mm, candidate in sorted(found, key=lambda f: f[2].score, reverse=True):
        if all(np.linalg.norm(centre_mm - c) > r for c, r, _ in kept):
            kept.append((centre_mm, radius_mm, candidate))
    return [candidate for _, _, candidate in kept]
