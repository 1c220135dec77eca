"""How fast nightscan decodes 512 x 512 CT slices, per transfer syntax, against the codec on its own.

A synthetic chest (signed 16-bit, 1.25 x 0.7 x 0.7 mm, real anatomy and CT noise: random noise would
compress unrealistically) is encoded in each transfer syntax. Measured on this machine, in slices per
second (the median of --rounds rounds over all slices):

- codec: ``pydicom.pixels.pixel_array(BytesIO(b))`` with the plugin nightscan uses (stored values, no HU),
  and with pydicom's default plugin order (what MONAI and plain pydicom get);
- decode_object: nightscan's whole per-object work in one thread (parse, decode, HU, padding);
- load_series, inline: the series loader with ``DecodePool(1)`` (decoded in the fetching threads);
- load_series, processes: with ``DecodePool(cores)`` (heavy syntaxes go to decoder processes, started
  from one thread before timing), both from bytes held in memory (fetch is a dict lookup), volume included;
- load_series, if heavy: for the syntaxes decoded inline, what the processes would give if the syntax were
  marked heavy (``workers.series.is_heavy`` replaced for that measurement only).

The ratio codec / decode_object is the cost of nightscan's value pipeline (1.0: none).

    .venv/bin/python -m bench.decode_speed [--slices 100] [--syntaxes jpeg-ls-lossless,jpeg2000-lossless]
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from io import BytesIO
from pathlib import Path

import numpy as np
from pydicom.pixels import get_decoder, pixel_array
from rich.console import Console
from rich.table import Table

from bench.common import write_result
from nightscan.logs import configure_logging
from nightscan.progress import progress_bar
from nightscan.settings import Settings
from synth.dicom import EncodeOptions, SeriesHeader, TransferSyntax, series_files
from synth.phantom import make_phantom
from workers import series
from workers.codecs import decoder_for, is_heavy, transfer_syntax_of
from workers.decode import decode_object
from workers.series import DecodePool, load_series

log = logging.getLogger("bench.decode_speed")

SIZE_PX = 512
SPACING_ZYX_MM = (1.25, 0.7, 0.7)
DEFAULT_SYNTAXES = (
    TransferSyntax.EXPLICIT_VR_LITTLE_ENDIAN,
    TransferSyntax.RLE_LOSSLESS,
    TransferSyntax.JPEG_LS_LOSSLESS,
    TransferSyntax.JPEG2000_LOSSLESS,
    TransferSyntax.JPEG_LOSSLESS_SV1,
)
HEADER = SeriesHeader(
    patient_id="BENCH1",
    patient_name="BENCH^DECODE",
    patient_birth_date="19600101",
    patient_sex="F",
    study_uid="1.2.826.0.1.3680043.10.1.1",
    series_uid="1.2.826.0.1.3680043.10.1.2",
    frame_of_reference_uid="1.2.826.0.1.3680043.10.1.3",
    study_date="20260101",
    study_time="120000",
    accession_number="BENCH1",
)
FETCH_THREADS = Settings.model_fields["fetch_threads"].default


def chest_ct(n_slices: int, seed: int) -> np.ndarray:
    """A synthetic chest CT, (n_slices, 512, 512) float32 HU at SPACING_ZYX_MM, with two nodules."""
    start = time.perf_counter()
    hu = make_phantom(
        np.random.default_rng(seed), shape_zyx=(n_slices, SIZE_PX, SIZE_PX), spacing_zyx_mm=SPACING_ZYX_MM, n_nodules=2
    ).hu
    log.info("rendered %d x %d x %d chest in %.1f s", *hu.shape, time.perf_counter() - start)
    return hu


def encode(hu: np.ndarray, syntax: TransferSyntax) -> list[bytes]:
    """One Part 10 object per slice of ``hu``, in ``syntax`` (signed 16-bit, intercept -1024)."""
    return [data for _, data in series_files(hu, SPACING_ZYX_MM, HEADER, options=EncodeOptions(transfer_syntax=syntax))]


def _spin(n: int) -> float:
    start = time.perf_counter()
    total = 0
    for i in range(n):
        total += i
    return time.perf_counter() - start


def effective_cores(n: int = 2_000_000) -> float:
    """How many cores this machine gives us now: one pure-Python loop's time over that of one loop per core at once.

    The machine is shared: with other work running, decoder processes (and threaded codecs) get fewer cores.
    """
    cores = len(os.sched_getaffinity(0))
    with ProcessPoolExecutor(cores, mp_context=multiprocessing.get_context("spawn")) as spinners:
        list(spinners.map(_spin, [1] * cores))
        ratios = []
        for _ in range(3):
            one = _spin(n)
            start = time.perf_counter()
            list(spinners.map(_spin, [n] * cores))
            ratios.append(cores * one / (time.perf_counter() - start))
    return round(statistics.median(ratios), 2)


def default_plugin(uid: str) -> str:
    """The plugin pydicom tries first for ``uid`` when none is named (what MONAI and plain pydicom decode with)."""
    decoder = get_decoder(uid)
    if not uid or not decoder.is_encapsulated:
        return "pydicom (native)"
    return next(iter(getattr(decoder, "_available", {})), "?")


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (the resource tracker, the fork server and its decoder processes)."""
    found: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        try:
            for task in Path(f"/proc/{parent}/task").iterdir():
                children = [int(c) for c in (task / "children").read_text().split()]
                found.extend(children)
                todo.extend(children)
        except OSError:
            continue
    return found


def start_pool(pool: DecodePool, key: str, data: bytes) -> None:
    """Start the pool's decoder processes from this one thread and wait until they have decoded an object each.

    Started this way, before a series, so that timings are of a warm pool, as in a worker after its first series.
    (``DecodePool.submit`` creates its executor without a lock: a first series submitting from its fetch threads
    at once can create several executors, each starting its processes.)
    """
    if pool.inline:
        return
    for future in [pool.submit(key, data) for _ in range(2 * pool.processes)]:
        future.result()


def settle(extra: int, timeout_s: float = 60.0) -> None:
    """Wait until at most ``extra`` processes run below this one (executors left over by a first series stopping)."""
    deadline = time.monotonic() + timeout_s
    while len(descendants(os.getpid())) > extra and time.monotonic() < deadline:
        time.sleep(0.1)


def median_seconds(work: Callable[[], object], rounds: int) -> float:
    """The median wall time of ``rounds`` calls of ``work``."""
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(
    syntax: TransferSyntax, blobs: list[bytes], pools: dict[str, DecodePool], rounds: int, advance: Callable[..., None]
) -> dict[str, object]:
    """The figures of one syntax: sizes, then each rate in slices/s."""
    n = len(blobs)
    uid = transfer_syntax_of(blobs[0])
    _, plugin = decoder_for(uid)
    keys = [f"slice-{k:04d}" for k in range(n)]
    store = dict(zip(keys, blobs, strict=True))
    raw_pixel_bytes = SIZE_PX * SIZE_PX * 2
    mean_bytes = sum(map(len, blobs)) / n
    rates: dict[str, float] = {}

    def run(name: str, work: Callable[[], object]) -> None:
        rates[name] = round(n / median_seconds(work, rounds), 1)
        advance(1, note=f"{syntax.value}: {name} {rates[name]} slices/s")

    run("codec_slices_per_s", lambda: [pixel_array(BytesIO(b), decoding_plugin=plugin) for b in blobs])
    run("codec_pydicom_default_slices_per_s", lambda: [pixel_array(BytesIO(b)) for b in blobs])
    run("decode_object_slices_per_s", lambda: [decode_object(k, store[k]) for k in keys])
    for name, pool in pools.items():
        start_pool(pool, keys[0], blobs[0])
        load_series(keys[:8], store.__getitem__, fetch_threads=FETCH_THREADS, pool=pool)
        run(
            f"load_series_{name}_slices_per_s",
            lambda pool=pool: load_series(keys, store.__getitem__, fetch_threads=FETCH_THREADS, pool=pool),
        )
    if not is_heavy(uid):  # what sending this syntax to the decoder processes too would give
        series.is_heavy = lambda _uid: True
        try:
            run(
                "load_series_if_heavy_slices_per_s",
                lambda: load_series(keys, store.__getitem__, fetch_threads=FETCH_THREADS, pool=pools["processes"]),
            )
        finally:
            series.is_heavy = is_heavy
    volume, _ = load_series(keys, store.__getitem__, fetch_threads=FETCH_THREADS, pool=pools["inline"])
    assert volume.hu.shape == (n, SIZE_PX, SIZE_PX), volume.hu.shape
    return {
        "transfer_syntax_uid": str(uid),
        "nightscan_plugin": plugin or "pydicom (native)",
        "pydicom_default_plugin": default_plugin(str(uid)),
        "heavy": is_heavy(uid),
        "bytes_per_slice": round(mean_bytes),
        "compression_ratio": round(raw_pixel_bytes / mean_bytes, 2),
        **rates,
        "ratio_codec_over_decode_object": round(rates["codec_slices_per_s"] / rates["decode_object_slices_per_s"], 2),
        "ratio_processes_over_inline": round(
            rates["load_series_processes_slices_per_s"] / rates["load_series_inline_slices_per_s"], 2
        ),
    }


def table(figures: dict[str, dict[str, object]], processes: int) -> Table:
    out = Table(title=f"512 x 512 CT slices, slices/s (load_series: {FETCH_THREADS} fetch threads)")
    for column in (
        "syntax",
        "KiB/slice",
        "ratio",
        "codec",
        "codec (pydicom default)",
        "decode_object",
        "codec / decode_object",
        "load_series inline",
        f"load_series {processes} processes",
        "load_series if heavy",
    ):
        out.add_column(column, justify="left" if column == "syntax" else "right")
    for syntax, f in figures.items():
        out.add_row(
            f"{syntax}{' (heavy)' if f['heavy'] else ''}",
            f"{f['bytes_per_slice'] / 1024:.0f}",  # type: ignore[operator]
            f"{f['compression_ratio']:.2f}",
            f"{f['codec_slices_per_s']} ({f['nightscan_plugin']})",
            f"{f['codec_pydicom_default_slices_per_s']} ({f['pydicom_default_plugin']})",
            str(f["decode_object_slices_per_s"]),
            f"{f['ratio_codec_over_decode_object']:.2f}",
            str(f["load_series_inline_slices_per_s"]),
            str(f["load_series_processes_slices_per_s"]),
            str(f.get("load_series_if_heavy_slices_per_s", "-")),
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slices", type=int, default=100)
    parser.add_argument(
        "--syntaxes",
        default=",".join(s.value for s in DEFAULT_SYNTAXES),
        help="comma-separated synth transfer syntaxes (default: %(default)s)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds per figure; the median is reported")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    configure_logging("WARNING")
    logging.getLogger("bench").setLevel("INFO")
    syntaxes = [TransferSyntax(s.strip()) for s in args.syntaxes.split(",") if s.strip()]
    processes = len(os.sched_getaffinity(0))

    hu = chest_ct(args.slices, args.seed)
    load_before, cores_before = os.getloadavg()[0], effective_cores()
    pools = {"inline": DecodePool(1), "processes": DecodePool(max(2, processes))}
    figures: dict[str, dict[str, object]] = {}
    try:
        total = sum(5 if is_heavy(s.uid) else 6 for s in syntaxes)
        with progress_bar("decoding", total=total, unit="figures") as advance:
            for syntax in syntaxes:
                start = time.perf_counter()
                blobs = encode(hu, syntax)
                log.info("%s: encoded %d slices in %.1f s", syntax.value, len(blobs), time.perf_counter() - start)
                figures[syntax.value] = measure(syntax, blobs, pools, args.rounds, advance)
    finally:
        for pool in pools.values():
            pool.close()
    Console(width=180).print(table(figures, pools["processes"].processes))
    write_result(
        "decode_speed",
        {
            "command": f"python -m bench.decode_speed --slices {args.slices} --rounds {args.rounds} "
            f"--syntaxes {','.join(s.value for s in syntaxes)}",
            "slices": args.slices,
            "slice_px": [SIZE_PX, SIZE_PX],
            "content": "synthetic chest (synth.phantom), signed 16-bit, rescale intercept -1024",
            "rounds": args.rounds,
            "statistic": "median of rounds",
            "fetch_threads": FETCH_THREADS,
            "decoder_processes": pools["processes"].processes,
            "load_average_1min_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
            "effective_cores_before_after": [cores_before, effective_cores()],
            "syntaxes": figures,
        },
    )


if __name__ == "__main__":
    main()
