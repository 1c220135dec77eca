"""How fast the scheduler discovers an S3 archive, how little it reads, and that memory stays flat.

An archive of ~20,000 objects (200 synthetic studies x 100 slices) is written to moto's S3 server
over HTTP, then scanned into PostgreSQL twice. Reported: objects per second on the first scan;
header bytes fetched per object (target: at most 64 KiB on average); the ratio of scan rate to the
rate of plain GETs from the same server (the server's own limit); GETs on the re-scan of the
unchanged archive (target: zero); resident memory after the first page and at the peak (flat
memory: the peak does not grow with the archive).

    .venv/bin/python -m bench.scan_speed [--patients 200] [--slices 100]
"""

from __future__ import annotations

import argparse
import logging
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.common import S3_KEY, moto_s3, scratch_database, write_result
from nightscan.logs import configure_logging
from nightscan.progress import progress_bar
from nightscan.runtime import session_factory
from nightscan.settings import Settings
from nightscan.storage import ObjectInfo, Storage, open_storage
from scheduler.scan import scan
from synth.archive import ArchiveOptions, generate_archive

log = logging.getLogger("bench.scan_speed")


class CountingStorage:
    """Wraps a storage and counts its requests and the bytes its GETs return."""

    def __init__(self, inner: Storage) -> None:
        self.inner, self.url = inner, inner.url
        self.lists = self.gets = self.bytes = 0
        self._lock = threading.Lock()

    def _count(self, data: bytes) -> bytes:
        with self._lock:
            self.gets += 1
            self.bytes += len(data)
        return data

    def list(self, prefix: str = "", page_size: int = 1000) -> Iterator[list[ObjectInfo]]:
        for page in self.inner.list(prefix, page_size):
            self.lists += 1
            yield page

    def split(self, prefix: str = "") -> tuple[list[str], list[ObjectInfo]]:
        self.lists += 1
        return self.inner.split(prefix)

    def get(self, key: str) -> bytes:
        return self._count(self.inner.get(key))

    def get_range(self, key: str, start: int, length: int) -> bytes:
        return self._count(self.inner.get_range(key, start, length))

    def put(self, key: str, data: bytes) -> ObjectInfo:
        return self.inner.put(key, data)


def rss_mib() -> float:
    """This process's resident memory now, MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patients", type=int, default=200)
    parser.add_argument("--slices", type=int, default=100)
    parser.add_argument("--port", type=int, default=5099)
    args = parser.parse_args()
    configure_logging("WARNING")
    logging.getLogger("bench").setLevel("INFO")

    with moto_s3(args.port, "archive") as endpoint, scratch_database() as url:
        settings = Settings(
            archive_url="s3://archive/ct",
            database_url=url,
            s3_endpoint_url=endpoint,
            s3_access_key_id=S3_KEY,
            s3_secret_access_key=S3_KEY,
            series_quiet_s=0,
        )
        storage = open_storage(settings.archive_url, settings)
        options = ArchiveOptions(shape_zyx=(args.slices, 64, 64), spacing_zyx_mm=(2.5, 5.0, 5.0))
        with ThreadPoolExecutor(max_workers=16) as uploads, progress_bar("writing", args.patients, "studies") as adv:
            pending = []
            generate_archive(
                lambda k, d: pending.append(uploads.submit(storage.put, k, d)),
                n_patients=args.patients,
                seed=1,
                options=options,
                workers=2,
                on_study=adv,
            )
            for future in pending:
                future.result()
        n_objects = len(pending)

        factory = session_factory(settings)
        counting = CountingStorage(storage)
        memory: list[float] = []
        start = time.perf_counter()
        with progress_bar("first scan", n_objects, "objects") as advance:

            def on_page(n: int, _report: object) -> None:
                memory.append(rss_mib())
                advance(n)

            first = scan(settings.archive_url, settings, factory, send=None, on_page=on_page, storage=counting)
        first_s = time.perf_counter() - start
        first_gets, first_bytes = counting.gets, counting.bytes

        sample = [o.key for page in storage.list() for o in page][:2000]
        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=settings.fetch_threads) as pool:
            list(pool.map(storage.get, sample))
        raw_gets_per_s = len(sample) / (time.perf_counter() - start)

        again = CountingStorage(storage)
        start = time.perf_counter()
        second = scan(settings.archive_url, settings, factory, send=None, storage=again)
        second_s = time.perf_counter() - start
        write_result(
            "scan_speed",
            {
                "command": f"python -m bench.scan_speed --patients {args.patients} --slices {args.slices}",
                "objects": n_objects,
                "indexed": first.status.get("indexed", 0),
                "first_scan_seconds": round(first_s, 1),
                "first_scan_objects_per_s": round(n_objects / first_s, 1),
                "raw_gets_per_s_same_server": round(raw_gets_per_s, 1),
                "ratio_scan_over_raw_gets": round(n_objects / first_s / raw_gets_per_s, 2),
                "header_gets_per_object": round(first_gets / n_objects, 2),
                "header_bytes_per_object_kib": round(first_bytes / n_objects / 1024, 1),
                "mean_object_kib": round(sum(o.size for p in storage.list() for o in p) / n_objects / 1024, 1),
                "rescan_seconds": round(second_s, 1),
                "rescan_gets": again.gets,
                "rescan_list_requests": again.lists,
                "list_parallel": settings.list_parallel,
                "rescan_unchanged": second.unchanged,
                "rss_mib_after_first_page": round(memory[0], 1),
                "rss_mib_at_half": round(memory[len(memory) // 2], 1),
                "rss_mib_peak": round(max(memory), 1),
                "planned_studies": first.planned,
            },
        )


if __name__ == "__main__":
    main()
