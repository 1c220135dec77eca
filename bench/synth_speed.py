"""How fast ``nightscan synth`` writes an archive, against drawing the same studies without writing them.

The issue's target: 50 patients x 2 studies at 256 x 256 x 100 in under 2 minutes on 2 cores.
Ratio reported: archive studies/s (render + DICOM encode + write to a folder, in parallel processes)
over render-only studies/s (one process), measured in the same run.

    .venv/bin/python -m bench.synth_speed [--patients 50] [--workers 2]
"""

from __future__ import annotations

import argparse
import logging
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import write_result
from nightscan.logs import configure_logging
from nightscan.progress import progress_bar
from nightscan.storage import open_storage
from synth.archive import ArchiveOptions, generate_archive
from synth.patients import plan_patient
from synth.render import render_study, scan_grid

log = logging.getLogger("bench.synth_speed")


def render_only(options: ArchiveOptions, seed: int, n_studies: int) -> float:
    """Seconds to draw ``n_studies`` studies (no DICOM, no writing) in this process."""
    start = time.perf_counter()
    done = 0
    index = 0
    while done < n_studies:
        rng = np.random.default_rng([seed, index])
        plan = plan_patient(rng, index, n_studies=2)
        for s, study in enumerate(plan.studies[: n_studies - done]):
            grid = scan_grid(
                plan.anatomy, study.pose, shape_zyx=options.shape_zyx, spacing_zyx_mm=options.spacing_zyx_mm
            )
            nodules = [(t.shape, scale) for t, scale in plan.nodules_at(s)]
            render_study(plan.anatomy, nodules, study.pose, grid, mas=study.mas, rng=np.random.default_rng(s))
            done += 1
        index += 1
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patients", type=int, default=50)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--shape", default="100x256x256")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    configure_logging("WARNING")
    logging.getLogger("bench").setLevel("INFO")
    shape = tuple(int(v) for v in args.shape.split("x"))
    options = ArchiveOptions(shape_zyx=shape, spacing_zyx_mm=(2.5, 1.4, 1.4), studies_per_patient=(2, 2))
    folder = Path(tempfile.mkdtemp(prefix="nightscan-synth-bench-"))
    try:
        storage = open_storage(folder.as_uri())
        start = time.perf_counter()
        with progress_bar("synthesising", total=2 * args.patients, unit="studies") as advance:
            truth = generate_archive(
                storage.put,
                n_patients=args.patients,
                seed=args.seed,
                options=options,
                workers=args.workers,
                on_study=advance,
            )
        archive_s = time.perf_counter() - start
        size_mb = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    n = len(truth.studies)
    sample = min(6, n)
    render_s = render_only(options, args.seed, sample)
    archive_rate, render_rate = n / archive_s, sample / render_s
    write_result(
        "synth_speed",
        {
            "command": "python -m bench.synth_speed "
            f"--patients {args.patients} --workers {args.workers} --shape {args.shape}",
            "patients": args.patients,
            "studies": n,
            "shape_zyx": list(shape),
            "workers": args.workers,
            "archive_seconds": round(archive_s, 1),
            "archive_mb": round(size_mb, 1),
            "archive_studies_per_s": round(archive_rate, 3),
            "render_only_studies_per_s_one_process": round(render_rate, 3),
            "ratio_archive_over_render_only": round(archive_rate / render_rate, 2),
            "peak_memory_mib_parent": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "peak_memory_mib_largest_worker": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024),
            "target": "50 patients x 2 studies at 256 x 256 x 100 in under 120 s on 2 cores",
        },
    )


if __name__ == "__main__":
    main()
