"""Fixtures for the real services: PostgreSQL, Redis, an S3 server (moto over HTTP) and Celery workers.

Each service's URL can be overridden by environment. When a service is missing, its tests skip with
the reason; with ``CI=true`` they fail instead, so CI never passes by skipping.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from db.migrate import upgrade
from nightscan.settings import Settings, settings_env

POSTGRES_URL = os.environ.get("NIGHTSCAN_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("NIGHTSCAN_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
ROOT = Path(__file__).resolve().parent.parent


def unavailable(service: str, reason: str) -> None:
    """Skip a test whose service is missing, or fail it under CI."""
    message = f"{service} is not available: {reason}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message} (CI=true: services are required)")
    pytest.skip(message)


def free_port() -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(host: str, port: int, timeout_s: float) -> bool:
    """True once ``host:port`` accepts connections, False after ``timeout_s`` seconds."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.1)
    return False


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[str]:
    """A PostgreSQL database migrated to head by Alembic, used as the template of each test's database."""
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text("select 1"))
    except Exception as exc:
        admin.dispose()
        unavailable("PostgreSQL", f"{POSTGRES_URL}: {exc}")
    name = f"nightscan_tmpl_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    try:
        upgrade(url)
        yield name
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def postgres_url(postgres_template: str) -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for one test; dropped afterwards."""
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    name = f"nightscan_test_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{postgres_template}"'))
    try:
        yield make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A migrated SQLite database file for one test."""
    url = f"sqlite:///{tmp_path / 'nightscan.db'}"
    upgrade(url)
    return url


@pytest.fixture
def redis_url() -> str:
    """The test Redis database, emptied before the test."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.flushdb()
    except redis.exceptions.RedisError as exc:
        unavailable("Redis", f"{REDIS_URL}: {exc}")
    finally:
        client.close()
    return REDIS_URL


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server in a subprocess, over real HTTP."""
    executable = Path(sys.executable).parent / "moto_server"
    if not executable.exists():
        unavailable("moto_server", f"{executable} is not installed (pip install 'moto[server]')")
    port = free_port()
    proc = subprocess.Popen(
        [str(executable), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        if not wait_for_port("127.0.0.1", port, 30):
            unavailable("moto_server", f"did not listen on port {port} within 30 s")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def s3_settings(s3_endpoint: str, tmp_path: Path) -> Settings:
    """Settings that reach the moto server, with a fresh bucket ``s3://<bucket>/archive``."""
    import boto3

    bucket = f"nightscan-{uuid.uuid4().hex[:10]}"
    settings = Settings(
        data_dir=tmp_path,
        series_quiet_s=0,
        archive_url=f"s3://{bucket}/archive",
        s3_endpoint_url=s3_endpoint,
        s3_access_key_id="testing",
        s3_secret_access_key="testing",
    )
    boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    ).create_bucket(Bucket=bucket)
    return settings


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start ``nightscan worker`` subprocesses with given settings; all are stopped after the test."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(settings: Settings, queues: str = "gpu") -> subprocess.Popen[bytes]:
        log = (tmp_path / f"worker-{len(procs)}.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "nightscan.cli", "worker", "--queues", queues],
            env=settings_env(settings),
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for log in sorted(tmp_path.glob("worker-*.log")):
        sys.stderr.write(f"--- {log.name} (last 3000 bytes) ---\n{log.read_bytes()[-3000:].decode(errors='replace')}\n")


def with_settings(base: Settings, **updates: object) -> Settings:
    """A new Settings object: ``base`` with ``updates`` applied (validated again)."""
    return Settings(**{**base.model_dump(), **updates})


def wait_for_analyses(url: str, expected: int, timeout_s: float) -> dict[str, int]:
    """Poll the database at ``url`` until ``expected`` analyses are done or failed; return status counts."""
    from sqlalchemy import func, select

    from db.models import Analysis

    engine = create_engine(url)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            with engine.connect() as conn:
                rows = conn.execute(select(Analysis.status, func.count()).group_by(Analysis.status)).all()
            counts = {status.value: n for status, n in rows}
            if counts.get("done", 0) + counts.get("failed", 0) >= expected or time.monotonic() > deadline:
                return counts
            time.sleep(0.5)
    finally:
        engine.dispose()
