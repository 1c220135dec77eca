"""Shared by the benchmarks: the machine's description, results in bench/results/NAME.json, and the scratch
services a benchmark runs against (moto's S3 server, a fresh PostgreSQL database)."""

from __future__ import annotations

import json
import logging
import os
import platform
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
log = logging.getLogger("bench")


def machine() -> dict[str, Any]:
    """Where a benchmark ran: CPU model, cores available, memory, Python."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "cpu": cpu,
        "cores": len(os.sched_getaffinity(0)),
        "memory_gib": round(memory_gib, 1),
        "python": platform.python_version(),
    }


def write_result(name: str, figures: dict[str, Any]) -> Path:
    """Log ``figures`` and write them with the machine to ``bench/results/NAME.json``."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = {"benchmark": name, "machine": machine(), **figures}
    path.write_text(json.dumps(payload, indent=2) + "\n")
    for key, value in figures.items():
        log.info("%s: %s", key, value)
    log.info("written to %s", path)
    return path


POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
S3_KEY = "bench"  # access key and secret of the local moto server


@contextmanager
def moto_s3(port: int, bucket: str) -> Iterator[str]:
    """moto's S3 server on 127.0.0.1:``port`` with an empty ``bucket``; yields its endpoint; stopped after."""
    import boto3

    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(2)
        endpoint = f"http://127.0.0.1:{port}"
        boto3.client(
            "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=S3_KEY, aws_secret_access_key=S3_KEY
        ).create_bucket(Bucket=bucket)
        yield endpoint
    finally:
        server.terminate()


@contextmanager
def scratch_database(admin_url: str = POSTGRES_URL) -> Iterator[str]:
    """A new PostgreSQL database, migrated to the head, on the server of ``admin_url``; yields its URL; dropped
    after."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from db.migrate import upgrade

    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    database = f"nightscan_bench_{uuid.uuid4().hex[:8]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{database}"'))
        url = make_url(admin_url).set(database=database).render_as_string(hide_password=False)
        upgrade(url)
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        admin.dispose()
