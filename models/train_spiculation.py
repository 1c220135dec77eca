"""Train the learned spiculation model on synthetic phantoms, and compare it with the hand-made score.

    python -m models.train_spiculation --out models/weights --seed 0

Data: :func:`synth.phantom.make_phantom` draws spicules on solid and part-solid nodules (p = 0.25); the label is
the truth's ``spiculated`` flag (ground glass: never). Each true nodule is measured as the worker would measure
a detector candidate: :func:`models.measurement.measure_nodule` from the true centre moved by a voxel (as
:func:`models.measurement.evaluate_on_phantoms` does), and the patch is cut around the MEASURED centre with the
MEASURED mean diameter (what inference sees); where measuring fails, the true centre and diameter with a little
jitter stand in (training only: the worker stores no spiculation for an unmeasured finding, so the evaluation
leaves those nodules out, for the model and the hand-made score alike).

Training phantoms vary the voxel size (slices 1.25..3 mm, in-plane 0.6..1.6 mm); a third of them are on the
longitudinal evaluation's grid (100 x 256 x 256 at 2.5 x 1.4 x 1.4 mm), the grid of the validation and test
phantoms. Seeds: training [9_000_000 + s, i], validation [9_300_000 + s, i], test [9_600_000 + s, i] (the
detector uses 0..2_000_000 + s, the classifier 5_000_000..8_000_000 + s, tests >= 10_000_000). Phantoms are
drawn and measured in `--data-workers` processes.

Patches are cut once with context (40 voxels at the model's patch voxel) and augmented per step: flips on every
axis, 90-degree axial rotations, scaling 0.9..1.1 (a diameter measured 10 % off), shifts of up to a voxel (the
measured centre), HU offset, contrast and noise; batches are half spiculated. The best epoch by validation ROC
AUC (solid and part-solid nodules >= 6 mm) is kept, then its logit is calibrated on the validation nodules
(Platt scaling, folded into the last layer), so that the probability means what it says at the phantoms'
prevalence and the threshold stays 0.5 (:data:`models.measurement.SPICULATED_SCORE`, the workers' threshold).
Test figures by size band compare the model with the hand-made score on the very same measured nodules.
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
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

from models.measurement import SPICULATED_SCORE, measure_nodule
from models.metrics import roc_auc
from models.model_card import write_model_card
from models.patch_augment import augment_patches, center_crop
from models.plots import training_curves_plot
from models.preprocessing import Preprocessing
from models.registry import REGISTRY_PATH, ModelEntry, file_sha256, load_spiculation, register
from models.spiculation import (
    SPICULATION_CATEGORIES,
    PatchGeometry,
    SpiculationModel,
    build_from_architecture,
    extract_nodule_patches,
)
from models.train import EVAL_SHAPE_ZYX, EVAL_SPACING_ZYX_MM  # the archive's grid, as the detector is tested
from synth.nodules import NoduleKind
from synth.phantom import MAX_NODULE_DIAMETER_MM, MIN_NODULE_DIAMETER_MM, make_phantom

logger = logging.getLogger(__name__)

# 0.2.0: 48 voxels over 4.6 radii (0.1.0: 32 over 5), so that the spicules of a 25 mm nodule (1.6 mm thick) still
# span a voxel (1.2 mm, 0.1.0: 2 mm); 0.1.0 missed most spiculated nodules of 15 mm and more.
GEOMETRY = PatchGeometry(patch_size=48, side_radii=4.6, min_side_mm=24.0, supersample=2)
CONTEXT_SIZE = 60  # stored patch side (voxels of the model's patch voxel): room for scaling by 1.1 and shifts
PREPROCESSING = Preprocessing(
    spacing_zyx_mm=(0.5, 0.5, 0.5),  # the patch voxel of nodules up to 10.4 mm; larger nodules: side / 48
    window_hu=(-1000.0, 400.0),
    version="ct-spicule48-4.6r-min24mm-ss2-w1000-400-v1",
)
TRAIN_MIN_NODULE_MM = 6.0  # training and validation phantoms: only nodules that can be 4X (test: from 4 mm)
ARCHITECTURE: dict[str, Any] = {
    "builder": "spiculation_cnn_3d",
    "kwargs": {**dataclasses.asdict(GEOMETRY), "width": 6, "dropout": 0.2},
}
EVAL_NODULES = 5
RELEVANT_MM = 6.0  # Lung-RADS 4X applies to category 3 and 4 nodules: solid and part-solid of 6 mm and more
BANDS: tuple[tuple[str, float, float], ...] = (
    ("6-8 mm", 6.0, 8.0),
    ("8-15 mm", 8.0, 15.0),
    ("15-30 mm", 15.0, 30.0),
    (">= 6 mm", 6.0, float("inf")),
)
KIND_CODES = (NoduleKind.SOLID, NoduleKind.PART_SOLID, NoduleKind.GROUND_GLASS)
THRESHOLD = SPICULATED_SCORE
# Seed offsets: disjoint from each other, the detector's (0..2_000_000 + s), the classifier's
# (5_000_000..8_000_000 + s) and the tests' (>= 10_000_000).
_TRAIN_SEED_OFFSET = 9_000_000
_VAL_SEED_OFFSET = 9_300_000
_TEST_SEED_OFFSET = 9_600_000
SPICULES_KEPT = 3
"""How many of each measured nodule's longest spicules a :class:`NoduleSet` keeps (``spicules_mm``)."""


@dataclass
class NoduleSet:
    """Nodule patches with their truth: `patches` (N, C, C, C) int16 HU (context patches, the model's input is the
    centre crop), `spiculated` (N,) bool, `kind` (N,) index into KIND_CODES, `diameter_mm` (N,) the true mean
    diameter, `measured_mm` (N,) the measured one (nan where measuring failed), `handmade` (N,) the hand-made
    spiculation score 0..1 (nan where measuring failed), `phantom` (N,) index of the phantom, `spacing_mm` (N, 3)
    its voxel size (z, y, x), `spicules_mm` (N, SPICULES_KEPT) the lengths (mm beyond the rim, longest first, 0
    where fewer were found, nan where measuring failed) of the measurement's longest spicules."""

    patches: np.ndarray
    spiculated: np.ndarray
    kind: np.ndarray
    diameter_mm: np.ndarray
    measured_mm: np.ndarray
    handmade: np.ndarray
    phantom: np.ndarray
    spacing_mm: np.ndarray
    spicules_mm: np.ndarray

    def __len__(self) -> int:
        return len(self.spiculated)

    @property
    def measured(self) -> np.ndarray:
        """(N,) bool: measuring succeeded (the worker stores a spiculation for these only)."""
        return ~np.isnan(self.measured_mm)

    def relevant(self, low_mm: float = RELEVANT_MM, high_mm: float = float("inf")) -> np.ndarray:
        """(N,) bool: measured solid or part-solid nodules of `low_mm` to under `high_mm` (true mean diameter)."""
        solid = self.kind != KIND_CODES.index(NoduleKind.GROUND_GLASS)
        return self.measured & solid & (self.diameter_mm >= low_mm) & (self.diameter_mm < high_mm)

    @classmethod
    def concat(cls, sets: list[NoduleSet]) -> NoduleSet:
        return cls(*(np.concatenate([getattr(s, f) for s in sets]) for f in cls.__dataclass_fields__))


def training_grid(rng: np.random.Generator) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
    """A training phantom's grid: a third on the evaluation grid, else slices 1.25..3 mm and in-plane 0.6..1.6 mm
    over about 130 x 330 x 330 mm."""
    if rng.random() < 1 / 3:
        return EVAL_SHAPE_ZYX, EVAL_SPACING_ZYX_MM
    dz, dxy = float(rng.uniform(1.25, 3.0)), float(rng.uniform(0.6, 1.6))
    return (round(130 / dz), round(330 / dxy), round(330 / dxy)), (dz, dxy, dxy)


def phantom_nodules(split: str, seed: int, i: int, max_mm: float = MAX_NODULE_DIAMETER_MM) -> NoduleSet:
    """Draw phantom [seed, i] (`split` "train": :func:`training_grid`, 3..6 nodules; else the evaluation grid,
    EVAL_NODULES nodules; nodules up to `max_mm`), measure every true nodule from its centre moved by a voxel,
    and cut its context patch around the measured centre and diameter (the truth's, jittered, where measuring
    fails)."""
    rng = np.random.default_rng([seed, i])
    min_mm = TRAIN_MIN_NODULE_MM if split in ("train", "val") else MIN_NODULE_DIAMETER_MM
    if split == "train":
        shape, spacing = training_grid(rng)
        count = int(rng.integers(3, 7))
    else:
        shape, spacing, count = EVAL_SHAPE_ZYX, EVAL_SPACING_ZYX_MM, EVAL_NODULES
    phantom = make_phantom(
        rng, shape_zyx=shape, spacing_zyx_mm=spacing, n_nodules=count, min_nodule_mm=min_mm, max_nodule_mm=max_mm
    )
    jitter = np.random.default_rng([seed, i, 1])
    nodules, measured_mm, handmade, spicules = [], [], [], []
    for truth in phantom.nodules:
        offset = jitter.integers(-1, 2, size=3).astype(float)
        if not offset.any():
            offset[int(jitter.integers(3))] = 1.0 if jitter.random() < 0.5 else -1.0
        start = tuple(float(v) for v in np.asarray(truth.center_zyx_vox) + offset)
        try:
            m = measure_nodule(phantom.hu, spacing, start)
            nodules.append((m.center_zyx_vox, m.mean_diameter_mm))
            measured_mm.append(m.mean_diameter_mm)
            handmade.append(m.spiculation)
            spicules.append((list(m.spicule_lengths_mm) + [0.0] * SPICULES_KEPT)[:SPICULES_KEPT])
        except ValueError:
            centre = np.asarray(truth.center_zyx_vox) + jitter.normal(0.0, 0.5, size=3)
            nodules.append((tuple(centre), truth.diameter_mm * float(jitter.uniform(0.85, 1.15))))
            measured_mm.append(np.nan)
            handmade.append(np.nan)
            spicules.append([np.nan] * SPICULES_KEPT)
    patches = extract_nodule_patches(phantom.hu, spacing, nodules, GEOMETRY, size=CONTEXT_SIZE)
    n = len(nodules)
    return NoduleSet(
        patches=patches.round().clamp(-32768, 32767).to(torch.int16).numpy(),
        spiculated=np.array([t.spiculated for t in phantom.nodules], dtype=bool),
        kind=np.array([KIND_CODES.index(t.kind) for t in phantom.nodules], dtype=np.int64),
        diameter_mm=np.array([t.diameter_mm for t in phantom.nodules], dtype=np.float64),
        measured_mm=np.array(measured_mm, dtype=np.float64),
        handmade=np.array(handmade, dtype=np.float64),
        phantom=np.full(n, i, dtype=np.int64),
        spacing_mm=np.tile(np.asarray(spacing, dtype=np.float64), (n, 1)),
        spicules_mm=np.array(spicules, dtype=np.float64).reshape(n, SPICULES_KEPT),
    )


def _init_data_worker() -> None:
    torch.set_num_threads(1)


def build_set(split: str, seed: int, count: int, workers: int, max_mm: float = MAX_NODULE_DIAMETER_MM) -> NoduleSet:
    """The nodules of phantoms [seed, i] for i < `count` (nodules up to `max_mm`), drawn in `workers` processes
    (in order: deterministic)."""
    started = time.perf_counter()
    tasks = [(split, seed, i, max_mm) for i in range(count)]
    sets: list[NoduleSet] = []
    if workers <= 1:
        sets = [phantom_nodules(*t) for t in tasks]
    else:
        context = multiprocessing.get_context("spawn")  # no fork of a process that holds torch's thread pools
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context, initializer=_init_data_worker) as pool:
            for k, result in enumerate(pool.map(phantom_nodules, *zip(*tasks, strict=True)), 1):
                sets.append(result)
                if k % 50 == 0:
                    logger.info("%s: %d/%d phantoms (%.0f s)", split, k, count, time.perf_counter() - started)
    data = NoduleSet.concat(sets)
    logger.info(
        "%s: %d phantoms, %d nodules (%d spiculated; %d measured; %d solid or part-solid >= 6 mm, %d of them "
        "spiculated) in %.0f s",
        split,
        count,
        len(data),
        int(data.spiculated.sum()),
        int(data.measured.sum()),
        int(data.relevant().sum()),
        int(data.spiculated[data.relevant()].sum()),
        time.perf_counter() - started,
    )
    return data


def augment(patches_hu: torch.Tensor, gen: torch.Generator, *, size: int = GEOMETRY.patch_size) -> torch.Tensor:
    """Random training views (B, 1, size, size, size) in [0, 1] of context patches (B, C, C, C) in HU
    (:func:`models.patch_augment.augment_patches`: shifts of up to one patch voxel, noise sd up to 20 HU)."""
    return augment_patches(
        patches_hu, gen, size=size, window_hu=PREPROCESSING.window_hu, max_shift_vox=1.0, max_noise_hu=20.0
    )


def center_view(patches_hu: np.ndarray | torch.Tensor, size: int = GEOMETRY.patch_size) -> torch.Tensor:
    """The model input (B, 1, size, size, size) of context patches: the centre crop (the very patch
    :func:`extract_nodule_patches` cuts at the model's size), windowed."""
    return center_crop(patches_hu, size=size, window_hu=PREPROCESSING.window_hu)


def logits_of(
    model: torch.nn.Module, patches_hu: np.ndarray, *, batch_size: int = 64, device: str = "cpu"
) -> np.ndarray:
    """Spiculation logits (N,) of context patches, the model (on ``device``) in eval mode."""
    model.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(patches_hu), batch_size):
            out.append(model(center_view(patches_hu[start : start + batch_size]).to(device)).float().cpu())
    return torch.cat(out).numpy().astype(np.float64) if out else np.zeros(0)


def auc_or_nan(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC (ties count half), nan without both classes."""
    labels = np.asarray(labels, dtype=bool)
    return roc_auc(labels, scores) if labels.any() and not labels.all() else float("nan")


def fit_platt(logits: np.ndarray, labels: np.ndarray, *, iterations: int = 100) -> tuple[float, float]:
    """(a, b) of the calibrated probability sigmoid(a * logit + b), by Newton's method on the log-loss with
    Platt's smoothed targets (no infinite slope on separable data)."""
    labels = np.asarray(labels, dtype=bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if not n_pos or not n_neg:
        raise ValueError(f"calibration needs both classes, got {n_pos} spiculated and {n_neg} smooth")
    target = np.where(labels, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))
    x = np.stack([np.asarray(logits, dtype=np.float64), np.ones(len(labels))], axis=1)
    w = np.array([1.0, 0.0])
    for _ in range(iterations):
        p = 1 / (1 + np.exp(-(x @ w)))
        gradient = x.T @ (p - target)
        hessian = (x * (p * (1 - p))[:, None]).T @ x + 1e-6 * np.eye(2)
        step = np.linalg.solve(hessian, gradient)
        w -= step
        if np.abs(step).max() < 1e-9:
            break
    return float(w[0]), float(w[1])


def at_threshold(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float | int]:
    """Counts, sensitivity, specificity and accuracy of `scores >= threshold` against `labels`, and the ROC AUC."""
    labels = np.asarray(labels, dtype=bool)
    called = np.asarray(scores) >= threshold
    tp, fn = int((called & labels).sum()), int((~called & labels).sum())
    fp, tn = int((called & ~labels).sum()), int((~called & ~labels).sum())
    return {
        "spiculated": tp + fn,
        "smooth": tn + fp,
        "auc": auc_or_nan(labels, scores),
        "sensitivity": tp / (tp + fn) if tp + fn else float("nan"),
        "specificity": tn / (tn + fp) if tn + fp else float("nan"),
        "accuracy": (tp + tn) / len(labels) if len(labels) else float("nan"),
        "errors": fp + fn,
    }


def compare_by_band(data: NoduleSet, probabilities: np.ndarray, threshold: float) -> dict[str, dict[str, Any]]:
    """Model (`probabilities` at `threshold`) against the hand-made score (at SPICULATED_SCORE) per size band, on
    the same measured solid and part-solid nodules (bands by true mean diameter)."""
    out = {}
    for label, low, high in BANDS:
        group = data.relevant(low, high)
        truth = data.spiculated[group]
        out[label] = {
            "model": at_threshold(truth, probabilities[group], threshold),
            "handmade": at_threshold(truth, data.handmade[group], SPICULATED_SCORE),
        }
    return out


def _sampler(data: NoduleSet, batch_size: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of one batch: half spiculated nodules, half the others (ground glass and small nodules included)."""
    positives, negatives = np.flatnonzero(data.spiculated), np.flatnonzero(~data.spiculated)
    n_pos = batch_size // 2
    return np.concatenate([rng.choice(positives, n_pos), rng.choice(negatives, batch_size - n_pos)])


_CACHE_FIELDS = tuple(NoduleSet.__dataclass_fields__)


def _load_cache(path: Path | None, settings: dict[str, float]) -> dict[str, NoduleSet] | None:
    if path is None or not path.exists():
        return None
    with np.load(path) as data:
        cached = {k: float(data[f"settings_{k}"]) for k in settings if f"settings_{k}" in data}
        if cached != settings:
            raise ValueError(f"patch cache {path} was built with {cached}, not {settings}: delete it or pass another")
        missing = [f for f in _CACHE_FIELDS if f"train_{f}" not in data]
        if missing:
            raise ValueError(f"patch cache {path} lacks {missing} (an older nightscan's): delete it or pass another")
        sets = {s: NoduleSet(*(data[f"{s}_{f}"] for f in _CACHE_FIELDS)) for s in ("train", "val", "test")}
    logger.info("patches read from %s: %s", path, {s: len(v) for s, v in sets.items()})
    return sets


def _save_cache(path: Path, sets: dict[str, NoduleSet], settings: dict[str, float]) -> None:
    arrays = {f"{s}_{f}": getattr(v, f) for s, v in sets.items() for f in _CACHE_FIELDS}
    np.savez(path, **arrays, **{f"settings_{k}": np.array(v) for k, v in settings.items()})
    logger.info("patches written to %s", path)


def _check_inference_path(model: SpiculationModel, data: NoduleSet, probabilities: np.ndarray, seed: int) -> float:
    """Largest |difference| between the cached-patch probabilities of test phantom 0 and those of
    :meth:`SpiculationModel.predict` on the phantom drawn again (the same measurements)."""
    rng = np.random.default_rng([seed, 0])
    phantom = make_phantom(rng, shape_zyx=EVAL_SHAPE_ZYX, spacing_zyx_mm=EVAL_SPACING_ZYX_MM, n_nodules=EVAL_NODULES)
    jitter = np.random.default_rng([seed, 0, 1])
    nodules, rows = [], np.flatnonzero(data.phantom == 0)
    for row, truth in zip(rows, phantom.nodules, strict=True):
        offset = jitter.integers(-1, 2, size=3).astype(float)
        if not offset.any():
            offset[int(jitter.integers(3))] = 1.0 if jitter.random() < 0.5 else -1.0
        if not data.measured[row]:
            jitter.normal(0.0, 0.5, size=3), jitter.uniform(0.85, 1.15)  # keep the draws in step
            continue
        m = measure_nodule(phantom.hu, EVAL_SPACING_ZYX_MM, tuple(np.asarray(truth.center_zyx_vox) + offset))
        nodules.append((row, (m.center_zyx_vox, m.mean_diameter_mm)))
    predicted = model.predict(phantom.hu, EVAL_SPACING_ZYX_MM, [n for _, n in nodules])
    return max((abs(p - probabilities[row]) for (row, _), p in zip(nodules, predicted, strict=True)), default=0.0)


def train_spiculation(
    out_dir: str | Path,
    *,
    seed: int = 0,
    n_train_volumes: int = 240,
    n_val_volumes: int = 50,
    n_test_volumes: int = 60,
    epochs: int = 15,
    steps_per_epoch: int = 40,
    batch_size: int = 32,
    learning_rate: float = 3e-3,
    data_workers: int = 2,
    num_threads: int | None = 2,
    name: str = "nodule-spiculation",
    version: str = "0.2.0",
    registry_path: Path | None = None,
    patch_cache: Path | None = None,
    device: str = "cpu",
    command: str | None = None,
    max_nodule_mm: float = MAX_NODULE_DIAMETER_MM,
    init_from: str | None = None,
) -> dict[str, Any]:
    """Build the nodule patches, train, calibrate on validation, compare with the hand-made score on test, save and
    register. Returns the registered metrics.

    Writes `{name}-{version}.pt` (state_dict) and `{name}-{version}-curves.png` into `out_dir`, the entry into the
    registry (`models/registry.json` unless `registry_path`) and the model card beside it. `patch_cache` (.npz):
    the train, validation and test patches are read from it when it exists (built with the same seed and
    counts), else written to it. ``device``: where the network trains (cpu or cuda); the patches are drawn on
    the CPU and the registered model is evaluated there. ``max_nodule_mm``: the largest phantom nodule (the
    longitudinal archive's grow to 27 mm). ``init_from``: a registered spiculation model (name@version) whose
    weights the training starts from (fine-tuning) instead of random ones.
    """
    started = time.perf_counter()
    if num_threads:
        torch.set_num_threads(num_threads)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    registry_path = registry_path or REGISTRY_PATH

    settings = {
        "seed": seed,
        "train": n_train_volumes,
        "val": n_val_volumes,
        "test": n_test_volumes,
        "max_mm": max_nodule_mm,
    }
    sets = _load_cache(patch_cache, settings)
    if sets is None:
        sets = {
            "train": build_set("train", seed + _TRAIN_SEED_OFFSET, n_train_volumes, data_workers, max_nodule_mm),
            "val": build_set("val", seed + _VAL_SEED_OFFSET, n_val_volumes, data_workers, max_nodule_mm),
            "test": build_set("test", seed + _TEST_SEED_OFFSET, n_test_volumes, data_workers, max_nodule_mm),
        }
        if patch_cache is not None:
            _save_cache(patch_cache, sets, settings)
    train, val, test = sets["train"], sets["val"], sets["test"]
    data_seconds = time.perf_counter() - started
    val_relevant = val.relevant()

    model = build_from_architecture(ARCHITECTURE)
    if init_from is not None:
        model.load_state_dict(load_spiculation(init_from, registry_path=registry_path).model.state_dict())
        logger.info("starting from the weights of %s", init_from)
    model = model.to(device, memory_format=torch.channels_last_3d)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=learning_rate, total_steps=epochs * steps_per_epoch, pct_start=0.15
    )
    history: list[dict[str, float]] = []
    best: tuple[tuple[float, float], int, dict[str, torch.Tensor]] | None = None
    train_started = time.perf_counter()
    for epoch in range(1, epochs + 1):
        model.train()
        losses = []
        for _ in range(steps_per_epoch):
            index = _sampler(train, batch_size, rng)
            inputs = augment(torch.from_numpy(train.patches[index]), gen)
            inputs = inputs.to(device, memory_format=torch.channels_last_3d)
            labels = torch.from_numpy(train.spiculated[index]).float().to(device)
            loss = F.binary_cross_entropy_with_logits(model(inputs), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(float(loss.detach()))
        logits = logits_of(model, val.patches, device=device)
        labels_val = val.spiculated[val_relevant]
        val_loss = float(
            F.binary_cross_entropy_with_logits(torch.from_numpy(logits), torch.from_numpy(val.spiculated).double())
        )
        record = {
            "epoch": epoch,
            "loss": float(np.mean(losses)),
            "val_loss": val_loss,
            "val_auc_ge_6mm": auc_or_nan(labels_val, logits[val_relevant]),
            "val_auc_all": auc_or_nan(val.spiculated[val.measured], logits[val.measured]),
        }
        history.append(record)
        score = (record["val_auc_ge_6mm"], -val_loss)
        if best is None or score > best[0]:
            best = (score, epoch, copy.deepcopy(model.state_dict()))
        logger.info(
            "epoch %d/%d loss %.4f val loss %.4f AUC >= 6 mm %.3f all %.3f (%.0f s)",
            epoch,
            epochs,
            record["loss"],
            val_loss,
            record["val_auc_ge_6mm"],
            record["val_auc_all"],
            time.perf_counter() - train_started,
        )
    if best is None:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    model.load_state_dict(best[2])
    model = model.to("cpu", memory_format=torch.contiguous_format).eval()
    logger.info("best epoch %d (val AUC >= 6 mm %.3f)", best[1], best[0][0])

    # Calibrate on the validation nodules that count (Platt), folded into the head: the threshold stays 0.5.
    raw = logits_of(model, val.patches)
    a, b = fit_platt(raw[val_relevant], val.spiculated[val_relevant])
    if a <= 0:
        raise ValueError(f"calibration slope must be positive, got {a:.4f}: the model ranks validation nodules badly")
    with torch.no_grad():
        model.head.weight.mul_(a)
        model.head.bias.mul_(a).add_(b)
    val_p = 1 / (1 + np.exp(-logits_of(model, val.patches)))
    candidates = np.linspace(0.05, 0.95, 19)
    val_errors = [at_threshold(val.spiculated[val_relevant], val_p[val_relevant], t)["errors"] for t in candidates]
    best_threshold = float(candidates[int(np.argmin(val_errors))])
    validation = {
        "n_scans": n_val_volumes,
        "seeds": f"[{seed + _VAL_SEED_OFFSET}, i]",
        "calibration": {"slope": a, "intercept": b, "on": "measured solid and part-solid nodules >= 6 mm"},
        "at_threshold_ge_6mm": at_threshold(val.spiculated[val_relevant], val_p[val_relevant], THRESHOLD),
        "handmade_ge_6mm": at_threshold(val.spiculated[val_relevant], val.handmade[val_relevant], SPICULATED_SCORE),
        "fewest_errors_threshold": best_threshold,
        "fewest_errors": int(min(val_errors)),
        "errors_at_0.5": at_threshold(val.spiculated[val_relevant], val_p[val_relevant], THRESHOLD)["errors"],
    }
    logger.info(
        "calibrated on validation: a %.3f b %.3f; errors at 0.5: %d, fewest %d at %.2f; hand-made errors %d",
        a,
        b,
        validation["errors_at_0.5"],
        validation["fewest_errors"],
        best_threshold,
        validation["handmade_ge_6mm"]["errors"],
    )

    weights_file = out_dir / f"{name}-{version}.pt"
    torch.save(model.state_dict(), weights_file)
    entry = ModelEntry(
        name=name,
        version=version,
        architecture=ARCHITECTURE,
        weights=os.path.relpath(weights_file.resolve(), registry_path.resolve().parent),
        sha256=file_sha256(weights_file),
        preprocessing=PREPROCESSING,
        categories=list(SPICULATION_CATEGORIES),
        score_threshold=THRESHOLD,
        provisional=True,
        trained_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        training_command=command or f"models.train_spiculation.train_spiculation(seed={seed})",
    )
    spiculation = SpiculationModel(model, entry)
    test_p = 1 / (1 + np.exp(-logits_of(model, test.patches)))
    bands = compare_by_band(test, test_p, THRESHOLD)
    mismatch = _check_inference_path(spiculation, test, test_p, seed + _TEST_SEED_OFFSET)
    logger.info("inference path on test phantom 0: largest |difference| from the cached patches %.2e", mismatch)
    timing_started = time.perf_counter()
    probe = np.full((48, 96, 96), -850.0, dtype=np.float32)
    spiculation.predict(probe, (2.5, 1.4, 1.4), [((24.0, 48.0, 48.0), 10.0)] * 8)
    predict_seconds = (time.perf_counter() - timing_started) / 8
    for label, f in bands.items():
        mo, hm = f["model"], f["handmade"]
        logger.info(
            "test %s: %d spiculated, %d smooth; AUC model %.3f hand-made %.3f; accuracy model %.3f hand-made %.3f; "
            "errors model %d hand-made %d",
            label,
            mo["spiculated"],
            mo["smooth"],
            mo["auc"],
            hm["auc"],
            mo["accuracy"],
            hm["accuracy"],
            mo["errors"],
            hm["errors"],
        )
    metrics: dict[str, Any] = {
        "dataset": f"{n_test_volumes} held-out synthetic phantoms {EVAL_SHAPE_ZYX} at {EVAL_SPACING_ZYX_MM} mm "
        f"(synth.phantom, seeds [{seed + _TEST_SEED_OFFSET}, i], {EVAL_NODULES} nodules each): the measured solid "
        "and part-solid nodules, each measured from its true centre moved by a voxel; bands by true mean diameter",
        "training_data": f"{n_train_volumes} phantoms (seeds [{seed + _TRAIN_SEED_OFFSET}, i], 3..6 nodules of "
        f"{TRAIN_MIN_NODULE_MM:g}..{max_nodule_mm:g} mm; a third "
        f"at {EVAL_SHAPE_ZYX} x {EVAL_SPACING_ZYX_MM} mm, the others slices 1.25..3 mm, in-plane 0.6..1.6 mm): "
        f"{len(train)} nodules, {int(train.spiculated.sum())} spiculated, {int((~train.measured).sum())} not "
        "measured (truth centre and diameter, jittered)",
        "threshold": THRESHOLD,
        "threshold_rule": "0.5 on the calibrated probability (= SPICULATED_SCORE, the workers' threshold)",
        "test_by_band": bands,
        "test_not_measured": int((~test.measured & (test.kind != 2) & (test.diameter_mm >= RELEVANT_MM)).sum()),
        "inference_path_max_difference": mismatch,
        "validation": validation,
        "best_epoch": best[1],
        "n_parameters": sum(p.numel() for p in model.parameters()),
        "predict_seconds_per_nodule_cpu": round(predict_seconds, 4),
        "device": torch.cuda.get_device_name(0) if device.startswith("cuda") else f"CPU, {num_threads} threads",
        "torch": torch.__version__,
        "data_seconds": round(data_seconds, 1),
        "training_seconds": round(time.perf_counter() - started, 1),
        "history": history,
    }
    training_curves_plot(history, out_dir / f"{name}-{version}-curves.png", title=f"{name} {version} (synthetic data)")
    entry = dataclasses.replace(entry, metrics=metrics)
    register(entry, registry_path)
    write_model_card(entry, registry_path.parent / "MODEL_CARD.md", registry_path=registry_path)
    return metrics


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point: `python -m models.train_spiculation --out models/weights`."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("weights"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-train-volumes", type=int, default=240)
    parser.add_argument("--n-val-volumes", type=int, default=50)
    parser.add_argument("--n-test-volumes", type=int, default=60)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--steps-per-epoch", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--data-workers", type=int, default=2, help="processes drawing and measuring phantoms")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--registry", type=Path, default=None)
    parser.add_argument("--version", default="0.2.0")
    parser.add_argument("--device", default="cpu", help="cpu or cuda: where the network trains")
    parser.add_argument("--patch-cache", type=Path, default=None, help="read/write the nodule patches (.npz)")
    parser.add_argument("--max-nodule-mm", type=float, default=MAX_NODULE_DIAMETER_MM, help="largest phantom nodule")
    parser.add_argument("--init-from", default=None, help="registered spiculation model to fine-tune (name@version)")
    args = parser.parse_args(argv)
    if args.epochs < 1 or args.steps_per_epoch < 1 or args.batch_size < 2 or args.data_workers < 1:
        parser.error(
            f"need epochs >= 1, steps >= 1, batch >= 2, data workers >= 1; got {args.epochs}, "
            f"{args.steps_per_epoch}, {args.batch_size}, {args.data_workers}"
        )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    command = shlex.join(["python", "-m", "models.train_spiculation", *(sys.argv[1:] if argv is None else argv)])
    train_spiculation(
        args.out,
        seed=args.seed,
        n_train_volumes=args.n_train_volumes,
        n_val_volumes=args.n_val_volumes,
        n_test_volumes=args.n_test_volumes,
        epochs=args.epochs,
        steps_per_epoch=args.steps_per_epoch,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        data_workers=args.data_workers,
        num_threads=args.threads,
        version=args.version,
        registry_path=args.registry,
        patch_cache=args.patch_cache,
        device=args.device,
        command=command,
        max_nodule_mm=args.max_nodule_mm,
        init_from=args.init_from,
    )


if __name__ == "__main__":
    main()
