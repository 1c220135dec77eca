"""Train the 2.5-D nodule detector on synthetic phantoms (in memory, no DICOM round trip).

    nightscan models train detector --out models/weights --seed 0 --version 0.3.0 [--device cuda]

Training volumes are drawn at varied voxel sizes (0.6-3 mm in-plane, 1.25-3 mm slices) and brought to the
working grid exactly as at inference. Training images are crops of 2.5-D slices: half hold a nodule (each true
nodule equally likely, so small nodules are not outnumbered by the many slices of large ones), half are
random places in the body. Augmentation: flips, right-angle rotations, scaling, HU shift and contrast, noise.
Validation phantoms (a disjoint seed, sized like scans from the archive) give the FROC CPM each epoch and
the score threshold; test phantoms (another seed) give the registered metrics. The trained weights, the
training curves (PNG), the registry entry and the model card are written.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

from models.candidates import merge_slice_detections
from models.detector import NODULE_CATEGORIES, build_from_architecture
from models.evaluation import ScanScores, choose_threshold, froc, operating_point, score_scan, sensitivity_at_fp
from models.inference import detect_slices, slice_stack
from models.model_card import write_model_card
from models.plots import training_curves_plot
from models.preprocessing import GridMap, Preprocessing
from models.registry import REGISTRY_PATH, ModelEntry, file_sha256, register, training_command
from nightscan.progress import progress_bar
from synth.phantom import Phantom, make_phantom

logger = logging.getLogger(__name__)

PREPROCESSING = Preprocessing(
    spacing_zyx_mm=(2.5, 1.25, 1.25),
    window_hu=(-1000.0, 400.0),
    version="ct-lung-2.5x1.25mm-w1000-400-body-v2",
    crop_body=True,
    pad_multiple=8,
)
ARCHITECTURE: dict[str, Any] = {
    "builder": "small_faster_rcnn_2p5d",
    "kwargs": {
        "num_classes": 2,
        "width": 32,
        "anchor_sizes": [3, 4, 6, 10, 16, 28],  # working-grid pixels of 1.25 mm: 3.75 to 35 mm
        "image_size": 256,
        "box_score_thresh": 0.01,  # keep low scores: the FROC curve needs them
        "detections_per_img": 30,
    },
}
CROP_PX = 128  # training crop side on the working grid (160 mm)
EVAL_SHAPE_ZYX = (100, 256, 256)  # like the archive's studies (see `nightscan models evaluate --generate`)
EVAL_SPACING_ZYX_MM = (2.5, 1.4, 1.4)
MIN_DIAMETER_MM = 4.0  # the FROC counts nodules of 4 mm and more (the target's definition)
MIN_TRAINING_NODULE_MM = 3.0  # screening archives hold nodules from 3 mm on (Lung-RADS 2); so does training
MAX_FP_PER_SCAN_FOR_THRESHOLD = 1.0
SMALL_NODULE_MM = 6.0  # below this a nodule is "small" for the fine-tuning emphasis (Lung-RADS 2 solid)
# Seed offsets keep training, validation and test phantoms disjoint (tests use seeds >= 10_000_000).
_VAL_SEED_OFFSET = 1_000_000
_TEST_SEED_OFFSET = 2_000_000

GridNodule = tuple[tuple[float, float, float], float]  # centre (z, y, x) in working-grid voxels, diameter mm


@dataclass(frozen=True)
class TrainingVolume:
    """One phantom on the working grid: windowed float16 (z, y, x) and its nodules."""

    volume: torch.Tensor
    nodules: list[GridNodule]


def training_phantom(rng: np.random.Generator, min_nodule_mm: float = MIN_TRAINING_NODULE_MM) -> Phantom:
    """A phantom with 1 to 6 nodules of ``min_nodule_mm`` to 25 mm at a random voxel size (0.6-3 mm in-plane,
    log-uniform; 1.25-3 mm slices)."""
    pixel = float(np.exp(rng.uniform(np.log(0.6), np.log(3.0))))
    spacing = (float(rng.uniform(1.25, 3.0)), pixel, pixel)
    extent_mm = (float(rng.uniform(90.0, 160.0)), float(rng.uniform(330.0, 380.0)))
    shape = (round(extent_mm[0] / spacing[0]), round(extent_mm[1] / pixel), round(extent_mm[1] / pixel))
    n_nodules = int(rng.integers(1, 7))
    return make_phantom(rng, shape_zyx=shape, spacing_zyx_mm=spacing, n_nodules=n_nodules, min_nodule_mm=min_nodule_mm)


def to_training_volume(phantom: Phantom) -> TrainingVolume:
    """`phantom` on the working grid, as at inference, with its nodules' grid coordinates."""
    volume, grid = PREPROCESSING.to_model_grid(phantom.hu, phantom.spacing_zyx_mm)
    return TrainingVolume(volume.half(), _grid_nodules(phantom, grid))


def _training_volume(seed: int, index: int, min_nodule_mm: float) -> tuple[np.ndarray, list[GridNodule]]:
    """Training volume `index` of `seed` as numpy (what a worker process sends back)."""
    torch.set_num_threads(1)
    tv = to_training_volume(training_phantom(np.random.default_rng([seed, index]), min_nodule_mm))
    return tv.volume.numpy(), tv.nodules


def training_volumes(
    seed: int, n: int, workers: int, min_nodule_mm: float = MIN_TRAINING_NODULE_MM
) -> list[TrainingVolume]:
    """The `n` training volumes of `seed` (seeds [seed, i]), drawn in `workers` processes; the same for any count."""
    out: list[TrainingVolume] = []
    with progress_bar("training phantoms", total=n, unit="volumes") as advance:
        if workers <= 1:
            for i in range(n):
                out.append(to_training_volume(training_phantom(np.random.default_rng([seed, i]), min_nodule_mm)))
                advance(1)
            return out
        with ProcessPoolExecutor(workers) as pool:
            for volume, nodules in pool.map(_training_volume, [seed] * n, range(n), [min_nodule_mm] * n):
                out.append(TrainingVolume(torch.from_numpy(volume), nodules))
                advance(1)
    return out


def slice_boxes(
    nodules_grid: Sequence[GridNodule], k: int, grid_spacing_zyx_mm: tuple[float, float, float]
) -> np.ndarray | None:
    """Boxes (x1, y1, x2, y2) of the nodules ((centre (z, y, x) grid voxels, diameter mm)) cut by slice k.

    A nodule is boxed where the slice cuts it well (|dz| <= 0.8 r); None marks an ambiguous slice (it grazes a
    nodule's cap), which training skips.
    """
    dz, dy, dx = grid_spacing_zyx_mm
    boxes = []
    for (cz, cy, cx), diameter in nodules_grid:
        radius = diameter / 2
        dist = abs(k - cz) * dz
        if dist <= 0.8 * radius:
            half_mm = float(np.sqrt(radius**2 - dist**2))
            hy, hx = max(half_mm / dy, 1.0) + 0.5, max(half_mm / dx, 1.0) + 0.5
            boxes.append([cx + 0.5 - hx, cy + 0.5 - hy, cx + 0.5 + hx, cy + 0.5 + hy])
        elif dist < radius + 1.5:
            return None
    return np.array(boxes, dtype=np.float32).reshape(-1, 4)


def _grid_nodules(phantom: Phantom, grid: GridMap) -> list[GridNodule]:
    return [(grid.to_grid(n.center_zyx_vox), n.diameter_mm) for n in phantom.nodules]


class CropSampler:
    """Draws 2.5-D training crops (image (3, CROP_PX, CROP_PX) in [0, 1], boxes (N, 4) pixels) with augmentation.

    ``small_share`` (0 to 1; None: no emphasis) is the share of positive crops drawn through nodules under
    :data:`SMALL_NODULE_MM` (each of them equally likely), the rest through the others: how a fine-tuning run
    dwells on the small, faint nodules the detector misses most."""

    def __init__(
        self,
        volumes: Sequence[TrainingVolume],
        rng: np.random.Generator,
        crop_px: int = CROP_PX,
        small_share: float | None = None,
    ) -> None:
        self.volumes = volumes
        self.rng = rng
        self.crop_px = crop_px
        self.nodules = [(v, n) for v, tv in enumerate(volumes) for n in range(len(tv.nodules))]
        if not self.nodules:
            raise ValueError(f"the {len(volumes)} training volumes hold no nodule")
        if small_share is not None and not 0.0 <= small_share <= 1.0:
            raise ValueError(f"small_share must be 0 to 1, got {small_share}")
        self.small_share = small_share
        self.small = [(v, n) for v, n in self.nodules if volumes[v].nodules[n][1] < SMALL_NODULE_MM]
        self.large = [(v, n) for v, n in self.nodules if volumes[v].nodules[n][1] >= SMALL_NODULE_MM]

    def _pick(self) -> tuple[int, int]:
        """(volume, nodule) of the next positive crop."""
        pool = self.nodules
        if self.small_share is not None and self.small and self.large:
            pool = self.small if self.rng.random() < self.small_share else self.large
        return pool[int(self.rng.integers(len(pool)))]

    def positive(self) -> tuple[torch.Tensor, torch.Tensor]:
        """A crop through a random nodule (each nodule equally likely, within its size group when ``small_share``
        is set), the nodule anywhere inside it."""
        while True:
            v, n = self._pick()
            tv = self.volumes[v]
            (cz, cy, cx), diameter = tv.nodules[n]
            reach = 0.8 * diameter / 2 / PREPROCESSING.spacing_zyx_mm[0]
            low, high = max(int(np.ceil(cz - reach)), 0), min(int(np.floor(cz + reach)), tv.volume.shape[0] - 1)
            k = int(self.rng.integers(low, high + 1)) if high >= low else int(np.clip(round(cz), 0, high))
            crop = self._crop(tv, k, around=(cy, cx))
            if crop is not None and len(crop[1]):
                return crop

    def negative(self) -> tuple[torch.Tensor, torch.Tensor]:
        """A crop at a random slice and place (it may hold nodules, boxed as usual)."""
        while True:
            tv = self.volumes[int(self.rng.integers(len(self.volumes)))]
            crop = self._crop(tv, int(self.rng.integers(tv.volume.shape[0])), around=None)
            if crop is not None:
                return crop

    def _crop(
        self, tv: TrainingVolume, k: int, around: tuple[float, float] | None
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        boxes = slice_boxes(tv.nodules, k, PREPROCESSING.spacing_zyx_mm)
        if boxes is None:
            return None
        scale = float(np.exp(self.rng.uniform(np.log(0.85), np.log(1.2))))  # >1 enlarges
        side = round(self.crop_px / scale)
        _, height, width = tv.volume.shape
        origin = []
        for axis, extent in ((0, height), (1, width)):
            hi = max(extent - side, 0)
            if around is None:
                origin.append(int(self.rng.integers(hi + 1)))
            else:
                c = around[axis]
                origin.append(int(np.clip(self.rng.uniform(c + 4 - side, c - 4), 0, hi)))
        y0, x0 = origin
        image = slice_stack(tv.volume, k)[:, y0 : y0 + side, x0 : x0 + side].float()
        image = F.pad(image, (0, side - image.shape[2], 0, side - image.shape[1]))
        image = F.interpolate(image[None], size=(self.crop_px, self.crop_px), mode="bilinear", align_corners=False)[0]
        shifted = (boxes - np.array([x0, y0, x0, y0], dtype=np.float32)) * (self.crop_px / side)
        clipped = shifted.clip(0, self.crop_px)
        area = (shifted[:, 2] - shifted[:, 0]) * (shifted[:, 3] - shifted[:, 1])
        visible = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
        return augment(image, torch.from_numpy(clipped[visible >= 0.5 * area]), self.rng)


def augment(image: torch.Tensor, boxes: torch.Tensor, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Flips (x, y, slice order), a right-angle rotation, HU shift (~±40 HU) and contrast (±5 %), noise (<= ~30 HU sd).

    `image` is (3, S, S) windowed to [0, 1]; `boxes` (N, 4) as (x1, y1, x2, y2) pixels.
    """
    size = image.shape[-1]
    u = rng.random(6)
    if u[0] < 0.5:
        image = image.flip(2)
        boxes = torch.stack([size - boxes[:, 2], boxes[:, 1], size - boxes[:, 0], boxes[:, 3]], dim=1)
    if u[1] < 0.5:
        image = image.flip(1)
        boxes = torch.stack([boxes[:, 0], size - boxes[:, 3], boxes[:, 2], size - boxes[:, 1]], dim=1)
    if u[2] < 0.5:
        image = image.flip(0)
    if u[3] < 0.5:  # transpose y and x: with the flips, every right-angle rotation
        image = image.transpose(1, 2)
        boxes = boxes[:, [1, 0, 3, 2]]
    image = image * float(rng.uniform(0.95, 1.05)) + float(rng.uniform(-0.03, 0.03))
    image = image + torch.from_numpy(rng.normal(0.0, 0.02 * u[5], size=image.shape).astype(np.float32))
    return image.contiguous(), boxes.contiguous()


def _evaluate(
    model: torch.nn.Module, phantoms: Sequence[Phantom], device: str
) -> tuple[list[ScanScores], list[ScanScores], float]:
    """Score every phantom with all candidates kept: (>= 4 mm scores, >= 6 mm scores, mean seconds per scan)."""
    model.eval()
    scans, scans_6mm = [], []
    seconds = 0.0
    for phantom in phantoms:
        start = time.perf_counter()
        volume, grid = PREPROCESSING.to_model_grid(phantom.hu, phantom.spacing_zyx_mm)
        detections = detect_slices(model, volume, device=device)
        candidates = merge_slice_detections(detections, grid_spacing_zyx_mm=PREPROCESSING.spacing_zyx_mm, grid=grid)
        seconds += time.perf_counter() - start
        truth = [(n.center_zyx_vox, n.diameter_mm) for n in phantom.nodules]
        scans.append(score_scan(candidates, truth, phantom.spacing_zyx_mm, min_diameter_mm=MIN_DIAMETER_MM))
        scans_6mm.append(score_scan(candidates, truth, phantom.spacing_zyx_mm, min_diameter_mm=6.0))
    return scans, scans_6mm, seconds / max(len(phantoms), 1)


def eval_phantoms(seed: int, n: int) -> list[Phantom]:
    """`n` phantoms sized like the archive's scans (EVAL_SHAPE_ZYX at EVAL_SPACING_ZYX_MM), seeds [seed, i]."""
    return [
        make_phantom(np.random.default_rng([seed, i]), shape_zyx=EVAL_SHAPE_ZYX, spacing_zyx_mm=EVAL_SPACING_ZYX_MM)
        for i in range(n)
    ]


def train_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: Sequence[tuple[torch.Tensor, torch.Tensor]],
    device: str,
) -> float:
    """One optimiser step on `batch` ((image, boxes) pairs); returns the summed Faster R-CNN loss."""
    model.train()
    images = [image.to(device) for image, _ in batch]
    targets = [
        {"boxes": boxes.to(device), "labels": torch.ones(len(boxes), dtype=torch.int64, device=device)}
        for _, boxes in batch
    ]
    loss = sum(model(images, targets).values())
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def train_detector(
    out_dir: str | Path,
    *,
    seed: int = 0,
    n_train_volumes: int = 160,
    n_val_volumes: int = 8,
    n_test_volumes: int = 20,
    epochs: int = 10,
    steps_per_epoch: int = 120,
    batch_size: int = 16,
    learning_rate: float = 2e-3,
    device: str = "cpu",
    name: str = "nodule-detector",
    version: str = "0.4.0",
    min_nodule_mm: float = MIN_TRAINING_NODULE_MM,
    registry_path: Path | None = None,
    num_threads: int | None = None,
    data_workers: int = 1,
    checkpoint_dir: Path | None = None,
    resume: Path | None = None,
    command: str | None = None,
    init_from: str | None = None,
    small_share: float | None = None,
) -> dict[str, Any]:
    """Train, choose the score threshold on validation phantoms, measure on test phantoms, save and register.

            Returns the registered metrics. Writes `{name}-{version}.pt` (state_dict) and
            `{name}-{version}-curves.png` into `out_dir`, and the entry into the registry (`models/registry.json`
            unless `registry_path`) and its model card. `data_workers` processes draw the training phantoms (the same
        volumes for any count). A checkpoint (weights, optimiser, schedule, random states, history) is saved after every
    epoch in `checkpoint_dir` (default `out_dir/checkpoints`); `resume` continues from one of them, with the very
    same result as an uninterrupted run. Deterministic for `seed` on one device and thread count.

    `init_from` ("name@version") fine-tunes that registered detector, in its own architecture, instead of training
    from scratch; `small_share` sets the share of positive crops through nodules under SMALL_NODULE_MM
    (:class:`CropSampler`).
    """
    started = time.perf_counter()
    if num_threads:
        torch.set_num_threads(num_threads)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    registry_path = registry_path or REGISTRY_PATH

    volumes = training_volumes(seed, n_train_volumes, data_workers, min_nodule_mm)
    sampler = CropSampler(volumes, rng, small_share=small_share)
    logger.info("%d training volumes with %d nodules", len(volumes), len(sampler.nodules))
    val_phantoms = eval_phantoms(seed + _VAL_SEED_OFFSET, n_val_volumes)
    data_seconds = time.perf_counter() - started

    architecture, initial = ARCHITECTURE, None
    if init_from is not None:
        architecture, initial = initial_network(init_from, registry_path)
        logger.info("fine-tuning %s", init_from)
    model = build_from_architecture(architecture)
    if initial is not None:
        model.load_state_dict(initial)
    model = model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=learning_rate, total_steps=epochs * steps_per_epoch, pct_start=0.15
    )
    history: list[dict[str, float]] = []
    checkpoints = Path(checkpoint_dir) if checkpoint_dir else out_dir / "checkpoints"
    run = {
        "name": name,
        "version": version,
        "seed": seed,
        "epochs": epochs,
        "steps_per_epoch": steps_per_epoch,
        "min_nodule_mm": min_nodule_mm,
        "init_from": init_from,
        "small_share": small_share,
    }
    first_epoch = 1
    if resume is not None:
        state = torch.load(resume, map_location=device, weights_only=False)
        if state["run"] != run:
            raise ValueError(f"checkpoint {resume} belongs to run {state['run']}, not to {run}")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        rng.bit_generator.state = state["numpy_rng"]
        torch.set_rng_state(state["torch_rng"])
        if device.startswith("cuda") and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        history = state["history"]
        first_epoch = state["epoch"] + 1
        logger.info("resumed from %s after epoch %d", resume, state["epoch"])
    val_scans_6mm: list[ScanScores] | None = None
    with progress_bar("training", total=epochs * steps_per_epoch, unit="steps") as advance:
        advance((first_epoch - 1) * steps_per_epoch)
        for epoch in range(first_epoch, epochs + 1):
            losses = []
            for _ in range(steps_per_epoch):
                n_pos = batch_size // 2
                batch = [sampler.positive() for _ in range(n_pos)]
                batch += [sampler.negative() for _ in range(batch_size - n_pos)]
                losses.append(train_step(model, optimizer, batch, device))
                scheduler.step()
                advance(1)
            val_scans, val_scans_6mm, _ = _evaluate(model, val_phantoms, device)
            record = {
                "epoch": epoch,
                "loss": float(np.mean(losses)),
                "val_cpm_ge_4mm": froc(val_scans)["cpm"],
                "val_sens_at_1fp_ge_6mm": sensitivity_at_fp(val_scans_6mm, 1.0),
            }
            history.append(record)
            logger.info(
                "epoch %d/%d loss %.4f validation CPM (>= 4 mm) %.3f, sensitivity at 1 FP/scan (>= 6 mm) %.3f",
                epoch,
                epochs,
                record["loss"],
                record["val_cpm_ge_4mm"],
                record["val_sens_at_1fp_ge_6mm"],
            )
            checkpoints.mkdir(parents=True, exist_ok=True)
            torch.save(
                {
                    "run": run,
                    "epoch": epoch,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "numpy_rng": rng.bit_generator.state,
                    "torch_rng": torch.get_rng_state(),
                    "cuda_rng": torch.cuda.get_rng_state_all() if device.startswith("cuda") else None,
                    "history": history,
                },
                checkpoints / f"{name}-{version}-epoch{epoch:02d}.pt",
            )
    if val_scans_6mm is None:  # resumed after the last epoch
        _, val_scans_6mm, _ = _evaluate(model, val_phantoms, device)
    train_seconds = time.perf_counter() - started - data_seconds
    # The threshold is chosen on the last epoch's validation scores.

    threshold = choose_threshold(val_scans_6mm, max_fp_per_scan=MAX_FP_PER_SCAN_FOR_THRESHOLD)
    val_sensitivity, val_fp_per_scan = operating_point(val_scans_6mm, threshold)
    logger.info("threshold %.3f chosen on validation (<= %.1f FP/scan)", threshold, MAX_FP_PER_SCAN_FOR_THRESHOLD)

    test_phantoms = eval_phantoms(seed + _TEST_SEED_OFFSET, n_test_volumes)
    test_scans, test_scans_6mm, seconds_per_scan = _evaluate(model, test_phantoms, device)
    sensitivity, fp_per_scan = operating_point(test_scans_6mm, threshold)
    training_data = (
        f"{n_train_volumes} `synth.phantom` volumes (seeds [{seed}, i]) with 1..6 nodules of "
        f"{min_nodule_mm:g}..25 mm (log-uniform) "
        "in a random 90..160 mm of the lungs, voxel size varied (slices 1.25..3 mm, in-plane 0.6..3 mm) and "
        f"resampled to the working grid; {CROP_PX} x {CROP_PX}-pixel crops of 2.5-D slices, half through a nodule "
        + (
            "(each nodule equally likely)"
            if small_share is None
            else f"({small_share:.0%} of them through nodules under {SMALL_NODULE_MM:g} mm)"
        )
        + ", half anywhere in the body. Augmentation: flips on all axes, right-angle "
        "rotations, scaling 0.85..1.2, HU shift and contrast jitter, extra noise"
    )
    if init_from is not None:
        training_data = f"fine-tuned from {init_from} ({epochs} epochs, lr <= {learning_rate:g}) on {training_data}"
    metrics: dict[str, Any] = {
        "dataset": f"{n_test_volumes} held-out synthetic phantoms {EVAL_SHAPE_ZYX} at "
        f"{EVAL_SPACING_ZYX_MM} mm (synth.phantom, seeds [{seed + _TEST_SEED_OFFSET}, i])",
        "n_test_nodules_ge_4mm": sum(len(s.nodule_scores) for s in test_scans),
        "n_test_nodules_ge_6mm": sum(len(s.nodule_scores) for s in test_scans_6mm),
        "score_threshold": threshold,
        "sensitivity_ge_6mm": sensitivity,
        "fp_per_scan": fp_per_scan,
        "froc_ge_4mm": froc(test_scans),
        "froc_ge_6mm": froc(test_scans_6mm),
        "training_data": training_data,
        "hit_rule": "candidate centre within diameter/2 of a true nodule centre (LUNA16)",
        "detect_seconds_per_scan_cpu": round(seconds_per_scan, 3),
        "validation": {
            "n_scans": n_val_volumes,
            "threshold_rule": f"lowest with <= {MAX_FP_PER_SCAN_FOR_THRESHOLD} FP/scan (nodules >= 6 mm)",
            "sensitivity_ge_6mm": val_sensitivity,
            "fp_per_scan": val_fp_per_scan,
        },
        "device": torch.cuda.get_device_name(0) if device.startswith("cuda") else "cpu",
        "torch": torch.__version__,
        "data_seconds": round(data_seconds, 1),
        "training_seconds": round(train_seconds, 1),
    }
    logger.info(
        "test: CPM %.3f (>= 4 mm); sensitivity %.3f (>= 6 mm) at %.2f FP/scan (threshold %.3f); %.2f s/scan",
        metrics["froc_ge_4mm"]["cpm"],
        sensitivity,
        fp_per_scan,
        threshold,
        seconds_per_scan,
    )

    weights_file = out_dir / f"{name}-{version}.pt"
    model.to("cpu")
    torch.save(model.state_dict(), weights_file)
    training_curves_plot(history, out_dir / f"{name}-{version}-curves.png", title=f"{name} {version} (synthetic data)")
    metrics["history"] = history
    entry = ModelEntry(
        name=name,
        version=version,
        architecture=architecture,
        weights=os.path.relpath(weights_file.resolve(), registry_path.resolve().parent),
        sha256=file_sha256(weights_file),
        preprocessing=PREPROCESSING,
        categories=list(NODULE_CATEGORIES),
        score_threshold=threshold,
        metrics=metrics,
        provisional=False,
        trained_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        training_command=command
        or f"models.train.train_detector(seed={seed}, n_train_volumes={n_train_volumes}, epochs={epochs}, "
        f"steps_per_epoch={steps_per_epoch})",
    )
    register(entry, registry_path)
    write_model_card(entry, registry_path.parent / "MODEL_CARD.md", registry_path=registry_path)
    return metrics


def initial_network(ref: str, registry_path: Path | None = None) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The architecture and state dict of the registered detector `ref` to fine-tune (its sha256 verified):
    fine-tuning keeps the architecture of the model it starts from. ValueError naming `ref` when it is not a
    Faster R-CNN of this recipe's builder."""
    from models.registry import load_detector

    detector = load_detector(ref, registry_path=registry_path)
    architecture = detector.entry.architecture
    if architecture.get("builder") != ARCHITECTURE["builder"]:
        builder = architecture.get("builder")
        raise ValueError(f"{ref} is built by {builder!r}, not this recipe's {ARCHITECTURE['builder']!r}")
    return architecture, detector.model.state_dict()


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point: `python -m models.train --out models/weights`."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("weights"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-train-volumes", type=int, default=160)
    parser.add_argument("--n-val-volumes", type=int, default=8)
    parser.add_argument("--n-test-volumes", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--steps-per-epoch", type=int, default=120)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--registry", type=Path, default=None)
    parser.add_argument("--version", default="0.4.0")
    parser.add_argument(
        "--min-nodule-mm", type=float, default=MIN_TRAINING_NODULE_MM, help="smallest training nodule (mm)"
    )
    parser.add_argument("--data-workers", type=int, default=1, help="processes drawing the training phantoms")
    parser.add_argument("--checkpoint-dir", type=Path, default=None, help="default: OUT/checkpoints")
    parser.add_argument("--resume", type=Path, default=None, help="a checkpoint of this run to continue from")
    parser.add_argument("--init-from", default=None, help="fine-tune this registered detector (name@version)")
    parser.add_argument(
        "--small-share",
        type=float,
        default=None,
        help=f"share of positive crops through nodules < {SMALL_NODULE_MM:g} mm",
    )
    args = parser.parse_args(argv)
    command = training_command("detector", sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    train_detector(
        args.out,
        seed=args.seed,
        n_train_volumes=args.n_train_volumes,
        n_val_volumes=args.n_val_volumes,
        n_test_volumes=args.n_test_volumes,
        epochs=args.epochs,
        steps_per_epoch=args.steps_per_epoch,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        device=args.device,
        version=args.version,
        min_nodule_mm=args.min_nodule_mm,
        registry_path=args.registry,
        num_threads=args.threads,
        data_workers=args.data_workers,
        checkpoint_dir=args.checkpoint_dir,
        resume=args.resume,
        command=command,
        init_from=args.init_from,
        small_share=args.small_share,
    )


if __name__ == "__main__":
    main()
