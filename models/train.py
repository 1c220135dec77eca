"""Train the provisional nodule detector on synthetic phantoms (in memory, no DICOM round trip).

    python -m models.train --out models/weights --seed 0

Training, validation (threshold choice) and test phantoms come from disjoint seeds. The trained weights,
training curves (PNG) and the registry entry (sha256, preprocessing, threshold, test metrics) are written.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from models.candidates import merge_slice_detections
from models.detector import NODULE_CATEGORIES, build_from_architecture
from models.evaluation import ScanScores, choose_threshold, froc, operating_point, score_scan
from models.inference import detect_slices, slice_stack
from models.model_card import write_model_card
from models.preprocessing import GridMap, Preprocessing
from models.registry import REGISTRY_PATH, ModelEntry, file_sha256, register
from synth.phantom import Phantom, make_phantom

logger = logging.getLogger(__name__)

PREPROCESSING = Preprocessing(
    spacing_zyx_mm=(2.5, 2.5, 2.5), window_hu=(-1000.0, 400.0), version="ct-lung-2.5mm-w1000-400-v1"
)
ARCHITECTURE: dict[str, Any] = {
    "builder": "small_faster_rcnn_2p5d",
    "kwargs": {"num_classes": 2, "width": 32},
}
EVAL_SHAPE_ZYX = (48, 128, 128)
EVAL_SPACING_ZYX_MM = (2.5, 2.5, 2.5)
MIN_DIAMETER_MM = 6.0
MAX_FP_PER_SCAN_FOR_THRESHOLD = 1.0
# Seed offsets keep training, validation and test phantoms disjoint (tests use seeds >= 10_000_000).
_VAL_SEED_OFFSET = 1_000_000
_TEST_SEED_OFFSET = 2_000_000


@dataclass(frozen=True)
class TrainingSlice:
    """One 2.5-D training image: volume index, slice index on the working grid, boxes (N, 4) in pixels."""

    volume: int
    k: int
    boxes: np.ndarray


def training_phantom(rng: np.random.Generator) -> Phantom:
    """A phantom with 1..4 nodules at a randomly varied voxel size (~2-3 mm), so resampling is exercised."""
    spacing = (rng.uniform(1.8, 3.2), rng.uniform(2.2, 2.9), 0.0)
    spacing = (spacing[0], spacing[1], spacing[1])
    shape = (round(120 / spacing[0]), round(320 / spacing[1]), round(320 / spacing[2]))
    return make_phantom(rng, shape_zyx=shape, spacing_zyx_mm=spacing, n_nodules=int(rng.integers(1, 5)))


def slice_boxes(
    nodules_grid: list[tuple[tuple[float, float, float], float]],
    k: int,
    grid_spacing_zyx_mm: tuple[float, float, float],
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


def _grid_nodules(phantom: Phantom, grid: GridMap) -> list[tuple[tuple[float, float, float], float]]:
    return [(grid.to_grid(n.center_zyx_vox), n.diameter_mm) for n in phantom.nodules]


def _augment(image: torch.Tensor, boxes: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random flips (x, y, z), intensity jitter (~±40 HU, ±5 % contrast), extra noise (<= ~30 HU sd)."""
    _, h, w = image.shape
    u = torch.rand(6, generator=gen)
    if u[0] < 0.5:
        image = image.flip(2)
        boxes = torch.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], dim=1)
    if u[1] < 0.5:
        image = image.flip(1)
        boxes = torch.stack([boxes[:, 0], h - boxes[:, 3], boxes[:, 2], h - boxes[:, 1]], dim=1)
    if u[2] < 0.5:
        image = image.flip(0)
    image = image * (0.95 + 0.1 * u[3]) + (u[4] - 0.5) * 0.06
    image = image + torch.randn(image.shape, generator=gen) * (0.02 * u[5])
    return image, boxes


def _evaluate(model: torch.nn.Module, phantoms: list[Phantom], device: str) -> tuple[list[ScanScores], float]:
    """Score every phantom with all candidates kept; returns the scores and mean seconds per scan."""
    model.eval()
    scans = []
    seconds = 0.0
    for phantom in phantoms:
        start = time.perf_counter()
        volume, grid = PREPROCESSING.to_model_grid(phantom.hu, phantom.spacing_zyx_mm)
        detections = detect_slices(model, volume, device=device)
        candidates = merge_slice_detections(detections, grid_spacing_zyx_mm=PREPROCESSING.spacing_zyx_mm, grid=grid)
        seconds += time.perf_counter() - start
        truth = [(n.center_zyx_vox, n.diameter_mm) for n in phantom.nodules]
        scans.append(score_scan(candidates, truth, phantom.spacing_zyx_mm, min_diameter_mm=MIN_DIAMETER_MM))
    return scans, seconds / max(len(phantoms), 1)


def _eval_phantoms(seed: int, n: int) -> list[Phantom]:
    return [
        make_phantom(np.random.default_rng([seed, i]), shape_zyx=EVAL_SHAPE_ZYX, spacing_zyx_mm=EVAL_SPACING_ZYX_MM)
        for i in range(n)
    ]


def _plot_curves(history: list[dict[str, float]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [h["loss"] for h in history], marker="o")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("training loss (sum of Faster R-CNN losses)")
    ax_val.plot(epochs, [h["val_sensitivity"] for h in history], marker="o", label="sensitivity (>= 6 mm)")
    ax_val.plot(epochs, [h["val_cpm"] for h in history], marker="s", label="FROC CPM")
    ax_val.set_xlabel("epoch")
    ax_val.set_ylim(0, 1.05)
    ax_fp = ax_val.twinx()
    ax_fp.plot(epochs, [h["val_fp_per_scan"] for h in history], color="tab:red", marker="^", label="FP / scan")
    ax_fp.set_ylabel("false positives per scan @ 0.5")
    ax_val.legend(loc="lower left")
    ax_fp.legend(loc="lower right")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def train_detector(
    out_dir: str | Path,
    *,
    seed: int = 0,
    n_train_volumes: int = 80,
    n_val_volumes: int = 12,
    n_test_volumes: int = 30,
    epochs: int = 8,
    steps_per_epoch: int = 60,
    batch_size: int = 8,
    learning_rate: float = 2e-3,
    device: str = "cpu",
    name: str = "nodule-detector",
    version: str = "0.1.0",
    registry_path: Path | None = None,
    num_threads: int | None = None,
) -> dict[str, Any]:
    """Train, choose the score threshold on validation phantoms, measure on test phantoms, save and register.

    Returns the registered metrics. Writes `{name}-{version}.pt` (state_dict) and
    `{name}-{version}-curves.png` into `out_dir`, and the entry into the registry (`models/registry.json`
    unless `registry_path`).
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

    logger.info("generating %d training phantoms", n_train_volumes)
    volumes: list[torch.Tensor] = []
    samples: list[TrainingSlice] = []
    for v in range(n_train_volumes):
        phantom = training_phantom(np.random.default_rng([seed, v]))
        volume, grid = PREPROCESSING.to_model_grid(phantom.hu, phantom.spacing_zyx_mm)
        volumes.append(volume)
        nodules = _grid_nodules(phantom, grid)
        for k in range(volume.shape[0]):
            boxes = slice_boxes(nodules, k, PREPROCESSING.spacing_zyx_mm)
            if boxes is not None:
                samples.append(TrainingSlice(v, k, boxes))
    positives = [s for s in samples if len(s.boxes)]
    negatives = [s for s in samples if not len(s.boxes)]
    logger.info("%d positive and %d negative training slices", len(positives), len(negatives))
    val_phantoms = _eval_phantoms(seed + _VAL_SEED_OFFSET, n_val_volumes)

    model = build_from_architecture(ARCHITECTURE).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=1e-4)
    total_steps = epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=learning_rate, total_steps=total_steps, pct_start=0.15
    )
    history: list[dict[str, float]] = []
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
                n_pos = batch_size // 2
                batch = [positives[i] for i in rng.integers(len(positives), size=n_pos)]
                batch += [negatives[i] for i in rng.integers(len(negatives), size=batch_size - n_pos)]
                images, targets = [], []
                for s in batch:
                    image, boxes = _augment(slice_stack(volumes[s.volume], s.k), torch.from_numpy(s.boxes), gen)
                    images.append(image.to(device))
                    targets.append(
                        {
                            "boxes": boxes.to(device),
                            "labels": torch.ones(len(boxes), dtype=torch.int64, device=device),
                        }
                    )
                loss_parts = model(images, targets)
                loss = sum(loss_parts.values())
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                losses.append(float(loss.detach()))
                progress.update(task, advance=1, loss=float(np.mean(losses[-20:])))
            scans, _ = _evaluate(model, val_phantoms, device)
            sensitivity, fp_per_scan = operating_point(scans, 0.5)
            record = {
                "epoch": epoch,
                "loss": float(np.mean(losses)),
                "val_sensitivity": sensitivity,
                "val_fp_per_scan": fp_per_scan,
                "val_cpm": froc(scans)["cpm"],
            }
            history.append(record)
            logger.info(
                "epoch %d/%d loss %.4f val sensitivity %.3f FP/scan %.2f (at 0.5) CPM %.3f",
                epoch,
                epochs,
                record["loss"],
                sensitivity,
                fp_per_scan,
                record["val_cpm"],
            )

    val_scans, _ = _evaluate(model, val_phantoms, device)
    threshold = choose_threshold(val_scans, max_fp_per_scan=MAX_FP_PER_SCAN_FOR_THRESHOLD)
    val_sensitivity, val_fp_per_scan = operating_point(val_scans, threshold)
    logger.info("threshold %.3f chosen on validation (<= %.1f FP/scan)", threshold, MAX_FP_PER_SCAN_FOR_THRESHOLD)

    test_phantoms = _eval_phantoms(seed + _TEST_SEED_OFFSET, n_test_volumes)
    test_scans, seconds_per_scan = _evaluate(model, test_phantoms, device)
    sensitivity, fp_per_scan = operating_point(test_scans, threshold)
    large = [
        ScanScores([s for s, n in zip(scan.nodule_scores, nods, strict=True) if n >= 8.0], scan.false_positive_scores)
        for scan, nods in zip(
            test_scans,
            ([n.diameter_mm for n in p.nodules if n.diameter_mm >= MIN_DIAMETER_MM] for p in test_phantoms),
            strict=True,
        )
    ]
    metrics: dict[str, Any] = {
        "dataset": f"{n_test_volumes} held-out synthetic phantoms {EVAL_SHAPE_ZYX} at "
        f"{EVAL_SPACING_ZYX_MM} mm (synth.phantom, seeds [{seed + _TEST_SEED_OFFSET}, i])",
        "n_test_nodules_ge_6mm": sum(len(s.nodule_scores) for s in test_scans),
        "score_threshold": threshold,
        "sensitivity_ge_6mm": sensitivity,
        "sensitivity_ge_8mm": operating_point(large, threshold)[0],
        "fp_per_scan": fp_per_scan,
        "froc_ge_6mm": froc(test_scans),
        "hit_rule": "candidate centre within diameter/2 of a true nodule centre (LUNA16)",
        "detect_seconds_per_scan_cpu": round(seconds_per_scan, 3),
        "validation": {
            "n_scans": n_val_volumes,
            "threshold_rule": f"lowest with <= {MAX_FP_PER_SCAN_FOR_THRESHOLD} FP/scan",
            "sensitivity_ge_6mm": val_sensitivity,
            "fp_per_scan": val_fp_per_scan,
        },
        "training_seconds": round(time.perf_counter() - started, 1),
    }
    logger.info(
        "test: sensitivity %.3f (>= 6 mm), %.3f (>= 8 mm), %.2f FP/scan at %.3f; %.2f s/scan",
        sensitivity,
        metrics["sensitivity_ge_8mm"],
        fp_per_scan,
        threshold,
        seconds_per_scan,
    )

    weights_file = out_dir / f"{name}-{version}.pt"
    model.to("cpu")
    torch.save(model.state_dict(), weights_file)
    _plot_curves(history, out_dir / f"{name}-{version}-curves.png", f"{name} {version} (synthetic data)")
    metrics["history"] = history
    entry = ModelEntry(
        name=name,
        version=version,
        architecture=ARCHITECTURE,
        weights=os.path.relpath(weights_file.resolve(), registry_path.resolve().parent),
        sha256=file_sha256(weights_file),
        preprocessing=PREPROCESSING,
        categories=list(NODULE_CATEGORIES),
        score_threshold=threshold,
        metrics=metrics,
        provisional=True,
        trained_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        training_command="python -m models.train " + shlex.join(sys.argv[1:])
        if sys.argv[0].endswith("train.py")
        else f"models.train.train_detector(seed={seed}, n_train_volumes={n_train_volumes}, epochs={epochs}, "
        f"steps_per_epoch={steps_per_epoch})",
    )
    register(entry, registry_path)
    write_model_card(entry, registry_path.parent / "MODEL_CARD.md")
    return metrics


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point: `python -m models.train --out models/weights`."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("weights"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-train-volumes", type=int, default=80)
    parser.add_argument("--n-val-volumes", type=int, default=12)
    parser.add_argument("--n-test-volumes", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--steps-per-epoch", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--registry", type=Path, default=None)
    parser.add_argument("--version", default="0.1.0")
    args = parser.parse_args(argv)
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
        registry_path=args.registry,
        num_threads=args.threads,
    )


if __name__ == "__main__":
    main()
