"""How fast the registered detector runs on one study, on the CPU and, where present, on CUDA.

A synthetic chest study of --shape voxels at --spacing mm (default 120 x 256 x 256 at 2.5 x 1.4 x 1.4 mm, the
model issue's reference size) is generated once; each device then runs ``NoduleDetector.detect`` --runs times
after one warm-up run. Reported per device: seconds per study (median), of which preprocessing (resample, crop,
window) and the network, slices per second, and the candidates found, which must agree across devices (CUDA
runs under autocast: fp16/bf16 may move a score slightly). The ratio is CPU seconds over CUDA seconds.

    .venv/bin/python -m bench.detector_speed [--model nodule-detector@0.2.0] [--runs 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time

import numpy as np
import torch

from bench.common import write_result
from models.inference import detect_slices
from models.registry import load_detector
from nightscan.logs import configure_logging
from nightscan.settings import Settings
from synth.phantom import make_phantom

log = logging.getLogger("bench.detector_speed")


def _triple(text: str, kind: type) -> tuple:
    values = tuple(kind(v) for v in text.lower().split("x"))
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"expected ZxYxX, got {text!r}")
    return values


def measure(
    ref: str, device: str, hu: np.ndarray, spacing: tuple[float, float, float], runs: int, batch_size: int
) -> dict:
    """Median seconds per study on `device` (after a warm-up), split into preprocessing and network;
    `batch_size` slices per forward pass."""
    detector = load_detector(ref, device)
    detector.detect(hu, spacing, batch_size=batch_size)  # warm-up: allocations, cuDNN autotuning
    totals, preps, nets = [], [], []
    candidates = []
    for _ in range(runs):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        volume, _ = detector.preprocessing.to_model_grid(hu, spacing)
        t1 = time.perf_counter()
        detect_slices(detector.model, volume, device=device, batch_size=batch_size)
        if device == "cuda":
            torch.cuda.synchronize()
        t2 = time.perf_counter()
        candidates = detector.detect(hu, spacing, batch_size=batch_size)
        preps.append(t1 - t0)
        nets.append(t2 - t1)
        totals.append(t2 - t0)
    slices = detector.preprocessing.grid_shape(hu.shape, spacing)[0]
    seconds = statistics.median(totals)
    return {
        "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
        "seconds_per_study": round(seconds, 3),
        "preprocess_seconds": round(statistics.median(preps), 3),
        "network_seconds": round(statistics.median(nets), 3),
        "slices_per_second": round(slices / statistics.median(nets), 1),
        "candidates": [
            {"center_zyx_vox": [round(c, 1) for c in cand.center_zyx_vox], "score": round(cand.score, 3)}
            for cand in candidates
        ],
    }


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark; print the figures and write bench/results/detector_speed.json."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=Settings().detector, help="name@version (default: the workers' detector)")
    parser.add_argument("--shape", type=lambda t: _triple(t, int), default=(120, 256, 256), help="ZxYxX voxels")
    parser.add_argument("--spacing", type=lambda t: _triple(t, float), default=(2.5, 1.4, 1.4), help="ZxYxX mm")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=16, help="slices per forward pass")
    args = parser.parse_args(argv)
    configure_logging()
    if args.threads:
        torch.set_num_threads(args.threads)
    phantom = make_phantom(np.random.default_rng(args.seed), shape_zyx=args.shape, spacing_zyx_mm=args.spacing)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    results = {}
    for device in devices:
        results[device] = measure(args.model, device, phantom.hu, args.spacing, args.runs, args.batch_size)
        log.info(
            "%s: %.2f s per study (%.2f s preprocessing, %.2f s network, %.0f slices/s), %d candidates",
            results[device]["device"],
            results[device]["seconds_per_study"],
            results[device]["preprocess_seconds"],
            results[device]["network_seconds"],
            results[device]["slices_per_second"],
            len(results[device]["candidates"]),
        )
    figures = {
        "model": args.model,
        "study_shape_zyx": list(args.shape),
        "study_spacing_zyx_mm": list(args.spacing),
        "torch_threads": torch.get_num_threads(),
        "batch_size": args.batch_size,
        "true_nodules": len(phantom.nodules),
        **results,
    }
    if "cuda" in results:
        figures["cpu_over_cuda"] = round(results["cpu"]["seconds_per_study"] / results["cuda"]["seconds_per_study"], 1)
        cpu_c = [tuple(c["center_zyx_vox"]) for c in results["cpu"]["candidates"]]
        cuda_c = [tuple(c["center_zyx_vox"]) for c in results["cuda"]["candidates"]]
        figures["same_candidates"] = len(cpu_c) == len(cuda_c) and all(
            max(abs(a - b) for a, b in zip(p, q, strict=True)) <= 0.5 for p, q in zip(cpu_c, cuda_c, strict=True)
        )
    write_result("detector_speed", figures)


if __name__ == "__main__":
    main()
