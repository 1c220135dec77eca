"""The ``nightscan`` command line. Heavy packages (torch, celery) are imported inside the commands."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import click

from nightscan.cli_api import api
from nightscan.cli_followup import follow_up
from nightscan.cli_reanalysis import diff, reanalyze
from nightscan.cli_report import report
from nightscan.logs import configure_logging
from nightscan.settings import Settings, get_settings

if TYPE_CHECKING:
    from synth.messy import Mess

log = logging.getLogger("nightscan")

RANK_BY_CHOICES = ("detector", "classifier", "product")
"""The values of models.evaluate.RankBy (not imported here: the CLI imports numpy and torch only in commands)."""


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
@click.argument("sources", nargs=-1)
@click.option("--no-enqueue", is_flag=True, help="Index and plan, but send no task.")
@click.option("--until", "until_text", default=None, help="End of the overnight window, HH:MM local time.")
@click.option("--max-outstanding", type=int, default=None, help="Most analyses queued or running at once.")
@click.option("--include", multiple=True, help="Scan only keys matching this glob (repeatable).")
@click.option("--exclude", multiple=True, help="Never scan keys matching this glob (repeatable).")
@click.pass_obj
def scan(
    settings: Settings,
    sources: tuple[str, ...],
    no_enqueue: bool,
    until_text: str | None,
    max_outstanding: int | None,
    include: tuple[str, ...],
    exclude: tuple[str, ...],
) -> None:
    """List each SOURCE (s3://bucket/prefix or file:///path; default: the archive), index, plan, enqueue.

    With --until, keeps sending as analyses finish until everything planned is sent or the window
    closes; what is left stays planned and the next run resumes. Without it, sends one round.
    """
    from nightscan.progress import progress_bar
    from nightscan.runtime import ingest_sender, session_factory, task_sender
    from scheduler.scan import scan as run_scan

    overrides: dict[str, object] = {}
    if max_outstanding is not None:
        overrides["max_outstanding"] = max_outstanding
    if include:
        overrides["archive_include"] = list(include)
    if exclude:
        overrides["archive_exclude"] = list(exclude)
    if overrides:
        settings = Settings(**{**settings.model_dump(), **overrides})
    until = None
    if until_text:
        from scheduler.nightly import parse_clock, window_end

        try:
            until = window_end(datetime.now().astimezone(), parse_clock(until_text, "--until"))
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--until") from exc
    factory = session_factory(settings)
    send = None if no_enqueue else task_sender(settings)
    for url in sources or (settings.resolved_archive_url,):
        with progress_bar(f"scanning {url}", total=None, unit="objects") as advance:
            report = run_scan(
                url,
                settings,
                factory,
                send,
                on_page=lambda n, r: advance(n, ", ".join(f"{k} {v}" for k, v in sorted(r.status.items()))),
                until=until,
                wait_while_full=until is not None,
                ingest=ingest_sender(settings),
            )
        click.echo(
            f"{url}: listed {report.listed} objects ({report.unchanged} unchanged), recorded {report.status}, "
            f"{report.errors} read errors, {report.deleted} deleted; planned {report.planned} "
            f"({report.waiting} studies still settling), enqueued {report.enqueued}, {report.remaining} left "
            f"({report.stopped})"
        )


@main.command()
@click.option("--queues", default="gpu", show_default=True, help="Comma-separated queues to consume.")
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=None,
    help="Pool processes. Default by queue: gpu -> one per GPU (CUDA_VISIBLE_DEVICES, else the GPUs the NVIDIA "
    "driver lists; 1 without a GPU), times 1 + NIGHTSCAN_PREFETCH_STUDIES (they take turns on the device while "
    "the others fetch and decode; default 1); ingest and cpu -> one per CPU core.",
)
@click.option(
    "--pool",
    type=click.Choice(["prefork", "threads", "solo"]),
    default="prefork",
    show_default=True,
    help="Celery pool. prefork: one process per slot (a GPU worker pins each process to its own GPU).",
)
@click.pass_obj
def worker(settings: Settings, queues: str, concurrency: int | None, pool: str) -> None:
    """Start a Celery worker: gpu -> (1 + prefetch) processes per GPU; ingest and cpu -> one per core.

    SIGTERM starts a soft shutdown: running studies get NIGHTSCAN_WORKER_SOFT_SHUTDOWN_S seconds, then
    their messages go back to the broker at once (Celery's REMAP_SIGTERM=SIGQUIT, set here unless given).
    """
    os.environ.setdefault("REMAP_SIGTERM", "SIGQUIT")  # read by billiard when celery is first imported, below
    from billiard.common import REMAP_SIGTERM

    from workers.app import create_app, visible_devices, worker_plan

    if REMAP_SIGTERM != "SIGQUIT":
        log.warning("REMAP_SIGTERM is %r: SIGTERM waits for running studies however long they take", REMAP_SIGTERM)

    names = [q.strip() for q in queues.split(",") if q.strip()]
    plan = worker_plan(
        names,
        settings,
        devices=visible_devices(),
        cpus=len(os.sched_getaffinity(0)),
        pool=pool,
        concurrency=concurrency,
    )
    log.info(
        "worker on %s: %s pool, %d processes, GPUs %s",
        ",".join(names),
        plan.pool,
        plan.concurrency,
        ",".join(plan.devices) or "none (CPU)",
    )
    app = create_app(settings, devices=plan.devices)
    app.worker_main(
        [
            "worker",
            f"--queues={','.join(names)}",
            f"--concurrency={plan.concurrency}",
            f"--pool={plan.pool}",
            f"--loglevel={settings.log_level}",
            f"--hostname={'-'.join(names)}@%h-{os.getpid()}",
            "--without-gossip",
            "--without-mingle",
        ]
    )


@main.command()
@click.pass_obj
def beat(settings: Settings) -> None:
    """Run Celery beat: it starts the nightly run at NIGHTSCAN_NIGHT_START on the cpu queue."""
    from celery.apps.beat import Beat

    from workers.app import create_app

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    Beat(app=create_app(settings), loglevel=settings.log_level).run()


@main.command()
@click.pass_obj
def nightly(settings: Settings) -> None:
    """Claim tonight and run it now, until NIGHTSCAN_NIGHT_END (for cron instead of beat)."""
    from nightscan.runtime import ingest_sender, session_factory, task_sender
    from scheduler.nightly import run_night

    report = run_night(settings, session_factory(settings), task_sender(settings), ingest=ingest_sender(settings))
    click.echo("tonight is already claimed by another scheduler" if report is None else f"night run: {report}")


@main.command()
def codecs() -> None:
    """List the transfer syntaxes workers decode, the codec installed for each, and what to install if missing."""
    from rich.console import Console
    from rich.table import Table

    from workers.codecs import codec_status

    table = Table(title="pixel data codecs")
    for column in ("transfer syntax UID", "name", "decoded by", "packages"):
        table.add_column(column, overflow="fold")
    for uid, name, available, packages in codec_status():
        table.add_row(uid, name, available if available != "MISSING" else "[red]MISSING[/red]", packages)
    Console().print(table)


@main.command()
@click.argument("out_url")
@click.option("--patients", type=int, default=4, show_default=True)
@click.option("--studies", default="1", show_default=True, help="Studies per patient: N or LOW-HIGH (1 to 4).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--shape", default="100x128x128", show_default=True, help="Voxels per study, ZxYxX.")
@click.option("--spacing", default="2.5x2.5x2.5", show_default=True, help="Voxel size in mm, ZxYxX.")
@click.option("--layout", type=click.Choice(["hierarchical", "flat", "mixed"]), default="hierarchical")
@click.option("--transfer-syntax", default="explicit-vr-little-endian", show_default=True)
@click.option("--unsigned", is_flag=True, help="Store pixels as unsigned 12-bit instead of signed 16-bit.")
@click.option("--mess", "mess_names", multiple=True, help="Messy-world options, or 'all' (repeatable).")
@click.option("--workers", type=int, default=1, show_default=True, help="Processes drawing patients.")
@click.option("--truth", type=click.Path(dir_okay=False), default=None, help="Write the ground truth JSON here.")
@click.option("--preview", type=click.Path(dir_okay=False), default=None, help="Write a PNG montage here.")
@click.pass_obj
def synth(
    settings: Settings,
    out_url: str,
    patients: int,
    studies: str,
    seed: int,
    shape: str,
    spacing: str,
    layout: str,
    transfer_syntax: str,
    unsigned: bool,
    mess_names: tuple[str, ...],
    workers: int,
    truth: str | None,
    preview: str | None,
) -> None:
    """Write a synthetic screening archive (patients over time, known nodules) to OUT_URL (file:// or s3://)."""
    from nightscan.progress import progress_bar
    from nightscan.storage import open_storage
    from synth.archive import ArchiveOptions, generate_archive, write_ground_truth
    from synth.dicom import EncodeOptions, PixelRepresentation
    from synth.preview import write_preview

    low, _, high = studies.partition("-")
    options = ArchiveOptions(
        shape_zyx=_triple(shape, int, "--shape"),
        spacing_zyx_mm=_triple(spacing, float, "--spacing"),
        studies_per_patient=(int(low), int(high or low)),
        layout=layout,
        encode=EncodeOptions(
            transfer_syntax=transfer_syntax,
            pixel_representation=PixelRepresentation.UNSIGNED if unsigned else PixelRepresentation.SIGNED,
        ),
        mess=_mess(mess_names),
    )
    storage = open_storage(out_url, settings)
    with progress_bar("synthesising", total=None, unit="studies") as advance:
        result = generate_archive(
            storage.put, n_patients=patients, seed=seed, options=options, workers=workers, on_study=advance
        )
    if truth:
        write_ground_truth(result, truth)
    if preview:
        write_preview(storage.get, result, preview)
    click.echo(f"wrote {len(result.studies)} studies of {patients} patients to {out_url}")


def _mess(names: tuple[str, ...]) -> Mess:
    """The Mess options named on the command line ('all' for every one)."""
    from dataclasses import fields

    from synth.messy import Mess

    if "all" in names:
        return Mess.everything()
    known = {f.name for f in fields(Mess)}
    unknown = sorted(set(names) - known)
    if unknown:
        raise click.BadParameter(f"unknown {unknown}; choose from all, {', '.join(sorted(known))}", param_hint="--mess")
    return Mess(**dict.fromkeys(names, True))


def _triple(text: str, kind: type, option: str) -> tuple:
    parts = text.lower().split("x")
    if len(parts) != 3:
        raise click.BadParameter(f"expected three values like 100x128x128, got {text!r}", param_hint=option)
    try:
        return tuple(kind(p) for p in parts)
    except ValueError as exc:
        raise click.BadParameter(f"{text!r}: {exc}", param_hint=option) from exc


@main.command()
@click.option("--patients", type=int, default=3, show_default=True)
@click.option("--studies", type=click.IntRange(1, 4), default=2, show_default=True, help="Studies per patient.")
@click.option("--timeout", type=float, default=600, show_default=True, help="Seconds to wait for results.")
@click.pass_obj
def demo(settings: Settings, patients: int, studies: int, timeout: float) -> None:
    """Synthesise an archive, start a worker on the embedded broker, scan, wait, print findings and Lung-RADS."""
    from nightscan.demo import run_demo

    sys.exit(run_demo(settings, patients=patients, studies=studies, timeout_s=timeout))


@main.command()
@click.pass_obj
def status(settings: Settings) -> None:
    """Show the latest scan runs, then every study's analysis and findings."""
    from rich.console import Console

    from nightscan.runtime import session_factory
    from nightscan.tables import results_table, runs_table

    factory = session_factory(settings)
    console = Console()
    console.print(runs_table(factory))
    console.print(results_table(factory))


@main.command()
@click.option("--limit", type=int, default=50, show_default=True)
@click.pass_obj
def selections(settings: Settings, limit: int) -> None:
    """Show which series each study's pipeline chose, and why every other series was not chosen."""
    from rich.console import Console

    from nightscan.runtime import session_factory
    from nightscan.tables import selections_table

    Console().print(selections_table(session_factory(settings), limit))


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


_REGISTRY_OPTION = click.option(
    "--registry",
    "registry_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Registry JSON file (default: the shipped models/registry.json).",
)


@models.command("show")
@click.argument("ref")
@_REGISTRY_OPTION
def models_show(ref: str, registry_path: str | None) -> None:
    """Print the registry entry of REF (name@version, or name for its highest version)."""
    import json
    from pathlib import Path

    from models.registry import get_entry

    try:
        entry = get_entry(ref, Path(registry_path) if registry_path else None)
    except KeyError as exc:
        raise click.ClickException(str(exc.args[0])) from exc
    metrics = {k: v for k, v in entry.metrics.items() if k != "history"}
    rows = [
        ("architecture", json.dumps(entry.architecture)),
        ("weights", entry.weights),
        ("sha256", entry.sha256),
        ("preprocessing", json.dumps(entry.preprocessing.to_dict())),
        ("categories", ", ".join(entry.categories)),
        ("score threshold", f"{entry.score_threshold:.4f}"),
        ("provisional", "yes" if entry.provisional else "no"),
        ("trained at", entry.trained_at or "?"),
        ("training command", entry.training_command or "?"),
        ("history", f"{len(entry.metrics.get('history', []))} epochs"),
    ]
    click.echo(entry.ref)
    for name, value in rows:
        click.echo(f"  {name + ':':<18}{value}")
    click.echo("  metrics:")
    for line in json.dumps(metrics, indent=2).splitlines():
        click.echo(f"    {line}")


@models.command("register")
@click.argument("weights", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--entry",
    "entry_file",
    type=click.Path(exists=True, dir_okay=False),
    required=True,
    help="JSON with name, version, architecture, preprocessing, categories, score_threshold "
    "(and optionally metrics, provisional, trained_at, training_command).",
)
@click.option("--name", default=None, help="Overrides the entry file's name.")
@click.option("--version", "version_", default=None, help="Overrides the entry file's version.")
@_REGISTRY_OPTION
def models_register(
    weights: str, entry_file: str, name: str | None, version_: str | None, registry_path: str | None
) -> None:
    """Register WEIGHTS with its sha256 under name@version; refuses a name@version already registered."""
    import json
    from pathlib import Path

    from models.registry import REGISTRY_PATH, register_weights

    try:
        fields = json.loads(Path(entry_file).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"{entry_file}: not JSON: {exc}", param_hint="--entry") from exc
    if not isinstance(fields, dict):
        raise click.BadParameter(
            f"{entry_file}: expected a JSON object, got {type(fields).__name__}", param_hint="--entry"
        )
    fields.pop("sha256", None)
    fields.pop("weights", None)
    if name:
        fields["name"] = name
    if version_:
        fields["version"] = version_
    path = Path(registry_path) if registry_path else REGISTRY_PATH
    try:
        entry = register_weights(Path(weights), fields, path)
    except (ValueError, FileExistsError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"registered {entry.ref} sha256={entry.sha256[:12]} weights={entry.weights} in {path}")


@models.command("evaluate")
@click.argument("ref")
@click.option("--archive", "archive_url", default=None, help="Held-out archive URL (file:// or s3://).")
@click.option("--truth", "truth_path", type=click.Path(dir_okay=False), default=None, help="Its ground truth JSON.")
@click.option("--generate", type=int, default=None, help="Instead: write a fresh archive of N patients first.")
@click.option("--seed", type=int, default=777, show_default=True, help="Seed of --generate (not a training seed).")
@click.option("--shape", default="100x256x256", show_default=True, help="Voxels per generated study, ZxYxX.")
@click.option("--spacing", default="2.5x1.4x1.4", show_default=True, help="Generated voxel size in mm, ZxYxX.")
@click.option(
    "--archive-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Folder for the generated archive (default: a new temporary folder).",
)
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True, help="Report and plots go here.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option(
    "--classifier",
    "classifier_ref",
    default=None,
    metavar="NAME@VERSION",
    help="Candidate classifier to run on the candidates: adds nodule-vs-not and type metrics.",
)
@click.option(
    "--rank-by",
    type=click.Choice(RANK_BY_CHOICES),
    default="detector",
    show_default=True,
    help="Score that orders the candidates for FROC/CPM: the detector's, the classifier's nodule probability, "
    "or their product (needs --classifier).",
)
@click.option(
    "--measure/--no-measure",
    default=True,
    show_default=True,
    help="Measure each detected nodule from a segmentation (models.measurement) for the diameter error.",
)
@click.option(
    "--record",
    "record_label",
    default=None,
    metavar="LABEL",
    help="Store the key figures in REF's registry entry under this label and rewrite the model card.",
)
@_REGISTRY_OPTION
@click.pass_obj
def models_evaluate(
    settings: Settings,
    ref: str,
    archive_url: str | None,
    truth_path: str | None,
    generate: int | None,
    seed: int,
    shape: str,
    spacing: str,
    archive_dir: str | None,
    out_dir: str,
    device: str,
    classifier_ref: str | None,
    rank_by: str,
    measure: bool,
    record_label: str | None,
    registry_path: str | None,
) -> None:
    """Evaluate detector REF (name@version) on a held-out archive: FROC/CPM, sensitivities, diameter error.

    Give --archive and --truth, or --generate N (with --seed) to synthesise one. With --classifier, the
    classifier scores the candidates too (nodule vs not, type), and --rank-by can rank them by its nodule
    probability. Writes report.json and PNG plots into --out and prints the key figures.
    """
    import tempfile
    from pathlib import Path

    from models.evaluate import classify_with, evaluate_detector
    from synth.archive import read_ground_truth

    if (generate is None) == (archive_url is None):
        raise click.UsageError("give either --archive URL with --truth FILE, or --generate N")
    if archive_url is not None and truth_path is None:
        raise click.UsageError("--archive needs --truth (the archive's ground truth JSON)")
    if rank_by != "detector" and classifier_ref is None:
        raise click.UsageError(f"--rank-by {rank_by} needs --classifier NAME@VERSION")
    registry = Path(registry_path) if registry_path else None
    out = Path(out_dir)
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    classifier_options: dict[str, Any] = {}
    if classifier_ref is not None:
        from models.registry import load_classifier

        try:
            classifier = load_classifier(classifier_ref, device, registry_path=registry)
        except KeyError as exc:
            raise click.BadParameter(str(exc.args[0]), param_hint="--classifier") from exc
        classifier_options = {
            "classify": classify_with(classifier),
            "classifier_threshold": classifier.threshold,
            "classifier_ref": f"{classifier.name}@{classifier.version}",
            "classifier_sha256": classifier.sha256,
        }
    if generate is not None:
        truth, archive_url = _generate_held_out(
            settings,
            generate,
            seed,
            _triple(shape, int, "--shape"),
            _triple(spacing, float, "--spacing"),
            archive_dir or tempfile.mkdtemp(prefix=f"nightscan-eval-{seed}-"),
            out_dir,
        )
    else:
        assert truth_path is not None
        truth = read_ground_truth(truth_path)
    measure_step = None
    if measure:
        from models.evaluate import measure_with
        from models.measurement import measure_nodule

        measure_step = measure_with(measure_nodule)
    report = evaluate_detector(
        ref,
        archive_url,
        truth,
        out,
        settings,
        device=device,
        registry_path=registry,
        rank_by=rank_by,
        measure=measure_step,
        **classifier_options,
    )
    _print_evaluation(report, out_dir)
    if record_label is not None:
        import shlex

        from models.model_card import record_archive_evaluation

        source = (
            ["--generate", str(generate), "--seed", str(seed), "--shape", shape, "--spacing", spacing]
            if generate is not None
            else ["--archive", archive_url, "--truth", str(truth_path)]
        )
        scoring = ["--classifier", classifier_ref, "--rank-by", rank_by] if classifier_ref else []
        command = shlex.join(
            ["nightscan", "models", "evaluate", ref, *source, *scoring, *([] if measure else ["--no-measure"])]
        )
        entry = record_archive_evaluation(ref, record_label, report, command, registry_path=registry)
        click.echo(f"recorded as {record_label!r} in {entry.ref}'s registry entry and model card")


_FORWARD = {"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []}
"""Every argument, --help included, goes to the training script's own argparse parser."""


@models.group("train")
def models_train() -> None:
    """Train a model: each subcommand runs a training script with the arguments given after it.

    The scripts' own options are the only ones (see `nightscan models train detector --help`); training
    registers the new weights in models/registry.json.
    """


@models_train.command("detector", context_settings=_FORWARD)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def models_train_detector(args: tuple[str, ...]) -> None:
    """Train the nodule detector: the arguments, --help included, go to `python -m models.train`."""
    from models.train import main as train_main

    _forward("nightscan models train detector", train_main, args)


@models_train.command("classifier", context_settings=_FORWARD)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def models_train_classifier(args: tuple[str, ...]) -> None:
    """Train the candidate classifier: the arguments, --help included, go to `python -m models.train_classifier`."""
    from models.train_classifier import main as train_main

    _forward("nightscan models train classifier", train_main, args)


def _forward(prog: str, script_main: Callable[[list[str]], None], args: tuple[str, ...]) -> None:
    """Run a training script's ``main(argv)`` with `args`; its argparse usage lines name `prog`."""
    argv0 = sys.argv[0]
    sys.argv[0] = prog  # argparse takes its program name from sys.argv[0]
    try:
        script_main(list(args))
    finally:
        sys.argv[0] = argv0


def _generate_held_out(
    settings: Settings,
    n_patients: int,
    seed: int,
    shape: tuple,
    spacing: tuple,
    archive_dir: str,
    out_dir: str,
) -> tuple:
    """Write a synthetic archive of `n_patients` to `archive_dir` (file://) and its truth to out_dir/truth.json."""
    from pathlib import Path

    from nightscan.progress import progress_bar
    from nightscan.storage import open_storage
    from synth.archive import generate_archive, write_ground_truth

    folder, out = Path(archive_dir), Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    url = folder.resolve().as_uri()
    storage = open_storage(url, settings)
    with progress_bar("synthesising held-out archive", total=None, unit="studies") as advance:
        truth = generate_archive(
            storage.put, n_patients=n_patients, seed=seed, shape_zyx=shape, spacing_zyx_mm=spacing, on_study=advance
        )
    write_ground_truth(truth, out / "truth.json")
    click.echo(f"held-out archive: {url} (seed {seed}); ground truth: {out / 'truth.json'}")
    return truth, url


def _print_evaluation(report: dict, out_dir: str) -> None:
    """The key figures of an evaluation report, with the issue's targets."""
    from rich.console import Console
    from rich.table import Table

    def fmt(value: object, digits: int = 3) -> str:
        if value is None or (isinstance(value, float) and value != value):
            return "n/a"
        return f"{value:.{digits}f}" if isinstance(value, float) else str(value)

    det, diam, timing = report["detection"], report["diameter"], report["timing"]
    truth = report["truth"]
    classifier = report.get("classifier")
    models_used = report["model"]["ref"] + (f" + {classifier['ref']}" if classifier and classifier["ref"] else "")
    table = Table(
        title=f"{models_used} on {truth['n_studies']} studies, {truth['n_nodules']} nodules "
        f"({truth['n_nodules_ge_4mm']} >= 4 mm, {truth['n_nodules_ge_6mm']} >= 6 mm); "
        f"FROC ranked by {det['ranking_score']}"
    )
    for column in ("figure", "value", "target"):
        table.add_column(column)
    rows = [
        ("CPM, nodules >= 4 mm", fmt(det["ge_4mm"]["cpm"]), ">= 0.85"),
        ("CPM, nodules >= 6 mm", fmt(det["ge_6mm"]["cpm"]), ""),
        ("sensitivity at 1 FP/scan, >= 4 mm", fmt(det["ge_4mm"]["sensitivity_at_1fp"]), ""),
        ("sensitivity at 1 FP/scan, >= 6 mm", fmt(det["ge_6mm"]["sensitivity_at_1fp"]), ">= 0.95"),
        (
            f"sensitivity >= 6 mm at threshold {report['model']['score_threshold']:.3f}",
            fmt(det["ge_6mm"]["at_threshold"]["sensitivity"]),
            "",
        ),
        ("false positives per scan at threshold", fmt(det["fp_per_scan_at_threshold"], 2), ""),
    ]
    for label, row in det["sensitivity_by_size_at_threshold"].items():
        rows.append(
            (f"  sensitivity {label} mm at threshold", f"{fmt(row['sensitivity'])} ({row['detected']}/{row['n']})", "")
        )
    rows += [
        ("diameter MAE >= 6 mm (mm)", fmt(diam["mae_mm_ge_6mm"], 2), "<= 1.0"),
        ("diameter MAE >= 4 mm (mm)", fmt(diam["mae_mm_ge_4mm"], 2), ""),
    ]
    classification = report.get("classification")
    if classification:
        rows.append(("nodule vs not ROC AUC", fmt(classification["nodule_vs_not"]["roc_auc"]), ""))
        if classification.get("type"):
            rows.append(("nodule type accuracy, classifier", fmt(classification["type"]["accuracy"]), ""))
    finding_type = report.get("finding_type")
    if finding_type:
        rows.append(("nodule type accuracy, findings", fmt(finding_type["accuracy"]), ">= 0.9"))
    rows += [
        ("seconds per study (load + detect)", fmt(timing["seconds_per_study"], 2), ""),
        ("  of which detect", fmt(timing["detect_seconds_per_study"], 2), "< 30 s for 120x256x256"),
    ]
    for row in rows:
        table.add_row(*row)
    console = Console()
    console.print(table)
    console.print(f"diameters: {diam['source']}")
    console.print(f"report: {os.path.join(out_dir, 'report.json')}; plots: {', '.join(report['plots'].values())}")


main.add_command(reanalyze)
main.add_command(diff)
main.add_command(api)
main.add_command(report)
main.add_command(follow_up)

if __name__ == "__main__":
    main()
