"""The ``nightscan`` command line. Heavy packages (torch, celery) are imported inside the commands."""

from __future__ import annotations

import logging
import os
import sys

import click

from nightscan.logs import configure_logging
from nightscan.settings import Settings, get_settings

log = logging.getLogger("nightscan")


@click.group()
@click.pass_context
def main(ctx: click.Context) -> None:
    """nightscan: overnight deep-learning screening of chest CT archives."""
    settings = get_settings()
    configure_logging(settings.log_level)
    ctx.obj = settings


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
@click.pass_obj
def db_upgrade(settings: Settings, revision: str) -> None:
    """Run the Alembic migrations up to REVISION (SQLite or PostgreSQL)."""
    from db.migrate import upgrade

    upgrade(settings.resolved_database_url, revision)
    log.info("database at revision %s", revision)


@main.command()
@click.argument("source", required=False)
@click.option("--no-enqueue", is_flag=True, help="Index and plan, but send no task.")
@click.pass_obj
def scan(settings: Settings, source: str | None, no_enqueue: bool) -> None:
    """List SOURCE (s3://bucket/prefix or file:///path), index new objects, plan, then enqueue."""
    from nightscan.progress import progress_bar
    from nightscan.runtime import session_factory, task_sender
    from scheduler.scan import scan as run_scan

    url = source or settings.resolved_archive_url
    factory = session_factory(settings)
    send = None if no_enqueue else task_sender(settings)
    with progress_bar("scanning", total=None, unit="objects") as advance:
        report = run_scan(url, settings, factory, send, on_page=advance)
    click.echo(
        f"listed {report.listed} objects ({report.unchanged} unchanged), recorded {report.status}, "
        f"{report.errors} read errors, {report.deleted} deleted; planned {report.planned}, "
        f"enqueued {report.enqueued} studies"
    )


@main.command()
@click.option("--queues", default="gpu", show_default=True, help="Comma-separated queues to consume.")
@click.option("--concurrency", type=int, default=None, help="Pool processes (default: by queue).")
@click.option("--pool", default="prefork", show_default=True)
@click.pass_obj
def worker(settings: Settings, queues: str, concurrency: int | None, pool: str) -> None:
    """Start a Celery worker: gpu -> one process per device; ingest and cpu -> one per core."""
    from workers.app import create_app

    if concurrency is None:
        concurrency = 1 if settings.queue_gpu in queues.split(",") else len(os.sched_getaffinity(0))
    app = create_app(settings)
    app.worker_main(
        [
            "worker",
            f"--queues={queues}",
            f"--concurrency={concurrency}",
            f"--pool={pool}",
            f"--loglevel={settings.log_level}",
            f"--hostname={queues.replace(',', '-')}@%h-{os.getpid()}",
            "--without-gossip",
            "--without-mingle",
        ]
    )


@main.command()
@click.argument("out_url")
@click.option("--patients", type=int, default=4, show_default=True)
@click.option("--studies-per-patient", type=int, default=1, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--truth", type=click.Path(dir_okay=False), default=None, help="Write ground truth JSON here.")
@click.pass_obj
def synth(
    settings: Settings, out_url: str, patients: int, studies_per_patient: int, seed: int, truth: str | None
) -> None:
    """Write a synthetic CT archive with known nodules to OUT_URL (file:// or s3://)."""
    from nightscan.storage import open_storage
    from synth.archive import generate_archive, write_ground_truth

    storage = open_storage(out_url, settings)
    result = generate_archive(storage.put, n_patients=patients, seed=seed, studies_per_patient=studies_per_patient)
    if truth:
        write_ground_truth(result, truth)
    click.echo(f"wrote {len(result.studies)} studies to {out_url}")


@main.command()
@click.option("--patients", type=int, default=4, show_default=True)
@click.option("--timeout", type=float, default=600, show_default=True, help="Seconds to wait for results.")
@click.pass_obj
def demo(settings: Settings, patients: int, timeout: float) -> None:
    """Synthesise an archive, start a worker on the embedded broker, scan, wait, print the findings."""
    from nightscan.demo import run_demo

    sys.exit(run_demo(settings, patients=patients, timeout_s=timeout))


@main.command()
@click.pass_obj
def status(settings: Settings) -> None:
    """Show every study's analysis and findings as a table."""
    from rich.console import Console

    from nightscan.runtime import session_factory
    from nightscan.tables import results_table

    Console().print(results_table(session_factory(settings)))


@main.group()
def models() -> None:
    """The model registry."""


@models.command("list")
def models_list() -> None:
    """List registered models with their version, sha256 and status."""
    from models.registry import list_entries

    for entry in list_entries():
        provisional = " (provisional)" if entry.provisional else ""
        click.echo(f"{entry.name}@{entry.version}  sha256={entry.sha256[:12]}{provisional}")


@models.command("publish")
@click.argument("store_url")
@click.pass_obj
def models_publish(settings: Settings, store_url: str) -> None:
    """Copy the shipped registry and weights to STORE_URL, for NIGHTSCAN_MODEL_STORE_URL."""
    from models.store import publish
    from nightscan.storage import open_storage

    keys = publish(open_storage(store_url, settings))
    click.echo(f"published {len(keys)} objects to {store_url}")


if __name__ == "__main__":
    main()
