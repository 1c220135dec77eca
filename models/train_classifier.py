"""Train the candidate classifier (nodule or not, and type) on synthetic phantoms, in memory.

    python -m models.train_classifier --out models/weights --seed 0

Training, validation and test phantoms come from disjoint seeds (none of them the detector's). Candidates:

- positives: the true nodules, centre moved by up to 2 mm (0.4 x the diameter for small ones) as a detector
  would give it, several times each; and the detector's hits (centre within the radius); type = the truth's;
- negatives: the shipped detector's false positives (hard negatives: farther than radius + 3 mm from every
  nodule; those in between are ambiguous and left out of training), bright points inside the lungs
  (vessels), points within a few mm of the lung boundary (chest wall, pleura), and plain lung parenchyma.

Patches are cut once with a margin (36 voxels) and augmented per step (flips on every axis, 90-degree in-plane
rotations, scaling by 0.9..1.1, sub-voxel shifts, HU offset and contrast jitter, extra noise) down to the
model's 32 voxels. The nodule loss is binary cross-entropy; the type loss (cross-entropy) counts on positives
only. The best epoch by validation ROC AUC + type accuracy is kept; the nodule threshold is the highest that
keeps 95 % of the validation nodules >= 6 mm (Lung-RADS's actionable size); the test metrics come from the
real inference path (:class:`CandidateClassifier`) on held-out phantoms. Weights, training curves (PNG), the
registry entry and the model card are written. Positives under 10 mm are drawn twice as often.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import copy
import dataclasses
import datetime as dt
import logging
import multiprocessing
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from scipy import ndimage

from models.classifier import (
    CLASSIFIER_CATEGORIES,
    TYPE_CATEGORIES,
    CandidateClassifier,
    build_from_architecture,
    extract_patches,
    study_score,
)
from models.inference import NoduleDetector
from models.model_card import write_model_card
from models.patch_augment import augment_patches, center_crop
from models.plots import training_curves_plot
from models.preprocessing import Preprocessing
from models.registry import (
    REGISTRY_PATH,
    ModelEntry,
    file_sha256,
    load_classifier,
    load_detector,
    register,
    training_command,
)
from models.train import EVAL_SHAPE_ZYX as ARCHIVE_SHAPE_ZYX  # the archive's studies, as the detector is tested
from models.train import EVAL_SPACING_ZYX_MM as ARCHIVE_SPACING_ZYX_MM
from screening.types import NoduleType
from synth.phantom import MAX_NODULE_DIAMETER_MM, MIN_NODULE_DIAMETER_MM, Phantom, make_phantom

logger = logging.getLogger(__name__)

PATCH_SIZE = 32
CONTEXT_SIZE = 36  # stored patch side: room for scaling by up to 1.1 and sub-voxel shifts
PREPROCESSING = Preprocessing(
    spacing_zyx_mm=(1.25, 1.25, 1.25), window_hu=(-1000.0, 400.0), version="ct-patch32-1.25mm-w1000-400-v1"
)
ARCHITECTURE: dict[str, Any] = {
    "builder": "candidate_cnn_3d",
    "kwargs": {"patch_size": PATCH_SIZE, "width": 8, "num_types": len(TYPE_CATEGORIES), "dropout": 0.2},
}
DETECTOR_REF = "nodule-detector@0.1.0"
EVAL_SHAPE_ZYX = (48, 128, 128)
EVAL_SPACING_ZYX_MM = (2.5, 2.5, 2.5)
EVAL_GRIDS = {"small": (EVAL_SHAPE_ZYX, EVAL_SPACING_ZYX_MM), "archive": (ARCHIVE_SHAPE_ZYX, ARCHIVE_SPACING_ZYX_MM)}
THIN_SHAPE_ZYX = (96, 256, 256)
THIN_SPACING_ZYX_MM = (1.25, 1.25, 1.25)
MIN_VAL_SENSITIVITY = 0.95
THRESHOLD_MIN_DIAMETER_MM = 6.0  # the threshold keeps MIN_VAL_SENSITIVITY of the validation nodules this large
SMALL_NODULE_MM = 10.0  # positives below this size are drawn twice as often (their type is the hard part)
TYPE_ACCURACY_TARGET = 0.9
MAX_JITTER_MM = 2.0
AMBIGUOUS_MARGIN_MM = 3.0  # detector candidates between r and r + this from a nodule are left out of training
# Sources of candidates, in the order of SOURCES (stored as indices).
SOURCES = ("nodule", "detector", "vessel", "wall", "lung")
NEGATIVE_MIX = {"detector": 0.4, "vessel": 0.3, "wall": 0.15, "lung": 0.15}  # share of negatives per batch
# Seed offsets keep this model's phantoms apart from each other and from the detector's (0..2_000_000 + s)
# and from the tests' (>= 10_000_000).
_TRAIN_SEED_OFFSET = 5_000_000
_VAL_SEED_OFFSET = 6_000_000
_TEST_SEED_OFFSET = 7_000_000
_THIN_TEST_SEED_OFFSET = 8_000_000


@dataclass
class PatchSet:
    """Candidate patches with labels: `patches` (N, C, C, C) int16 HU, `is_nodule` (N,) bool, `kind` (N,) type
    index into TYPE_CATEGORIES (-1 for negatives), `source` (N,) index into SOURCES, `diameter_mm` (N,) of the
    nodule (nan for negatives)."""

    patches: np.ndarray
    is_nodule: np.ndarray
    kind: np.ndarray
    source: np.ndarray
    diameter_mm: np.ndarray

    def __len__(self) -> int:
        return len(self.is_nodule)

    @classmethod
    def concat(cls, sets: list[PatchSet]) -> PatchSet:
        return cls(*(np.concatenate([getattr(s, f) for s in sets]) for f in cls.__dataclass_fields__))


@dataclass(frozen=True)
class LabelledCandidate:
    """A candidate centre (input voxels, z, y, x) with its truth: nodule or not, type index, source, diameter (mm),
    the detector's score (detector candidates) and which true nodule it is (positives)."""

    center_zyx_vox: tuple[float, float, float]
    is_nodule: bool
    kind: int
    source: int
    diameter_mm: float
    detector_score: float = float("nan")
    nodule: int = -1  # index of the true nodule in the phantom (positives), -1 for negatives


@dataclass(frozen=True)
class PhantomRecipe:
    """How the phantoms are drawn: the smallest nodule (mm), the share of training phantoms on the longitudinal
    archive's grid (ARCHIVE_SHAPE_ZYX at ARCHIVE_SPACING_ZYX_MM; the others at a random voxel size), the grid
    of the validation and test phantoms (a key of EVAL_GRIDS) and the largest nodule (mm). The defaults are
    nodule-classifier 0.1.0's."""

    min_nodule_mm: float = MIN_NODULE_DIAMETER_MM
    archive_share: float = 0.0
    eval_grid: str = "small"
    max_nodule_mm: float = MAX_NODULE_DIAMETER_MM

    def __post_init__(self) -> None:
        if self.eval_grid not in EVAL_GRIDS:
            raise ValueError(f"eval_grid must be one of {sorted(EVAL_GRIDS)}, got {self.eval_grid!r}")
        if not 0.0 <= self.archive_share <= 1.0:
            raise ValueError(f"archive_share must be in [0, 1], got {self.archive_share}")

    @property
    def eval_shape_spacing(self) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
        return EVAL_GRIDS[self.eval_grid]


def training_phantom(rng: np.random.Generator, recipe: PhantomRecipe | None = None) -> Phantom:
    """A phantom with 1..4 nodules: on the archive's grid (a `recipe.archive_share` of them), else at a random
    voxel size (z 1.0..3.0 mm, in-plane 1.0..2.8 mm) over ~120 x 320 x 320 mm."""
    recipe = recipe or PhantomRecipe()
    if recipe.archive_share > 0 and rng.random() < recipe.archive_share:  # no draw at 0: 0.1.0's phantoms
        shape, spacing = ARCHIVE_SHAPE_ZYX, ARCHIVE_SPACING_ZYX_MM
    else:
        dz, dxy = float(rng.uniform(1.0, 3.0)), float(rng.uniform(1.0, 2.8))
        shape, spacing = (round(120 / dz), round(320 / dxy), round(320 / dxy)), (dz, dxy, dxy)
    return make_phantom(
        rng,
        shape_zyx=shape,
        spacing_zyx_mm=spacing,
        n_nodules=int(rng.integers(1, 5)),
        min_nodule_mm=recipe.min_nodule_mm,
        max_nodule_mm=recipe.max_nodule_mm,
    )


def _kind_index(kind: str) -> int:
    return TYPE_CATEGORIES.index(NoduleType(str(kind)))


def _jittered(center: tuple[float, float, float], diameter_mm: float, spacing: np.ndarray, rng: np.random.Generator):
    """`center` moved in a random direction by up to min(2 mm, 0.4 diameter)."""
    direction = rng.normal(size=3)
    direction /= np.linalg.norm(direction)
    shift_mm = direction * rng.uniform(0.0, min(MAX_JITTER_MM, 0.4 * diameter_mm))
    return tuple(float(c) for c in np.asarray(center) + shift_mm / spacing)


def _masks(hu: np.ndarray, spacing: np.ndarray) -> dict[str, np.ndarray]:
    """Voxel masks where negatives are drawn: vessels, the lung boundary band (chest wall) and parenchyma."""
    air = hu < -400
    labels, _ = ndimage.label(air)
    border = np.unique(np.concatenate([labels[:, [0, -1], :].ravel(), labels[:, :, [0, -1]].ravel()]))
    lung_air = air & ~np.isin(labels, border[border > 0])
    in_plane = np.zeros((3, 3, 3), dtype=bool)
    in_plane[1] = ndimage.generate_binary_structure(2, 1)
    region = ndimage.binary_fill_holes(lung_air, structure=in_plane)  # lungs with their vessels and nodules
    band = max(1, round(3.0 / float(spacing[1:].mean())))
    wall = ndimage.binary_dilation(region, in_plane, iterations=band) & ~ndimage.binary_erosion(
        region, in_plane, iterations=band
    )
    return {"vessel": region & (hu > -300), "wall": wall, "lung": lung_air & (hu < -750)}


def _random_points(
    mask: np.ndarray,
    count: int,
    nodules_mm: np.ndarray,
    radii_mm: np.ndarray,
    spacing: np.ndarray,
    rng: np.random.Generator,
) -> list[tuple[float, float, float]]:
    """Up to `count` points of `mask` (voxel centres plus sub-voxel jitter) farther than r + 3 mm from every nodule."""
    index = np.flatnonzero(mask)
    if count <= 0 or not len(index):
        return []
    picked = np.array(np.unravel_index(rng.choice(index, size=min(len(index), 8 * count)), mask.shape)).T.astype(float)
    picked += rng.uniform(-0.5, 0.5, size=picked.shape)
    if len(nodules_mm):
        dist = np.linalg.norm(picked[:, None, :] * spacing - nodules_mm[None], axis=2)
        picked = picked[(dist > radii_mm[None] + AMBIGUOUS_MARGIN_MM).all(axis=1)]
    return [tuple(float(v) for v in p) for p in picked[:count]]


def label_candidates(
    phantom: Phantom,
    detector: NoduleDetector | None,
    rng: np.random.Generator,
    *,
    jitters: int,
    n_vessel: int,
    n_wall: int,
    n_lung: int,
    for_training: bool,
) -> list[LabelledCandidate]:
    """Candidates of one phantom with their truth (see the module docstring).

    Detector candidates (every candidate the detector gives, whatever its score) are labelled by the LUNA16 hit
    rule: a nodule when the centre lies within a true nodule's radius (type of that nodule), otherwise not;
    with `for_training`, those within radius + 3 mm of a nodule but outside it are dropped as ambiguous.
    """
    spacing = np.asarray(phantom.spacing_zyx_mm, dtype=np.float64)
    nodules_mm = np.array([n.center_zyx_vox for n in phantom.nodules], dtype=np.float64).reshape(-1, 3) * spacing
    radii = np.array([n.diameter_mm / 2 for n in phantom.nodules], dtype=np.float64)
    out: list[LabelledCandidate] = []
    for k, n in enumerate(phantom.nodules):
        for _ in range(jitters):
            out.append(
                LabelledCandidate(
                    _jittered(n.center_zyx_vox, n.diameter_mm, spacing, rng),
                    True,
                    _kind_index(n.kind),
                    SOURCES.index("nodule"),
                    n.diameter_mm,
                    nodule=k,
                )
            )
    if detector is not None:
        for cand in detector.detect(phantom.hu, phantom.spacing_zyx_mm, score_threshold=0.0):
            dist = np.linalg.norm(nodules_mm - np.asarray(cand.center_zyx_vox) * spacing, axis=1)
            hits = np.flatnonzero(dist <= radii)
            if len(hits):
                k = int(hits[np.argmin(dist[hits])])
                hit = phantom.nodules[k]
                labelled = (True, _kind_index(hit.kind), hit.diameter_mm, k)
            elif for_training and (dist <= radii + AMBIGUOUS_MARGIN_MM).any():
                continue
            else:
                labelled = (False, -1, float("nan"), -1)
            out.append(
                LabelledCandidate(
                    tuple(float(c) for c in cand.center_zyx_vox),
                    labelled[0],
                    labelled[1],
                    SOURCES.index("detector"),
                    labelled[2],
                    cand.score,
                    labelled[3],
                )
            )
    masks = _masks(phantom.hu, spacing)
    for source, count in (("vessel", n_vessel), ("wall", n_wall), ("lung", n_lung)):
        for point in _random_points(masks[source], count, nodules_mm, radii, spacing, rng):
            out.append(LabelledCandidate(point, False, -1, SOURCES.index(source), float("nan")))
    return out


def patch_set(phantom: Phantom, candidates: list[LabelledCandidate], size: int = CONTEXT_SIZE) -> PatchSet:
    """Cut the candidates' patches (int16 HU, `size` voxels at the classifier's spacing) from `phantom`."""
    patches = extract_patches(
        phantom.hu,
        phantom.spacing_zyx_mm,
        [c.center_zyx_vox for c in candidates],
        patch_size=size,
        patch_spacing_zyx_mm=PREPROCESSING.spacing_zyx_mm,
    )
    return PatchSet(
        patches=patches.round().clamp(-32768, 32767).to(torch.int16).numpy(),
        is_nodule=np.array([c.is_nodule for c in candidates], dtype=bool),
        kind=np.array([c.kind for c in candidates], dtype=np.int64),
        source=np.array([c.source for c in candidates], dtype=np.int64),
        diameter_mm=np.array([c.diameter_mm for c in candidates], dtype=np.float64),
    )


def augment(patches_hu: torch.Tensor, gen: torch.Generator, *, size: int = PATCH_SIZE) -> torch.Tensor:
    """Random training views (B, 1, size, size, size) in [0, 1] of context patches (B, C, C, C) in HU
    (:func:`models.patch_augment.augment_patches`: shifts of up to half a voxel, noise sd up to 25 HU)."""
    return augment_patches(
        patches_hu, gen, size=size, window_hu=PREPROCESSING.window_hu, max_shift_vox=0.5, max_noise_hu=25.0
    )


def center_view(patches_hu: np.ndarray | torch.Tensor, size: int = PATCH_SIZE) -> torch.Tensor:
    """The un-augmented model input (B, 1, size, size, size) of context patches: the centre crop, windowed."""
    return center_crop(patches_hu, size=size, window_hu=PREPROCESSING.window_hu)


def classification_loss(
    nodule_logit: torch.Tensor, type_logits: torch.Tensor, is_nodule: torch.Tensor, kind: torch.Tensor
) -> torch.Tensor:
    """Binary cross-entropy on nodule-or-not plus cross-entropy on type over the positives only."""
    loss = F.binary_cross_entropy_with_logits(nodule_logit, is_nodule.float())
    if bool(is_nodule.any()):
        loss = loss + F.cross_entropy(type_logits[is_nodule], kind[is_nodule])
    return loss


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney, ties count half); nan when one class is missing."""
    labels = np.asarray(labels, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if not n_pos or not n_neg:
        return float("nan")
    ranks = _average_ranks(scores)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _average_ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values), dtype=np.float64)
    sorted_values = values[order]
    start = 0
    while start < len(values):
        end = start
        while end + 1 < len(values) and sorted_values[end + 1] == sorted_values[start]:
            end += 1
        ranks[order[start : end + 1]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def binary_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float | int]:
    """Counts and rates of `scores >= threshold` against `labels`: accuracy, precision, recall, specificity, F1."""
    labels = np.asarray(labels, dtype=bool)
    predicted = np.asarray(scores) >= threshold
    tp = int((predicted & labels).sum())
    fp = int((predicted & ~labels).sum())
    tn = int((~predicted & ~labels).sum())
    fn = int((~predicted & labels).sum())
    precision = tp / (tp + fp) if tp + fp else float("nan")
    recall = tp / (tp + fn) if tp + fn else float("nan")
    return {
        "n_positive": tp + fn,
        "n_negative": tn + fp,
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
        "accuracy": (tp + tn) / max(len(labels), 1),
        "precision": precision,
        "recall": recall,
        "specificity": tn / (tn + fp) if tn + fp else float("nan"),
        "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan"),
        "roc_auc": roc_auc(labels, scores),
    }


def choose_threshold(labels: np.ndarray, scores: np.ndarray, *, min_sensitivity: float) -> float:
    """The highest threshold whose sensitivity (recall) on `labels` stays >= `min_sensitivity`."""
    positives = np.sort(np.asarray(scores)[np.asarray(labels, dtype=bool)])
    if not len(positives):
        return 0.5
    allowed_misses = int(np.floor((1.0 - min_sensitivity) * len(positives) + 1e-9))
    return float(positives[allowed_misses])


def confusion_matrix(truth: np.ndarray, predicted: np.ndarray, n: int) -> list[list[int]]:
    """Counts [true type][predicted type]."""
    matrix = np.zeros((n, n), dtype=int)
    np.add.at(matrix, (np.asarray(truth, dtype=int), np.asarray(predicted, dtype=int)), 1)
    return matrix.tolist()


def predict(model: torch.nn.Module, patches_hu: np.ndarray, *, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Nodule probabilities (N,) and type probabilities (N, T) of context patches, model in eval mode."""
    model.eval()
    probs, types = [], []
    with torch.inference_mode():
        for start in range(0, len(patches_hu), batch_size):
            nodule_logit, type_logits = model(center_view(patches_hu[start : start + batch_size]))
            probs.append(torch.sigmoid(nodule_logit))
            types.append(torch.softmax(type_logits, dim=1))
    if not probs:
        return np.zeros(0), np.zeros((0, len(TYPE_CATEGORIES)))
    return torch.cat(probs).numpy(), torch.cat(types).numpy()


def _eval_phantom(
    seed: int, i: int, shape: tuple[int, int, int], spacing: tuple[float, float, float], recipe: PhantomRecipe
) -> Phantom:
    """Phantom [seed, i] on the grid `shape` at `spacing` (mm), nodules of the recipe's sizes."""
    return make_phantom(
        np.random.default_rng([seed, i]),
        shape_zyx=shape,
        spacing_zyx_mm=spacing,
        min_nodule_mm=recipe.min_nodule_mm,
        max_nodule_mm=recipe.max_nodule_mm,
    )


@dataclass(frozen=True)
class PatchPlan:
    """What to cut from phantoms [seed, i]: `jitters` jittered copies of each nodule, the detector's candidates on
    the first `detector_volumes` phantoms, and random vessel, chest-wall and parenchyma points."""

    seed: int
    detector_volumes: int
    jitters: int
    n_vessel: int
    n_wall: int
    n_lung: int
    for_training: bool
    recipe: PhantomRecipe


_worker_detector: NoduleDetector | None = None  # each data worker's own detector (see _init_data_worker)


def _init_data_worker(detector_ref: str, registry_path: Path | None, device: str = "cpu") -> None:
    global _worker_detector
    torch.set_num_threads(1)
    _worker_detector = load_detector(detector_ref, device, registry_path=registry_path)


def phantom_patches(plan: PatchPlan, i: int, detector: NoduleDetector | None = None) -> PatchSet:
    """The labelled patches of phantom [plan.seed, i] (`detector`: this process's own when None)."""
    if plan.for_training:
        phantom = training_phantom(np.random.default_rng([plan.seed, i]), plan.recipe)
    else:
        shape, spacing = plan.recipe.eval_shape_spacing
        phantom = _eval_phantom(plan.seed, i, shape, spacing, plan.recipe)
    candidates = label_candidates(
        phantom,
        (detector or _worker_detector) if i < plan.detector_volumes else None,
        np.random.default_rng([plan.seed, i, 1]),
        jitters=plan.jitters,
        n_vessel=plan.n_vessel,
        n_wall=plan.n_wall,
        n_lung=plan.n_lung,
        for_training=plan.for_training,
    )
    return patch_set(phantom, candidates)


def build_patches(
    detector: NoduleDetector,
    plan: PatchPlan,
    *,
    count: int,
    description: str,
    workers: int = 1,
    registry_path: Path | None = None,
    device: str = "cpu",
) -> PatchSet:
    """Patches of `count` phantoms [plan.seed, i] (`training_phantom`s, or eval-grid ones), in order, drawn in
    `workers` processes (each loads `detector`'s registered version itself from `registry_path`, on `device`)."""
    started = time.perf_counter()
    sets: list[PatchSet] = []

    def progress(k: int) -> None:
        if k % 20 == 0:
            logger.info("%s: %d/%d phantoms (%.0f s)", description, k, count, time.perf_counter() - started)

    if workers <= 1:
        for i in range(count):
            sets.append(phantom_patches(plan, i, detector))
            progress(i + 1)
    else:
        context = multiprocessing.get_context("spawn")  # no fork of a process that holds torch's thread pools
        with concurrent.futures.ProcessPoolExecutor(
            workers,
            mp_context=context,
            initializer=_init_data_worker,
            initargs=(detector.entry.ref, registry_path, device),
        ) as pool:
            for k, result in enumerate(pool.map(phantom_patches, [plan] * count, range(count)), 1):
                sets.append(result)
                progress(k)
    data = PatchSet.concat(sets)
    counts = {s: int((data.source == k).sum()) for k, s in enumerate(SOURCES)}
    logger.info(
        "%s: %d patches, %d nodules; by source %s (%.0f s)",
        description,
        len(data),
        int(data.is_nodule.sum()),
        counts,
        time.perf_counter() - started,
    )
    return data


def _load_patch_cache(path: Path | None) -> PatchSet | None:
    if path is None or not Path(path).exists():
        return None
    with np.load(path) as data:
        patches = PatchSet(*(data[f"train_{f}"] for f in PatchSet.__dataclass_fields__))
    logger.info("training patches read from %s: %d", path, len(patches))
    return patches


def _save_patch_cache(path: Path, train: PatchSet) -> None:
    np.savez(path, **{f"train_{f}": getattr(train, f) for f in train.__dataclass_fields__})
    logger.info("training patches written to %s", path)


def _validate(model: torch.nn.Module, data: PatchSet) -> tuple[dict[str, float], np.ndarray, np.ndarray]:
    p_nodule, p_types = predict(model, data.patches)
    positives = data.is_nodule
    type_accuracy = float((p_types[positives].argmax(axis=1) == data.kind[positives]).mean())
    detector = data.source == SOURCES.index("detector")
    return (
        {
            "val_auc": roc_auc(data.is_nodule, p_nodule),
            "val_auc_detector_candidates": roc_auc(data.is_nodule[detector], p_nodule[detector]),
            "val_type_accuracy": type_accuracy,
        },
        p_nodule,
        p_types,
    )


def batch_indices(
    data: PatchSet, batch_size: int, rng: np.random.Generator, row_weight: np.ndarray | None = None
) -> np.ndarray:
    """Indices of one batch: half positives (those < SMALL_NODULE_MM twice as likely), half negatives mixed by
    source as NEGATIVE_MIX says; within each pool, rows are drawn in proportion to `row_weight` (N,) when given
    (:func:`mistake_weights`)."""
    n_pos = batch_size // 2
    pools = {s: np.flatnonzero(~data.is_nodule & (data.source == SOURCES.index(s))) for s in NEGATIVE_MIX}
    pools = {s: p for s, p in pools.items() if len(p)}
    weights = np.array([NEGATIVE_MIX[s] for s in pools])
    chosen = [list(pools)[k] for k in rng.choice(len(pools), size=batch_size - n_pos, p=weights / weights.sum())]
    if row_weight is None:  # uniform within each pool (the draws of the recipes before row weights)
        negatives = [rng.choice(pools[s]) for s in chosen]
        row_weight = np.ones(len(data))
    else:
        within = {s: row_weight[p] / row_weight[p].sum() for s, p in pools.items()}
        negatives = [rng.choice(pools[s], p=within[s]) for s in chosen]
    pool = np.flatnonzero(data.is_nodule)
    weight = np.where(data.diameter_mm[pool] < SMALL_NODULE_MM, 2.0, 1.0) * row_weight[pool]
    positives = rng.choice(pool, size=n_pos, p=weight / weight.sum())
    return np.concatenate([positives, np.asarray(negatives, dtype=np.int64)])


def mistake_weights(model: torch.nn.Module, data: PatchSet, factor: float) -> np.ndarray:
    """Sampling weight (N,) of each row of `data` for fine-tuning `model`: `factor` for the rows it gets wrong on
    their centre view (a nodule under probability 0.5, a negative at 0.5 or more), 1 for the others."""
    if factor < 1.0:
        raise ValueError(f"the mistakes' weight must be >= 1, got {factor}")
    probability, _ = predict(model, data.patches)
    wrong = (probability >= 0.5) != data.is_nodule
    logger.info(
        "the starting model gets %d of %d nodules and %d of %d negatives wrong; they are drawn %g times as often",
        int((wrong & data.is_nodule).sum()),
        int(data.is_nodule.sum()),
        int((wrong & ~data.is_nodule).sum()),
        int((~data.is_nodule).sum()),
        factor,
    )
    return np.where(wrong, factor, 1.0)


def evaluate_on_phantoms(
    classifier: CandidateClassifier,
    detector: NoduleDetector,
    *,
    seed: int,
    count: int,
    shape: tuple[int, int, int],
    spacing: tuple[float, float, float],
    recipe: PhantomRecipe = PhantomRecipe(),
) -> dict[str, Any]:
    """Held-out metrics through the inference path (:meth:`CandidateClassifier.classify`) on phantoms [seed, i].

    Candidates per phantom: every detector candidate (hit rule labels), each true nodule once with a
    jittered centre, and 4 vessel, 2 chest-wall and 2 parenchyma points. Also: detector false positives per scan
    and sensitivity (nodules >= 6 mm) at the detector's threshold before and after the classifier, and the
    study-level score's AUC (a study is abnormal when it holds a nodule).
    """
    records = []
    studies = []
    for i in range(count):
        phantom = _eval_phantom(seed, i, shape, spacing, recipe)
        candidates = label_candidates(
            phantom,
            detector,
            np.random.default_rng([seed, i, 1]),
            jitters=1,
            n_vessel=4,
            n_wall=2,
            n_lung=2,
            for_training=False,
        )
        results = classifier.classify(phantom.hu, phantom.spacing_zyx_mm, [c.center_zyx_vox for c in candidates])
        kept = []
        for c, r in zip(candidates, results, strict=True):
            records.append((i, c, r))
            if c.source == SOURCES.index("detector") and c.detector_score >= detector.score_threshold:
                kept.append(r)
        studies.append(
            (
                study_score(kept),
                bool(phantom.nodules),
                any(n.diameter_mm >= 6.0 for n in phantom.nodules),
            )
        )
    labels = np.array([c.is_nodule for _, c, _ in records])
    probs = np.array([r.nodule_probability for _, _, r in records])
    source = np.array([c.source for _, c, _ in records])
    diameter = np.array([c.diameter_mm for _, c, _ in records])
    threshold = classifier.threshold
    by_source = {s: int((source == k).sum()) for k, s in enumerate(SOURCES) if (source == k).any()}
    truth = source == SOURCES.index("nodule")
    kinds = np.array([c.kind for _, c, _ in records])
    kind_true = kinds[truth]
    kind_pred = np.array([TYPE_CATEGORIES.index(r.nodule_type) for _, _, r in records])[truth]
    large = diameter[truth] >= 6.0
    detector_rows = source == SOURCES.index("detector")
    of_interest = ~labels | (diameter >= 6.0)  # negatives and the nodules >= 6 mm
    scores = np.array([c.detector_score for _, c, _ in records])
    above = detector_rows & (scores >= detector.score_threshold)
    fp_before = int((above & ~labels).sum())
    fp_after = int((above & ~labels & (probs >= threshold)).sum())
    # Per nodule >= 6 mm: found by the detector at its threshold, and still after the classifier.
    found_before, found_after, n_large = _nodule_sensitivity(records, detector.score_threshold, threshold)
    study = np.array(studies, dtype=np.float64)
    metrics: dict[str, Any] = {
        "n_scans": count,
        "n_candidates": len(records),
        "candidates_by_source": by_source,
        "all_candidates": binary_metrics(labels, probs, threshold),
        "detector_candidates": binary_metrics(labels[detector_rows], probs[detector_rows], threshold),
        "nodules_ge_6mm": binary_metrics(labels[of_interest], probs[of_interest], threshold),
        "negatives_kept_by_source": {
            s: f"{int(((source == k) & ~labels & (probs >= threshold)).sum())}/{int(((source == k) & ~labels).sum())}"
            for k, s in enumerate(SOURCES)
            if ((source == k) & ~labels).any()
        },
        "nodules_missed_by_type": {
            t.value: f"{int((truth & (kinds == k) & (probs < threshold)).sum())}/{int((truth & (kinds == k)).sum())}"
            for k, t in enumerate(TYPE_CATEGORIES)
        },
        "type_accuracy": float((kind_true == kind_pred).mean()) if len(kind_true) else float("nan"),
        "type_accuracy_ge_6mm": float((kind_true[large] == kind_pred[large]).mean()) if large.any() else float("nan"),
        "n_typed_nodules": len(kind_true),
        "type_confusion": confusion_matrix(kind_true, kind_pred, len(TYPE_CATEGORIES)),
        "fp_reduction_at_detector_threshold": {
            "detector_threshold": detector.score_threshold,
            "n_nodules_ge_6mm": n_large,
            "sensitivity_ge_6mm_before": found_before / n_large if n_large else float("nan"),
            "sensitivity_ge_6mm_after": found_after / n_large if n_large else float("nan"),
            "fp_per_scan_before": fp_before / count,
            "fp_per_scan_after": fp_after / count,
        },
        "study_score": {
            "rule": "max nodule probability over the detector's candidates at its threshold (0 if none)",
            "n_abnormal": int(study[:, 1].sum()),
            "n_normal": int((study[:, 1] == 0).sum()),
            "auc_any_nodule": roc_auc(study[:, 1] > 0, study[:, 0]),
            "auc_nodule_ge_6mm": roc_auc(study[:, 2] > 0, study[:, 0]),
        },
    }
    return metrics


def evaluate_types(
    classifier: CandidateClassifier,
    *,
    seed: int,
    count: int,
    shape: tuple[int, int, int],
    spacing: tuple[float, float, float],
    recipe: PhantomRecipe = PhantomRecipe(),
) -> dict[str, Any]:
    """Type accuracy and confusion matrix on every true nodule of phantoms [seed, i] (centres jittered by up to
    2 mm like a detector's), through :meth:`CandidateClassifier.classify`; also by size band."""
    truth, predicted, diameters = [], [], []
    for i in range(count):
        phantom = _eval_phantom(seed, i, shape, spacing, recipe)
        rng = np.random.default_rng([seed, i, 2])
        sp = np.asarray(spacing, dtype=np.float64)
        centres = [_jittered(n.center_zyx_vox, n.diameter_mm, sp, rng) for n in phantom.nodules]
        for n, r in zip(phantom.nodules, classifier.classify(phantom.hu, spacing, centres), strict=True):
            truth.append(_kind_index(n.kind))
            predicted.append(TYPE_CATEGORIES.index(r.nodule_type))
            diameters.append(n.diameter_mm)
    t, p, d = np.array(truth, dtype=int), np.array(predicted, dtype=int), np.array(diameters)
    bands = {}
    for low, high in ((3.0, 4.0), (4.0, 6.0), (6.0, 10.0), (10.0, 20.0), (20.0, 31.0)):
        inside = (d >= low) & (d < high)
        bands[f"{low:g}-{high:g}mm"] = {
            "n": int(inside.sum()),
            "accuracy": float((t[inside] == p[inside]).mean()) if inside.any() else float("nan"),
        }
    return {
        "dataset": f"every nodule of {count} held-out phantoms {shape} at {spacing} mm (seeds [{seed}, i]), centre "
        f"jittered by up to {MAX_JITTER_MM:g} mm",
        "n_nodules": len(t),
        "type_accuracy": float((t == p).mean()) if len(t) else float("nan"),
        "by_diameter": bands,
        "confusion": confusion_matrix(t, p, len(TYPE_CATEGORIES)),
    }


def _nodule_sensitivity(records: list, detector_threshold: float, threshold: float) -> tuple[int, int, int]:
    """(found by the detector, found after the classifier, count) over true nodules >= 6 mm of the records."""
    found_before = found_after = total = 0
    by_scan: dict[int, list] = {}
    for i, c, r in records:
        by_scan.setdefault(i, []).append((c, r))
    for rows in by_scan.values():
        nodules = [c for c, _ in rows if c.source == SOURCES.index("nodule") and c.diameter_mm >= 6.0]
        hits = [
            (c, r)
            for c, r in rows
            if c.source == SOURCES.index("detector") and c.is_nodule and c.detector_score >= detector_threshold
        ]
        for n in nodules:
            total += 1
            mine = [(c, r) for c, r in hits if c.nodule == n.nodule]
            found_before += bool(mine)
            found_after += any(r.nodule_probability >= threshold for _, r in mine)
    return found_before, found_after, total


def train_classifier(
    out_dir: str | Path,
    *,
    seed: int = 0,
    n_train_volumes: int = 120,
    n_detector_volumes: int = 48,
    n_val_volumes: int = 40,
    n_val_detector_volumes: int = 16,
    n_test_volumes: int = 40,
    n_type_test_volumes: int = 160,
    n_thin_test_volumes: int = 8,
    epochs: int = 12,
    steps_per_epoch: int = 50,
    batch_size: int = 32,
    learning_rate: float = 3e-3,
    device: str = "cpu",
    name: str = "nodule-classifier",
    version: str = "0.1.0",
    registry_path: Path | None = None,
    num_threads: int | None = None,
    detector_ref: str = DETECTOR_REF,
    patch_cache: Path | None = None,
    command: str | None = None,
    recipe: PhantomRecipe | None = None,
    data_workers: int = 1,
    width: int = 8,
    init_from: str | None = None,
    mistake_weight: float = 1.0,
    keep: str = "best",
) -> dict[str, Any]:
    """Build the candidate patches, train, choose the threshold on validation, measure on test, save and register.

    Returns the registered metrics. Writes `{name}-{version}.pt` (state_dict) and `{name}-{version}-curves.png`
    into `out_dir`, the entry into the registry (`models/registry.json` unless `registry_path`) and the model card.
    `patch_cache` (.npz): training patches are read from it when it exists, else written to it (for trying
    training settings without rebuilding them; delete it when the training data settings change).
    `init_from` (name@version): fine-tune that registered classifier; the training rows it gets wrong are then
    drawn `mistake_weight` times as often (:func:`mistake_weights`). `keep`: "best", the epoch with the best
    validation ROC AUC + type accuracy, or "last" (a fine-tune whose validation figures are flat: 138 validation
    nodules tell type accuracies 2 nodules apart by chance).
    """
    if keep not in ("best", "last"):
        raise ValueError(f"keep must be 'best' or 'last', got {keep!r}")
    if mistake_weight != 1.0 and init_from is None:
        raise ValueError(f"mistake_weight {mistake_weight:g} needs a model to fine-tune (init_from), got none")
    started = time.perf_counter()
    if num_threads:
        torch.set_num_threads(num_threads)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    registry_path = registry_path or REGISTRY_PATH
    detector = load_detector(detector_ref, device, registry_path=registry_path)

    recipe = recipe or PhantomRecipe()
    eval_shape, eval_spacing = recipe.eval_shape_spacing
    cached = _load_patch_cache(patch_cache)
    build = {"workers": data_workers, "registry_path": registry_path, "device": device}
    train = (
        cached
        if cached is not None
        else build_patches(
            detector,
            PatchPlan(seed + _TRAIN_SEED_OFFSET, n_detector_volumes, 3, 6, 3, 3, for_training=True, recipe=recipe),
            count=n_train_volumes,
            description="training",
            **build,
        )
    )
    if patch_cache is not None and cached is None:
        _save_patch_cache(patch_cache, train)
    val = build_patches(
        detector,
        PatchPlan(seed + _VAL_SEED_OFFSET, n_val_detector_volumes, 1, 4, 2, 2, for_training=False, recipe=recipe),
        count=n_val_volumes,
        description="validation",
        **build,
    )
    data_seconds = time.perf_counter() - started

    architecture = {**ARCHITECTURE, "kwargs": {**ARCHITECTURE["kwargs"], "width": width}}
    initial = None
    if init_from is not None:
        architecture, initial = initial_classifier(init_from, registry_path)
        logger.info("fine-tuning %s", init_from)
    model = build_from_architecture(architecture)
    row_weight = None
    if initial is not None:
        model.load_state_dict(initial)
        if mistake_weight != 1.0:
            row_weight = mistake_weights(model, train, mistake_weight)
    model = model.to(device, memory_format=torch.channels_last_3d)  # faster on CPU
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=1e-4)
    total_steps = epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=learning_rate, total_steps=total_steps, pct_start=0.15
    )
    history: list[dict[str, float]] = []
    best: tuple[float, int, dict[str, torch.Tensor]] | None = None
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("loss {task.fields[loss]:.3f}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, disable=not sys.stderr.isatty()) as progress:
        task = progress.add_task("training", total=total_steps, loss=float("nan"))
        for epoch in range(1, epochs + 1):
            model.train()
            losses = []
            for _ in range(steps_per_epoch):
                index = batch_indices(train, batch_size, rng, row_weight)
                inputs = augment(torch.from_numpy(train.patches[index]), gen)
                inputs = inputs.to(device, memory_format=torch.channels_last_3d)
                is_nodule = torch.from_numpy(train.is_nodule[index]).to(device)
                kind = torch.from_numpy(train.kind[index]).to(device)
                nodule_logit, type_logits = model(inputs)
                loss = classification_loss(nodule_logit, type_logits, is_nodule, kind)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                losses.append(float(loss.detach()))
                progress.update(task, advance=1, loss=float(np.mean(losses[-20:])))
            model.to("cpu")
            record: dict[str, float] = {"epoch": epoch, "loss": float(np.mean(losses))}
            record.update(_validate(model, val)[0])
            model.to(device, memory_format=torch.channels_last_3d)
            history.append(record)
            score = record["val_auc"] + record["val_type_accuracy"]
            if best is None or score > best[0] or (keep == "last" and epoch == epochs):
                best = (score, epoch, copy.deepcopy(model.state_dict()))
            logger.info(
                "epoch %d/%d loss %.4f val AUC %.3f (detector candidates %.3f) type accuracy %.3f",
                epoch,
                epochs,
                record["loss"],
                record["val_auc"],
                record["val_auc_detector_candidates"],
                record["val_type_accuracy"],
            )
    if best is None:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    model.load_state_dict(best[2])
    model.to("cpu", memory_format=torch.contiguous_format)
    logger.info("kept epoch %d (val AUC + type accuracy %.3f)", best[1], best[0])

    _, val_probs, _ = _validate(model, val)
    of_interest = ~val.is_nodule | (val.diameter_mm >= THRESHOLD_MIN_DIAMETER_MM)
    threshold = choose_threshold(
        val.is_nodule[of_interest], val_probs[of_interest], min_sensitivity=MIN_VAL_SENSITIVITY
    )
    val_metrics = binary_metrics(val.is_nodule, val_probs, threshold)
    logger.info(
        "threshold %.3f chosen on validation (sensitivity >= %.2f for nodules >= %g mm)",
        threshold,
        MIN_VAL_SENSITIVITY,
        THRESHOLD_MIN_DIAMETER_MM,
    )

    weights_file = out_dir / f"{name}-{version}.pt"
    torch.save(model.state_dict(), weights_file)
    entry = ModelEntry(
        name=name,
        version=version,
        architecture=architecture,
        weights=os.path.relpath(weights_file.resolve(), registry_path.resolve().parent),
        sha256=file_sha256(weights_file),
        preprocessing=PREPROCESSING,
        categories=list(CLASSIFIER_CATEGORIES),
        score_threshold=threshold,
        provisional=True,
        trained_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        training_command=command
        or f"models.train_classifier.train_classifier(seed={seed}, n_train_volumes={n_train_volumes}, "
        f"epochs={epochs}, steps_per_epoch={steps_per_epoch})",
    )
    classifier = CandidateClassifier(model, entry)
    eval_started = time.perf_counter()
    test = evaluate_on_phantoms(
        classifier,
        detector,
        seed=seed + _TEST_SEED_OFFSET,
        count=n_test_volumes,
        shape=eval_shape,
        spacing=eval_spacing,
        recipe=recipe,
    )
    classify_seconds = (time.perf_counter() - eval_started) / max(n_test_volumes, 1)
    types = evaluate_types(
        classifier,
        seed=seed + _TEST_SEED_OFFSET,
        count=n_type_test_volumes,
        shape=eval_shape,
        spacing=eval_spacing,
        recipe=recipe,
    )
    thin = (
        evaluate_on_phantoms(
            classifier,
            detector,
            seed=seed + _THIN_TEST_SEED_OFFSET,
            count=n_thin_test_volumes,
            shape=THIN_SHAPE_ZYX,
            spacing=THIN_SPACING_ZYX_MM,
            recipe=recipe,
        )
        if n_thin_test_volumes
        else {}
    )
    n_params = sum(p.numel() for p in model.parameters())
    metrics: dict[str, Any] = {
        "dataset": f"{n_test_volumes} held-out synthetic phantoms {eval_shape} at {eval_spacing} mm "
        f"(synth.phantom, seeds [{seed + _TEST_SEED_OFFSET}, i], nodules of {recipe.min_nodule_mm:g} to "
        f"{recipe.max_nodule_mm:g} mm); "
        f"candidates from {detector_ref} "
        f"(sha256 {detector.sha256[:12]}), every true nodule (centre jittered <= {MAX_JITTER_MM:g} mm) "
        "and random vessel, chest-wall and parenchyma points",
        "training_data": f"{n_train_volumes} phantoms (seeds [{seed + _TRAIN_SEED_OFFSET}, i], nodules of "
        f"{recipe.min_nodule_mm:g} to {recipe.max_nodule_mm:g} mm; {recipe.archive_share:.0%} on the archive grid "
        f"{ARCHIVE_SHAPE_ZYX} at "
        f"{ARCHIVE_SPACING_ZYX_MM} mm, the others voxel z 1.0..3.0 mm, in-plane 1.0..2.8 mm), candidates of "
        f"{detector_ref} on the first {n_detector_volumes}: "
        f"{len(train)} patches, {int(train.is_nodule.sum())} positive"
        + (
            f"; fine-tuned from {init_from} ({epochs} epochs, lr <= {learning_rate:g}"
            + (f", its mistakes drawn {mistake_weight:g} times as often)" if mistake_weight != 1.0 else ")")
            if init_from
            else ""
        ),
        "hit_rule": "candidate centre within diameter/2 of a true nodule centre (LUNA16)",
        "threshold": threshold,
        "type_categories": [t.value for t in TYPE_CATEGORIES],
        "type_accuracy": types["type_accuracy"],
        "types": types,
        "test": test,
        "test_thin_slices": (
            {
                "dataset": f"{n_thin_test_volumes} phantoms {THIN_SHAPE_ZYX} at {THIN_SPACING_ZYX_MM} mm "
                f"(seeds [{seed + _THIN_TEST_SEED_OFFSET}, i])",
                **thin,
            }
            if thin
            else {}
        ),
        "validation": {
            "n_scans": n_val_volumes,
            "seeds": f"[{seed + _VAL_SEED_OFFSET}, i]",
            "threshold_rule": f"highest with sensitivity >= {MIN_VAL_SENSITIVITY} on validation nodules >= "
            f"{THRESHOLD_MIN_DIAMETER_MM:g} mm",
            "nodules_ge_6mm": binary_metrics(val.is_nodule[of_interest], val_probs[of_interest], threshold),
            **val_metrics,
        },
        "best_epoch": best[1],
        "kept_epoch_rule": (
            "the last epoch" if keep == "last" else "the best epoch by validation ROC AUC + type accuracy"
        ),
        "init_from": init_from,
        "n_parameters": n_params,
        "classify_seconds_per_scan_cpu_including_detection": round(classify_seconds, 3),
        "data_seconds": round(data_seconds, 1),
        "training_seconds": round(time.perf_counter() - started, 1),
        "device": torch.cuda.get_device_name(0)
        if device.startswith("cuda")
        else f"CPU, {torch.get_num_threads()} threads",
        "torch": torch.__version__,
        "history": history,
    }
    met = types["type_accuracy"] >= TYPE_ACCURACY_TARGET
    logger.info(
        "test: AUC %.3f (detector candidates %.3f), type accuracy %.3f on %d nodules (target %.2f %s); "
        "FP/scan %.2f -> %.2f",
        test["all_candidates"]["roc_auc"],
        test["detector_candidates"]["roc_auc"],
        types["type_accuracy"],
        types["n_nodules"],
        TYPE_ACCURACY_TARGET,
        "met" if met else "NOT met",
        test["fp_reduction_at_detector_threshold"]["fp_per_scan_before"],
        test["fp_reduction_at_detector_threshold"]["fp_per_scan_after"],
    )
    training_curves_plot(history, out_dir / f"{name}-{version}-curves.png", title=f"{name} {version} (synthetic data)")
    entry = dataclasses.replace(entry, metrics=metrics, provisional=not met)
    register(entry, registry_path)
    write_model_card(entry, registry_path.parent / "MODEL_CARD.md")
    return metrics


def initial_classifier(ref: str, registry_path: Path | None = None) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The architecture and state dict of the registered classifier `ref` to fine-tune (its sha256 verified):
    fine-tuning keeps the architecture of the model it starts from. ValueError when `ref` is no classifier
    (:func:`models.registry.load_classifier` knows the builders) or reads other patches than this recipe's."""
    classifier = load_classifier(ref, registry_path=registry_path)
    entry = classifier.entry
    if entry.preprocessing != PREPROCESSING:
        raise ValueError(
            f"{ref} reads patches {entry.preprocessing.version!r}, not this recipe's {PREPROCESSING.version!r}"
        )
    return entry.architecture, classifier.model.state_dict()


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point: `python -m models.train_classifier --out models/weights`."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("weights"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-train-volumes", type=int, default=120)
    parser.add_argument("--n-detector-volumes", type=int, default=48)
    parser.add_argument("--n-val-volumes", type=int, default=40)
    parser.add_argument("--n-val-detector-volumes", type=int, default=16)
    parser.add_argument("--n-test-volumes", type=int, default=40)
    parser.add_argument("--n-type-test-volumes", type=int, default=160)
    parser.add_argument("--n-thin-test-volumes", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--steps-per-epoch", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--registry", type=Path, default=None)
    parser.add_argument("--detector", default=DETECTOR_REF)
    parser.add_argument("--version", default="0.1.0")
    parser.add_argument("--patch-cache", type=Path, default=None, help="read/write training patches (.npz)")
    parser.add_argument("--min-nodule-mm", type=float, default=MIN_NODULE_DIAMETER_MM, help="smallest phantom nodule")
    parser.add_argument(
        "--archive-share", type=float, default=0.0, help="share of training phantoms on the longitudinal archive's grid"
    )
    parser.add_argument("--eval-grid", choices=sorted(EVAL_GRIDS), default="small", help="validation and test grid")
    parser.add_argument("--max-nodule-mm", type=float, default=MAX_NODULE_DIAMETER_MM, help="largest phantom nodule")
    parser.add_argument("--data-workers", type=int, default=1, help="processes drawing phantoms and detecting")
    parser.add_argument("--width", type=int, default=8, help="channels of the network's first layer")
    parser.add_argument("--init-from", default=None, help="fine-tune this registered classifier (name@version)")
    parser.add_argument("--keep", choices=("best", "last"), default="best", help="which epoch's weights to keep")
    parser.add_argument(
        "--mistake-weight", type=float, default=1.0, help="fine-tuning: draw the rows it gets wrong this many times"
    )
    args = parser.parse_args(argv)
    command = training_command("classifier", sys.argv[1:] if argv is None else argv)
    if args.epochs < 1 or args.steps_per_epoch < 1 or args.batch_size < 2:
        parser.error(
            f"need epochs >= 1, steps >= 1, batch >= 2; got {args.epochs}, {args.steps_per_epoch}, {args.batch_size}"
        )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    train_classifier(
        args.out,
        seed=args.seed,
        n_train_volumes=args.n_train_volumes,
        n_detector_volumes=args.n_detector_volumes,
        n_val_volumes=args.n_val_volumes,
        n_val_detector_volumes=args.n_val_detector_volumes,
        n_test_volumes=args.n_test_volumes,
        n_type_test_volumes=args.n_type_test_volumes,
        n_thin_test_volumes=args.n_thin_test_volumes,
        epochs=args.epochs,
        steps_per_epoch=args.steps_per_epoch,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        device=args.device,
        version=args.version,
        registry_path=args.registry,
        num_threads=args.threads,
        detector_ref=args.detector,
        patch_cache=args.patch_cache,
        command=command,
        recipe=PhantomRecipe(args.min_nodule_mm, args.archive_share, args.eval_grid, args.max_nodule_mm),
        data_workers=args.data_workers,
        width=args.width,
        init_from=args.init_from,
        mistake_weight=args.mistake_weight,
        keep=args.keep,
    )


if __name__ == "__main__":
    main()
