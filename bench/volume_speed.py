"""Series to volume: nightscan's series loader against MONAI's ``LoadImage(reader=PydicomReader())``.

One synthetic chest series (default 512 x 512 x 200 at 1.25 x 0.7 x 0.7 mm, signed 16-bit, real anatomy
and CT noise) is written to a local folder per transfer syntax. On the same folder, with a warm page cache:

- MONAI: ``LoadImage(reader=PydicomReader(), image_only=True)(folder)``;
- nightscan: list the folder, ``load_series`` with ``fetch = Path.read_bytes`` and the worker's default
  pool (one decoder process per core; only the heavy syntaxes use it) and fetch threads.

The decoder processes are started before the first run. Each side runs once (the first run, reported on
its own), then --runs times, alternating; reported: median seconds, slices/s, and MONAI's time over
nightscan's (the issue's target: >= 2). The two volumes must be the same: MONAI's array (x, y, z),
transposed to (z, y, x), equal to nightscan's ``Volume.hu`` exactly, and the spacing within 1e-3 mm;
otherwise the script exits with an error. Memory: a fresh process loads each series twice, as a new
worker loads its first series (decoder processes starting) and its next; the rise of its resident memory
over the size of the volume, and what its decoder processes hold.

    .venv/bin/python -m bench.volume_speed [--slices 200] [--runs 3]

MONAI is in the ``bench`` extra: ``pip install -e '.[bench]'``.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from bench.common import write_result
from bench.decode_speed import (
    FETCH_THREADS,
    SPACING_ZYX_MM,
    chest_ct,
    default_plugin,
    descendants,
    effective_cores,
    encode,
    settle,
    start_pool,
)
from nightscan.logs import configure_logging
from nightscan.progress import progress_bar
from synth.dicom import EncodeOptions, TransferSyntax
from workers.codecs import decoder_for
from workers.series import DecodePool, load_series
from workers.volume import Volume

log = logging.getLogger("bench.volume_speed")

DEFAULT_SYNTAXES = (
    TransferSyntax.EXPLICIT_VR_LITTLE_ENDIAN,
    TransferSyntax.JPEG_LS_LOSSLESS,
    TransferSyntax.JPEG2000_LOSSLESS,
)
SPACING_TOLERANCE_MM = 1e-3
MIB = 2**20


def cores() -> int:
    """Decoder processes of the worker's default pool (``NIGHTSCAN_DECODE_PROCESSES=0``): one per core."""
    return max(1, len(os.sched_getaffinity(0)))


def load_nightscan(folder: Path, pool: DecodePool) -> Volume:
    """The folder's series as nightscan's worker loads it, with Path.read_bytes as the fetch."""
    keys = sorted(str(path) for path in folder.iterdir())
    volume, _ = load_series(keys, _read, fetch_threads=FETCH_THREADS, pool=pool)
    return volume


def _read(key: str) -> bytes:
    return Path(key).read_bytes()


def monai_zyx(image: Any) -> tuple[np.ndarray, tuple[float, float, float]]:
    """MONAI's image as (z, y, x) HU and spacing (dz, dy, dx) mm.

    PydicomReader stacks each slice's (rows, columns) array along a last axis, sorted by InstanceNumber, then swaps
    the first two axes: the array is (x, y, z), and ``pixdim`` (from the affine) is (dx, dy, dz).
    """
    array = np.asarray(image.numpy() if hasattr(image, "numpy") else image)
    spacing = tuple(float(v) for v in np.asarray(image.pixdim))
    return array.transpose(2, 1, 0), (spacing[2], spacing[1], spacing[0])


def compare(volume: Volume, image: Any, source_hu: np.ndarray) -> dict[str, Any]:
    """How far MONAI's volume is from nightscan's (and nightscan's from the HU written): exits when they differ."""
    hu, spacing = monai_zyx(image)
    if hu.shape != volume.hu.shape:
        raise SystemExit(f"MONAI's volume has shape {hu.shape} (z, y, x), nightscan's {volume.hu.shape}")
    hu_diff = float(np.max(np.abs(hu.astype(np.float64) - volume.hu)))
    spacing_diff = float(np.max(np.abs(np.subtract(spacing, volume.spacing_zyx_mm))))
    source_diff = float(np.max(np.abs(source_hu - volume.hu)))
    figures = {
        "max_abs_hu_difference_monai_vs_nightscan": hu_diff,
        "max_abs_spacing_difference_mm": round(spacing_diff, 6),
        "monai_spacing_zyx_mm": [round(v, 4) for v in spacing],
        "nightscan_spacing_zyx_mm": [round(v, 4) for v in volume.spacing_zyx_mm],
        "max_abs_hu_difference_nightscan_vs_written": source_diff,
        "identical": hu_diff == 0.0 and spacing_diff <= SPACING_TOLERANCE_MM,
    }
    if not figures["identical"]:
        raise SystemExit(
            f"MONAI and nightscan differ: max |HU difference| {hu_diff}, max |spacing difference| {spacing_diff} mm "
            f"(MONAI {spacing}, nightscan {volume.spacing_zyx_mm})"
        )
    return figures


def rss_mib(pid: int | str = "self", field: str = "VmRSS") -> float:
    """Resident memory of a process now (VmRSS), or its peak so far (VmHWM), MiB; 0 when it has gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class TreeSampler:
    """Samples, every few milliseconds, this process's resident memory and the sum over its descendants'."""

    def __init__(self, interval_s: float = 0.01) -> None:
        self.interval_s = interval_s
        self.peak_children_mib = 0.0
        self.peak_tree_mib = 0.0
        self.most_children = 0
        self.seen: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = os.getpid()
        while not self._stop.is_set():
            below = descendants(me)
            self.most_children = max(self.most_children, len(below))
            self.seen.update(below)
            children = sum(rss_mib(pid) for pid in below)
            self.peak_children_mib = max(self.peak_children_mib, children)
            self.peak_tree_mib = max(self.peak_tree_mib, rss_mib() + children)
            self._stop.wait(self.interval_s)

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def reset_peaks(pids: list[int]) -> None:
    """Set each process's VmHWM back to its current resident memory (Linux 4.0+: clear_refs 5)."""
    for pid in pids:
        with contextlib.suppress(OSError):
            Path(f"/proc/{pid}/clear_refs").write_text("5")


def peak_memory(folder: str, processes: int) -> dict[str, float]:
    """In a fresh process: load the series twice, as a new worker does its first and next series; MiB and seconds.

    The loader's peak is its VmHWM (ru_maxrss would carry the parent's peak over fork and exec), reset before the
    second series; decoder processes: their VmHWM summed (read before they stop), and the sampled peak of their
    summed VmRSS (pages shared between them are counted in each).
    """
    me = os.getpid()
    pool = DecodePool(processes)
    figures: dict[str, float] = {}
    for series in ("first", "next"):
        reset_peaks([me, *descendants(me)])
        before = rss_mib()
        with TreeSampler() as sampler:
            seconds, volume = timed(lambda: load_nightscan(Path(folder), pool))
        peak = rss_mib(field="VmHWM")
        volume_mib = volume.hu.nbytes / MIB
        del volume
        figures |= {
            f"{series}_series_s": round(seconds, 2),
            f"{series}_rss_mib_before": round(before, 1),
            f"{series}_peak_rss_mib_loader": round(peak, 1),
            f"{series}_peak_increase_over_volume": round((peak - before) / volume_mib, 2),
            f"{series}_peak_rss_mib_decoders_sum_of_peaks": round(
                sum(rss_mib(pid, "VmHWM") for pid in descendants(me)), 1
            ),
            f"{series}_peak_rss_mib_decoders_sampled": round(sampler.peak_children_mib, 1),
            f"{series}_processes_below_loader_max": sampler.most_children,
            f"{series}_processes_below_loader_seen": len(sampler.seen),
        }
        settle(processes + 2)
    pool.close()
    return {"volume_mib": round(volume_mib, 1), **figures}


def timed(work: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = work()
    return time.perf_counter() - start, result


def measure(
    syntax: TransferSyntax,
    hu: np.ndarray,
    root: Path,
    pool: DecodePool,
    loader: Callable[[str], Any],
    runs: int,
    advance: Callable[..., None],
) -> dict[str, Any]:
    """Write the series in ``syntax`` and time both loaders on it, after checking that they agree."""
    folder = root / syntax.value
    folder.mkdir()
    blobs = encode(hu, syntax)
    for k, data in enumerate(blobs):
        (folder / f"IM{k + 1:05d}.dcm").write_bytes(data)
    n = len(blobs)
    source = EncodeOptions(transfer_syntax=syntax)
    source_hu = source.stored_from_hu(hu).astype(np.float32) * source.rescale_slope + source.rescale_intercept
    start_pool(pool, "warm-up", blobs[0])
    first_nightscan, volume = timed(lambda: load_nightscan(folder, pool))
    first_monai, image = timed(lambda: loader(str(folder)))
    check = compare(volume, image, source_hu)
    del volume, image
    advance(1, note=f"{syntax.value}: first run, volumes identical")
    nightscan_s, monai_s = [], []
    for run in range(runs):
        seconds, _ = timed(lambda: load_nightscan(folder, pool))
        nightscan_s.append(seconds)
        seconds, _ = timed(lambda: loader(str(folder)))
        monai_s.append(seconds)
        advance(1, note=f"{syntax.value}: run {run + 1}: nightscan {nightscan_s[-1]:.2f} s, MONAI {monai_s[-1]:.2f} s")
    ours, theirs = statistics.median(nightscan_s), statistics.median(monai_s)
    return {
        "transfer_syntax_uid": str(syntax.uid),
        "slices": n,
        "bytes_per_slice": round(sum(map(len, blobs)) / n),
        "nightscan_plugin": decoder_for(str(syntax.uid))[1] or "pydicom (native)",
        "monai_plugin": default_plugin(str(syntax.uid)),
        "nightscan_median_s": round(ours, 3),
        "monai_median_s": round(theirs, 3),
        "nightscan_slices_per_s": round(n / ours, 1),
        "monai_slices_per_s": round(n / theirs, 1),
        "ratio_monai_over_nightscan": round(theirs / ours, 2),
        "nightscan_runs_s": [round(s, 3) for s in nightscan_s],
        "monai_runs_s": [round(s, 3) for s in monai_s],
        "nightscan_first_run_s": round(first_nightscan, 3),
        "monai_first_run_s": round(first_monai, 3),
        **check,
    }


def table(figures: dict[str, dict[str, Any]], shape: tuple[int, ...], processes: int) -> Table:
    out = Table(title=f"series to volume, {' x '.join(map(str, shape[::-1]))} voxels, median s ({processes} cores)")
    for column in (
        "syntax (codec: nightscan / MONAI)",
        "KiB/slice",
        "MONAI s",
        "nightscan s",
        "MONAI slices/s",
        "nightscan slices/s",
        "MONAI / nightscan",
        "first run: MONAI, nightscan s",
        "max |HU diff|",
        "max |spacing diff| mm",
        "first series: peak RSS MiB (rise / volume)",
    ):
        out.add_column(column, justify="left" if column.startswith("syntax") else "right")
    for syntax, f in figures.items():
        memory = f.get("memory", {})
        out.add_row(
            f"{syntax} ({f['nightscan_plugin']} / {f['monai_plugin']})",
            f"{f['bytes_per_slice'] / 1024:.0f}",
            f"{f['monai_median_s']:.2f}",
            f"{f['nightscan_median_s']:.2f}",
            str(f["monai_slices_per_s"]),
            str(f["nightscan_slices_per_s"]),
            f"{f['ratio_monai_over_nightscan']:.2f}",
            f"{f['monai_first_run_s']:.2f}, {f['nightscan_first_run_s']:.2f}",
            f"{f['max_abs_hu_difference_monai_vs_nightscan']:g}",
            f"{f['max_abs_spacing_difference_mm']:g}",
            f"{memory.get('first_peak_rss_mib_loader', 0):.0f} ({memory.get('first_peak_increase_over_volume', 0)})",
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slices", type=int, default=200)
    parser.add_argument(
        "--syntaxes",
        default=",".join(s.value for s in DEFAULT_SYNTAXES),
        help="comma-separated synth transfer syntaxes (default: %(default)s)",
    )
    parser.add_argument("--runs", type=int, default=3, help="timed runs per side after the first; median reported")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--folder",
        type=Path,
        default=None,
        help="folder in which to make the temporary series folder (default: the system's)",
    )
    args = parser.parse_args()
    configure_logging("WARNING")
    logging.getLogger("bench").setLevel("INFO")
    try:
        from monai.data import PydicomReader
        from monai.transforms import LoadImage
    except ImportError:
        sys.exit("MONAI is not installed; it is the reference loader of this benchmark: pip install -e '.[bench]'")
    syntaxes = [TransferSyntax(s.strip()) for s in args.syntaxes.split(",") if s.strip()]
    processes = cores()
    loader = LoadImage(reader=PydicomReader(), image_only=True)

    hu = chest_ct(args.slices, args.seed)
    root = Path(tempfile.mkdtemp(prefix="nightscan-volume-bench-", dir=args.folder))
    load_before, cores_before = os.getloadavg()[0], effective_cores()
    pool = DecodePool(processes)
    figures: dict[str, dict[str, Any]] = {}
    try:
        with progress_bar("series to volume", total=len(syntaxes) * (args.runs + 1), unit="runs") as advance:
            for syntax in syntaxes:
                figures[syntax.value] = measure(syntax, hu, root, pool, loader, args.runs, advance)
        pool.close()
        load_after, cores_after = os.getloadavg()[0], effective_cores()
        spawn = multiprocessing.get_context("spawn")
        for syntax in syntaxes:
            with ProcessPoolExecutor(1, mp_context=spawn) as fresh:
                memory = fresh.submit(peak_memory, str(root / syntax.value), processes).result()
            figures[syntax.value]["memory"] = memory
            log.info("%s: memory %s", syntax.value, memory)
    finally:
        pool.close()
        shutil.rmtree(root, ignore_errors=True)
    Console(width=200).print(table(figures, hu.shape, processes))
    write_result(
        "volume_speed",
        {
            "command": f"python -m bench.volume_speed --slices {args.slices} --runs {args.runs} "
            f"--syntaxes {','.join(s.value for s in syntaxes)}",
            "shape_zyx": list(hu.shape),
            "spacing_zyx_mm": list(SPACING_ZYX_MM),
            "content": "synthetic chest (synth.phantom), signed 16-bit, rescale intercept -1024",
            "storage": "local folder, warm page cache",
            "monai": "LoadImage(reader=PydicomReader(), image_only=True), MONAI " + _monai_version(),
            "nightscan": f"load_series, fetch Path.read_bytes, {FETCH_THREADS} fetch threads, DecodePool({processes})",
            "runs": args.runs,
            "statistic": "median of runs after the first",
            "target": "MONAI time / nightscan time >= 2",
            "all_identical": all(f["identical"] for f in figures.values()),
            "load_average_1min_before_after": [round(load_before, 2), round(load_after, 2)],
            "effective_cores_before_after": [cores_before, cores_after],
            "syntaxes": figures,
        },
    )


def _monai_version() -> str:
    import monai

    return str(monai.__version__)


if __name__ == "__main__":
    main()
