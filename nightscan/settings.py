"""The one typed settings object: every URL and knob of nightscan, read from ``NIGHTSCAN_*``.

This is the only module that reads the environment. Defaults are the embedded, no-install set-up
(``file://`` archive, SQLite database, filesystem broker under ``NIGHTSCAN_DATA_DIR``), so that
``make demo`` runs on a machine with nothing but Python. Production sets the URLs.
"""

from __future__ import annotations

import json
import os
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

EMBEDDED_BROKER = "filesystem://localhost/"


class Settings(BaseSettings):
    """All of nightscan's configuration; environment variables are ``NIGHTSCAN_`` + the field name."""

    model_config = SettingsConfigDict(env_prefix="NIGHTSCAN_", env_file=None, extra="ignore")

    data_dir: Path = Field(
        default=Path(".nightscan"),
        description="Local working folder for the embedded defaults (SQLite file, filesystem broker).",
    )
    archive_url: str = Field(
        default="",
        description="Default archive to scan: s3://bucket/prefix or file:///path. Empty: <data_dir>/archive.",
    )
    archive_include: list[str] = Field(
        default_factory=list,
        description='Glob patterns of keys to scan (JSON list, e.g. ["ct/*"]); empty: every key.',
    )
    archive_exclude: list[str] = Field(
        default_factory=list, description='Glob patterns of keys never to scan (JSON list, e.g. ["*.txt"]).'
    )
    list_parallel: int = Field(
        default=4, description="Top-level prefixes of the archive listed at once (1: one listing in key order)."
    )
    database_url: str = Field(
        default="",
        description="SQLAlchemy URL (postgresql+psycopg://host/db). Empty: SQLite at <data_dir>/nightscan.db.",
    )
    broker_url: str = Field(
        default="",
        description="Celery broker URL, e.g. redis://host:6379/0. Empty: the embedded filesystem broker.",
    )
    broker_visibility_timeout_s: int = Field(
        default=7200,
        description="Seconds a Redis message may stay unacked before redelivery; above the task time limit.",
    )
    task_time_limit_s: int = Field(default=1800, description="Hard time limit of one study task, seconds.")
    task_soft_time_limit_s: int | None = Field(
        default=None,
        description="Soft time limit of one study task, seconds: the study stops and is recorded failed. "
        "None: 60 s before the hard limit.",
    )
    worker_soft_shutdown_s: float = Field(
        default=60.0,
        ge=0,
        description="On SIGTERM (and SIGQUIT, SIGINT) a worker stops taking studies and gives the running ones "
        "this many seconds; then it stops them and returns their messages to the broker at once, for another "
        "worker. Keep it below the orchestrator's grace period (docker-compose stop_grace_period).",
    )
    retry_backoff_s: list[float] = Field(
        default_factory=lambda: [10.0, 60.0, 300.0, 600.0],
        description="Seconds before each retry of a study after a transient error (storage or database "
        "unavailable), one entry per retry; after the last, the study goes back to planned.",
    )
    queue_ingest: str = Field(default="ingest", description="Queue for header indexing.")
    queue_gpu: str = Field(default="gpu", description="Queue for study analysis (model inference).")
    queue_cpu: str = Field(default="cpu", description="Queue for per-patient follow-up.")
    max_attempts: int = Field(default=3, description="Attempts before a study is marked failed for good.")
    series_quiet_s: float = Field(
        default=300.0, description="A series is ready once no object of it changed for this many seconds."
    )
    max_outstanding: int = Field(
        default=64, description="Most analyses queued or running at once; the rest wait, planned, in SQL."
    )
    analysis_lease_s: float = Field(
        default=14400.0, description="Seconds an analysis may stay queued or running before it is sent again."
    )
    night_start: str = Field(default="22:00", description="When the nightly run starts (HH:MM, local time).")
    night_end: str = Field(default="06:00", description="When the nightly window closes (HH:MM, local time).")
    index_on_workers: bool = Field(
        default=False, description="Read headers in ingest-queue tasks on CPU workers instead of in the scanner."
    )
    ingest_batch_size: int = Field(default=200, description="Objects per header-indexing task.")
    ingest_wait_s: float = Field(default=3600.0, description="Most seconds a scan waits for its ingest tasks.")
    enqueue_poll_s: float = Field(default=5.0, description="Seconds between enqueue rounds while at the limit.")

    s3_endpoint_url: str | None = Field(default=None, description="S3 endpoint (MinIO, moto); None: AWS.")
    s3_region: str = Field(default="us-east-1", description="S3 region.")
    s3_access_key_id: str | None = Field(default=None, description="S3 access key; None: boto3's chain.")
    s3_secret_access_key: SecretStr | None = Field(default=None, description="S3 secret key.")
    s3_max_connections: int = Field(default=32, description="boto3 connection pool size (GETs in flight).")

    model_store_url: str = Field(
        default="",
        description="Where model weights live (file://, s3://). Empty: the weights shipped in models/weights.",
    )
    detector: str = Field(default="nodule-detector@0.3.0", description="Detector model, name@version.")
    classifier: str | None = Field(
        default="nodule-classifier@0.4.0",
        description="Candidate classifier, name@version, run on the detector's candidates. Empty or 'none': off.",
    )
    spiculation: str | None = Field(
        default="nodule-spiculation@0.2.0",
        description="Spiculation model, name@version, run on each measured finding (its probability is stored in "
        "findings.spiculation). Empty or 'none': the hand-made score of models.measurement.",
    )
    finding_min_score: float | None = Field(
        default=0.05,
        ge=0.0,
        le=1.0,
        description="Detector score (0 to 1) from which candidates are classified; under the detector's "
        "registered threshold one becomes a finding only when the classifier vouches for it "
        "(workers.pipeline.VOUCHED_PROBABILITY). Without a classifier, and None: the detector's "
        "registered threshold (also an empty string or 'none').",
    )
    pipeline: str = Field(default="lung-ct", description="Pipeline name recorded on each analysis.")
    header_bytes: int = Field(default=16384, description="First ranged GET size when reading headers, bytes.")
    fetch_threads: int = Field(default=16, description="Concurrent GETs when fetching a study's objects.")
    decode_processes: int = Field(
        default=0,
        ge=0,
        description="Decoder processes per worker (codecs hold the GIL). 0: one per CPU core; 1: decode in threads.",
    )
    prefetch_studies: int = Field(
        default=1,
        ge=0,
        description="Studies fetched and decoded ahead per device while another runs the models: a gpu-queue "
        "worker runs 1 + this many processes per GPU (or on the CPU alone), taking turns on the device. 0: no "
        "overlap.",
    )
    batch_slices: int = Field(
        default=0,
        ge=0,
        description="Slices per detector batch. 0: 64 on a GPU, 16 on the CPU.",
    )
    irregular_series: Literal["resample", "reject"] = Field(
        default="resample",
        description="Series with a gap (up to 2 missing slices) or gantry tilt: resample to a regular grid "
        "(recorded on the analysis) or reject.",
    )

    pseudonym_key: SecretStr = Field(
        default=SecretStr("nightscan-demo-key-change-me"),
        description="Secret key of the keyed hash (HMAC-SHA256) that replaces PatientID. Set in production.",
    )
    log_level: str = Field(default="INFO", description="Logging level.")

    @field_validator("classifier", "spiculation", "finding_min_score", mode="before")
    @classmethod
    def _no_classifier(cls, value: object) -> object:
        """An empty string or "none" (any case) turns the classifier off (the spiculation model: the hand-made
        score instead; the finding floor: the detector's registered threshold)."""
        if isinstance(value, str) and value.strip().lower() in ("", "none"):
            return None
        return value

    @cached_property
    def resolved_database_url(self) -> str:
        """The database URL, defaulting to a SQLite file in ``data_dir``."""
        return self.database_url or f"sqlite:///{(self.data_dir / 'nightscan.db').resolve()}"

    @cached_property
    def resolved_archive_url(self) -> str:
        """The archive URL, defaulting to ``<data_dir>/archive``."""
        return self.archive_url or (self.data_dir / "archive").resolve().as_uri()

    @cached_property
    def resolved_broker_url(self) -> str:
        """The broker URL, defaulting to the embedded filesystem broker."""
        return self.broker_url or EMBEDDED_BROKER

    @property
    def broker_folder(self) -> Path:
        """Folder of the embedded filesystem broker's messages."""
        return (self.data_dir / "broker").resolve()

    # the read side (reports/): the HTTP API, and where DICOM SR and HTML reports are written
    api_host: str = Field(default="127.0.0.1", description="Address `nightscan api` listens on.")
    api_port: int = Field(default=8765, ge=1, le=65535, description="TCP port `nightscan api` listens on.")
    reports_url: str = Field(
        default="",
        description="Where DICOM SR and HTML reports are written: s3://bucket/prefix or file:///path. "
        "Empty: <data_dir>/reports.",
    )


def get_settings() -> Settings:
    """Build the settings from the environment (a new object each call: no import-time state)."""
    return Settings()


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that gives a subprocess the same settings: this one's, without any ``NIGHTSCAN_``
    variable, plus one for each field that differs from its default."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NIGHTSCAN_")}
    for name, value in settings.model_dump(exclude_defaults=True).items():
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        if isinstance(value, list | dict):
            value = json.dumps(value)  # how pydantic-settings reads complex fields from the environment
        env[f"NIGHTSCAN_{name.upper()}"] = "" if value is None else str(value)
    return env
