"""How the workers' spiculation reads large nodules: the model alone, the hand-made score of the longest spicule
alone, that of the second-longest alone, and the model and the second combined as the workers combine them
(:func:`models.spiculation.large_nodule_spiculation`), on the same phantoms.

    python -m models.evaluate_spiculation [--phantoms 80] [--max-nodule-mm 30] [--workers 2]

Phantoms: the spiculation training's validation and test draws (:func:`models.train_spiculation.build_set`, seeds
[9300000, i] and [9600000, i] for i < ``--phantoms``, on the longitudinal archive's grid 100 x 256 x 256 at
2.5 x 1.4 x 1.4 mm) with nodules up to ``--max-nodule-mm`` (the archive's grow to 27 mm; the model was trained to
25 mm). Each nodule is measured from a voxel off its true centre, as the training measures it. Counted: solid and
part-solid nodules that measuring found, by true mean diameter band (mm). Prints the table and writes
``bench/results/spiculation_large.json``. About 4 minutes per 80 phantoms on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np

from bench.common import machine
from models.measurement import SPICULATED_SCORE
from models.registry import load_spiculation
from models.spiculation import HANDMADE_FROM_MM, combined_spiculation, several_spicules_score
from models.train_spiculation import _TEST_SEED_OFFSET, _VAL_SEED_OFFSET, NoduleSet, build_set, logits_of
from nightscan.logs import configure_logging

log = logging.getLogger("models.evaluate_spiculation")

BANDS_MM: tuple[tuple[float, float], ...] = ((6.0, 8.0), (8.0, 15.0), (15.0, 31.0), (6.0, 31.0))
RESULT = Path(__file__).resolve().parent.parent / "bench" / "results" / "spiculation_large.json"


def calls(data: NoduleSet, probability: np.ndarray) -> dict[str, np.ndarray]:
    """Which nodules each reading calls spiculated: the model (its probability), the hand-made score of the
    longest spicule (the measurement's own), that of the second-longest (:func:`several_spicules_score`), and the
    workers' reading (:func:`models.spiculation.combined_spiculation` at the MEASURED mean diameter)."""
    handmade = np.nan_to_num(data.handmade)
    second = np.array([several_spicules_score(lengths) for lengths in np.nan_to_num(data.spicules_mm)])
    measured = np.nan_to_num(data.measured_mm)
    workers = np.array(
        [
            combined_spiculation(float(p), float(h), float(d))
            for p, h, d in zip(probability, second, measured, strict=True)
        ]
    )
    return {
        "model": probability >= SPICULATED_SCORE,
        "handmade": handmade >= SPICULATED_SCORE,
        "second_spicule": second >= SPICULATED_SCORE,
        "workers": workers >= SPICULATED_SCORE,
    }


def band_table(data: NoduleSet, called: dict[str, np.ndarray]) -> list[dict[str, object]]:
    """Per band and reading: spiculated called / spiculated, smooth called spiculated / smooth, errors."""
    rows: list[dict[str, object]] = []
    for low, high in BANDS_MM:
        band = data.relevant(low, high)  # measured solid and part-solid nodules of the band
        spiculated, smooth = band & data.spiculated, band & ~data.spiculated
        for name, call in called.items():
            found, false = int((call & spiculated).sum()), int((call & smooth).sum())
            rows.append(
                {
                    "band_mm": [low, high],
                    "reading": name,
                    "spiculated_found": found,
                    "spiculated": int(spiculated.sum()),
                    "smooth_called_spiculated": false,
                    "smooth": int(smooth.sum()),
                    "errors": int(spiculated.sum()) - found + false,
                }
            )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--phantoms", type=int, default=80, help="phantoms per split (validation and test)")
    parser.add_argument("--max-nodule-mm", type=float, default=30.0)
    parser.add_argument("--workers", type=int, default=2, help="processes drawing and measuring phantoms")
    parser.add_argument("--model", default="nodule-spiculation@0.2.0")
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args(argv)
    configure_logging()
    started = time.perf_counter()
    sets = [
        build_set(split, offset, args.phantoms, args.workers, args.max_nodule_mm)
        for split, offset in (("val", _VAL_SEED_OFFSET), ("test", _TEST_SEED_OFFSET))
    ]
    data = NoduleSet.concat(sets)
    model = load_spiculation(args.model)
    probability = 1.0 / (1.0 + np.exp(-logits_of(model.model, data.patches)))
    rows = band_table(data, calls(data, probability))
    for row in rows:
        log.info(
            "%4.0f-%-3.0f mm %-14s spiculated found %3d / %3d, smooth called spiculated %3d / %3d, errors %3d",
            *row["band_mm"],  # type: ignore[misc]
            row["reading"],
            row["spiculated_found"],
            row["spiculated"],
            row["smooth_called_spiculated"],
            row["smooth"],
            row["errors"],
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "what": "spiculation of solid and part-solid phantom nodules by true mean diameter band: the model alone, "
        "the hand-made score of the longest spicule alone, that of the second-longest alone, and the workers' "
        f"reading (the larger of the model and the second from {HANDMADE_FROM_MM} mm of measured mean diameter on)",
        "command": "python -m models.evaluate_spiculation "
        f"--phantoms {args.phantoms} --max-nodule-mm {args.max_nodule_mm:g} --model {args.model}",
        "phantoms": {"validation": [_VAL_SEED_OFFSET, args.phantoms], "test": [_TEST_SEED_OFFSET, args.phantoms]},
        "nodules": len(data),
        "seconds": round(time.perf_counter() - started, 1),
        "machine": machine(),
        "bands": rows,
    }
    args.out.write_text(json.dumps(payload, indent=1) + "\n")
    log.info("written to %s", args.out)


if __name__ == "__main__":
    main()
