"""``nightscan reanalyze`` and ``nightscan diff``: re-analysis by a new model version, and what it changed.

Registered on the main group by ``nightscan/cli.py``. Heavy imports stay inside the commands.
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click

from nightscan.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from scheduler.reanalysis import ReanalysisReport
    from scheduler.version_diff import VersionDiff

log = logging.getLogger("nightscan")


def _patient_keys(patients: str | None, patients_file: str | None) -> list[str] | None:
    """Keys from ``--patients`` (comma-separated) and ``--patients-file`` (one a line, # comments); None: all."""
    if patients is None and patients_file is None:
        return None
    keys = [k for k in (patients or "").split(",") if k.strip()]
    if patients_file is not None:
        for line in Path(patients_file).read_text(encoding="utf-8").splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                keys.append(line)
    if not keys:
        raise click.BadParameter("no patient key given", param_hint="--patients / --patients-file")
    return keys


@click.command()
@click.option("--model", "model_ref", required=True, help="The model version to run, NAME@VERSION.")
@click.option("--patients", default=None, help="Comma-separated patient keys (or unique prefixes of 8+ characters).")
@click.option(
    "--patients-file",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="A file of patient keys, one a line.",
)
@click.option("--since", type=click.DateTime(formats=["%Y-%m-%d"]), default=None, help="Only studies from DATE on.")
@click.option("--pipeline", default=None, help="Pipeline (default: NIGHTSCAN_PIPELINE).")
@click.option("--dry-run", is_flag=True, help="Count what would be planned, and plan nothing.")
@click.pass_obj
def reanalyze(
    settings: Settings,
    model_ref: str,
    patients: str | None,
    patients_file: str | None,
    since: datetime | None,
    pipeline: str | None,
    dry_run: bool,
) -> None:
    """Plan analyses by model NAME@VERSION of the chosen patients' studies that it has not analysed.

    Nothing is sent now: the nightly run sends planned analyses inside its window, studies that no
    model has analysed yet first. Results of other versions are kept. Running it again plans nothing new.
    """
    from db.engine import retry_on_conflict
    from db.models import utcnow
    from nightscan.runtime import session_factory
    from scheduler.reanalysis import parse_model_ref, plan_reanalysis, progress, resolve_patients

    try:
        model_ref = parse_model_ref(model_ref)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--model") from exc
    if not settings.model_store_url:  # the workers load from the shipped registry: the model must be in it
        from models.registry import get_entry

        try:
            get_entry(model_ref)
        except KeyError as exc:
            raise click.BadParameter(str(exc.args[0]), param_hint="--model") from exc
    keys = _patient_keys(patients, patients_file)
    pipeline = pipeline or settings.pipeline
    factory = session_factory(settings)
    now = utcnow()

    def work(session: Session) -> ReanalysisReport:
        patient_ids = None
        if keys is not None:
            try:
                patient_ids = resolve_patients(session, keys)
            except ValueError as exc:
                raise click.BadParameter(str(exc), param_hint="--patients") from exc
        report = plan_reanalysis(
            session,
            model_ref,
            pipeline=pipeline,
            patient_ids=patient_ids,
            since=since.date() if since else None,
            quiet_s=settings.series_quiet_s,
            now=now,
        )
        if dry_run:
            session.rollback()
        return report

    if dry_run:
        with factory() as session:
            report = work(session)
    else:
        report = retry_on_conflict(factory, work)
    verb = "would plan" if dry_run else "planned"
    click.echo(
        f"{model_ref}: {report.in_scope} studies in scope, {report.already} already analysed by it; "
        f"{verb} {len(report.planned)} ({report.same_series} on the current series, {report.by_rules} by the "
        f"selection rules); {report.waiting} still settling, {report.no_series} without a usable series"
    )
    with factory() as session:
        counts = progress(session, model_ref, pipeline)
    click.echo(f"{model_ref} analyses by status: " + ", ".join(f"{s.value} {n}" for s, n in counts.items()))


@click.command()
@click.argument("model_a")
@click.argument("model_b")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
@click.option("--all", "every", is_flag=True, help="List every patient compared, not only those that changed.")
@click.pass_obj
def diff(settings: Settings, model_a: str, model_b: str, fmt: str, every: bool) -> None:
    """Which patients changed Lung-RADS category from MODEL_A to MODEL_B (NAME@VERSION each), and why.

    Each patient is compared on the latest study both versions assessed. Patients are shown by a
    prefix of their pseudonymous key.
    """
    from nightscan.runtime import session_factory
    from scheduler.reanalysis import parse_model_ref
    from scheduler.version_diff import diff_versions

    for ref, hint in ((model_a, "MODEL_A"), (model_b, "MODEL_B")):
        try:
            parse_model_ref(ref)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint=hint) from exc
    with session_factory(settings)() as session:
        try:
            report = diff_versions(session, model_a, model_b, every=every)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="MODEL_B") from exc
    rows = [change.as_dict() for change in report.changes]
    if fmt == "json":
        import json

        summary = {
            "model_a": report.model_a,
            "model_b": report.model_b,
            "compared": report.compared,
            "changed": sum(row["direction"] != "same" for row in rows),
            "up": report.up,
            "down": report.down,
            "only_a": report.only_a,
            "only_b": report.only_b,
            "patients": rows,
        }
        click.echo(json.dumps(summary, indent=2))
    elif fmt == "csv":
        import csv
        import sys

        writer = csv.DictWriter(sys.stdout, fieldnames=list(rows[0]) if rows else _CSV_FIELDS, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "; ".join(v) if isinstance(v, list) else v for k, v in row.items()})
    else:
        _print_diff_table(report)


_CSV_FIELDS = [
    "patient",
    "study_date",
    "category_a",
    "category_b",
    "direction",
    "reason_a",
    "reason_b",
    "lesions_added",
    "lesions_removed",
    "biggest_change",
    "biggest_change_mm",
]


def _print_diff_table(report: VersionDiff) -> None:
    from rich.console import Console
    from rich.table import Table

    changed = sum(c.direction != "same" for c in report.changes)
    table = Table(
        title=f"{report.model_a} -> {report.model_b}: {changed} of {report.compared} patients changed category "
        f"({report.up} up, {report.down} down)",
        caption=f"compared on the latest study both assessed; {report.only_a} patients assessed by "
        f"{report.model_a} only, {report.only_b} by {report.model_b} only; sizes in mm",
    )
    for column in ("patient", "study", "category", "why: old, then new", "lesions added", "removed", "biggest change"):
        table.add_column(column, overflow="fold")
    arrows = {"up": "[red]↑[/red]", "down": "[green]↓[/green]", "same": "="}
    for c in report.changes:
        table.add_row(
            c.patient,
            str(c.study_date or "?"),
            f"{c.category_a} -> {c.category_b} {arrows[c.direction]}",
            f"{c.reason_a}\n-> {c.reason_b}",
            ", ".join(c.lesions_added),
            ", ".join(c.lesions_removed),
            "" if c.biggest_change is None else f"{c.biggest_change}: {c.biggest_change_mm:+.1f}",
        )
    Console().print(table)
