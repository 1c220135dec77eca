"""``nightscan report worklist|patient|study|run``: the reports as a terminal table, CSV or JSON.

A patient is named by the real PatientID (hashed here with NIGHTSCAN_PSEUDONYM_KEY, as the indexer does;
never logged) or, with ``--key``, by the keyed hash itself, as the worklist shows it.
"""

from __future__ import annotations

import logging
import sys
from contextlib import ExitStack
from datetime import date
from typing import TYPE_CHECKING

import click

from nightscan.settings import Settings

if TYPE_CHECKING:
    from reports.exports import Report

log = logging.getLogger("nightscan.report")

FORMATS = ("table", "csv", "json")
"""The values of reports.exports.ExportFormat (the CLI imports reports in commands only)."""
LUNGRADS = ("1", "2", "3", "4A", "4B", "4X")


def _output(func=None, *, formats: tuple[str, ...] = FORMATS):  # type: ignore[no-untyped-def]
    if func is None:
        return lambda f: _output(f, formats=formats)
    func = click.option(
        "--out",
        "out_path",
        type=click.Path(dir_okay=False, writable=True),
        default=None,
        help="Write to this file instead of standard output.",
    )(func)
    return click.option(
        "--format", "fmt", type=click.Choice(formats), default="table", show_default=True, help="Output format."
    )(func)


def _emit(report: Report, fmt: str, out_path: str | None) -> None:
    from rich.console import Console

    from reports.exports import write_report

    with ExitStack() as stack:
        if out_path is None:
            stream = sys.stdout
            console = Console(width=None if stream.isatty() else 200) if fmt == "table" else None
        else:
            stream = stack.enter_context(open(out_path, "w", encoding="utf-8", newline=""))
            console = Console(file=stream, width=200, force_terminal=False) if fmt == "table" else None
        write_report(report, fmt, stream, console=console)
    if out_path is not None:
        log.info("report written to %s (%s)", out_path, fmt)


@click.group("report")
def report() -> None:
    """Reports on the terminal (a table) or as CSV or JSON files."""


@report.command("worklist")
@click.option("--model", default=None, help="Model name@version (default: NIGHTSCAN_DETECTOR).")
@click.option("--min-category", type=click.Choice(LUNGRADS), default="4A", show_default=True)
@click.option("--vdt-days", type=click.FloatRange(min=0, min_open=True), default=400.0, show_default=True)
@click.option("--as-of", type=click.DateTime(["%Y-%m-%d"]), default=None, help="Overdue before this date; today.")
@_output
@click.pass_obj
def report_worklist(
    settings: Settings,
    model: str | None,
    min_category: str,
    vdt_days: float,
    as_of: object,
    fmt: str,
    out_path: str | None,
) -> None:
    """Patients who need attention: latest category MIN-CATEGORY or more, VDT under VDT-DAYS, or overdue."""
    from nightscan.runtime import session_factory
    from reports.exports import worklist_report
    from reports.records import Paging, worklist_page
    from reports.schemas import MAX_LIMIT

    model = model or settings.detector
    today = as_of.date() if as_of is not None else date.today()  # type: ignore[attr-defined]
    items = []
    with session_factory(settings)() as session:
        offset: int | None = 0
        while offset is not None:
            page = worklist_page(
                session,
                Paging(MAX_LIMIT, offset),
                model=model,
                today=today,
                min_category=min_category,
                vdt_days=vdt_days,
            )
            items.extend(page.items)
            offset = page.next_offset
    _emit(worklist_report(items, model=model, as_of=today), fmt, out_path)


@report.command("patient")
@click.argument("patient")
@click.option("--key", "by_key", is_flag=True, help="PATIENT is the keyed hash (patient_key), not a PatientID.")
@click.option("--model", default=None, help="Model name@version (default: the latest that analysed the patient).")
@click.option(
    "--every-study", is_flag=True, help="HTML: a key image of each lesion at every study, not only its latest."
)
@_output(formats=(*FORMATS, "html"))
@click.pass_obj
def report_patient(
    settings: Settings,
    patient: str,
    by_key: bool,
    model: str | None,
    every_study: bool,
    fmt: str,
    out_path: str | None,
) -> None:
    """A patient's timeline: studies, Lung-RADS, lesions and their sizes over time.

    --format html: one self-contained page with the growth plot and key images (slices read from the archive).
    """
    from nightscan.pseudonym import patient_key
    from nightscan.runtime import session_factory
    from reports.exports import patient_report
    from reports.records import patient_by_key, patient_models, timeline

    key = patient if by_key else patient_key(patient, settings.pseudonym_key.get_secret_value())
    with session_factory(settings)() as session:
        found = patient_by_key(session, key)
        if found is None:
            raise click.ClickException(f"no patient has this {'key' if by_key else 'PatientID'} (key {key[:12]})")
        if model is None:
            models = patient_models(session, found.id)
            if not models:
                raise click.ClickException(f"patient {key[:12]} has no finished analysis")
            model = models[0]
        if fmt == "html":
            from reports.html import patient_report_html

            page = patient_report_html(session, settings, found, model, every_study=every_study)
        else:
            result = timeline(session, found, model)
    if fmt == "html":
        _write_text(page, out_path)
        return
    _emit(patient_report(result), fmt, out_path)


def _write_text(text: str, out_path: str | None) -> None:
    if out_path is None:
        sys.stdout.write(text)
        return
    with open(out_path, "w", encoding="utf-8") as f:
        f.write(text)
    log.info("report written to %s (html)", out_path)


@report.command("study")
@click.argument("study_uid")
@click.option("--model", default=None, help="Only this model's findings (name@version).")
@_output
@click.pass_obj
def report_study(settings: Settings, study_uid: str, model: str | None, fmt: str, out_path: str | None) -> None:
    """A study (StudyInstanceUID): series, analyses and findings."""
    from nightscan.runtime import session_factory
    from reports.exports import study_report
    from reports.records import Paging, list_findings, study_detail
    from reports.schemas import MAX_LIMIT

    with session_factory(settings)() as session:
        detail = study_detail(session, study_uid)
        if detail is None:
            raise click.ClickException(f"no study has StudyInstanceUID {study_uid!r}")
        findings = []
        offset: int | None = 0
        while offset is not None:
            page = list_findings(session, Paging(MAX_LIMIT, offset), study_uid=study_uid, model=model)
            findings.extend(page.items)
            offset = page.next_offset
    _emit(study_report(detail, findings), fmt, out_path)


@report.command("run")
@click.argument("run_id", type=int, required=False)
@click.option("--last", type=click.IntRange(1, 500), default=10, show_default=True, help="Without RUN_ID: how many.")
@_output
@click.pass_obj
def report_run(settings: Settings, run_id: int | None, last: int, fmt: str, out_path: str | None) -> None:
    """Scan run RUN_ID, or the last runs: when, status, counts."""
    from nightscan.runtime import session_factory
    from reports.exports import run_report
    from reports.records import Paging, list_runs, run_detail

    with session_factory(settings)() as session:
        if run_id is None:
            runs = list_runs(session, Paging(last, 0)).items
        else:
            run = run_detail(session, run_id)
            if run is None:
                raise click.ClickException(f"no scan run has id {run_id}")
            runs = [run]
    _emit(run_report(runs), fmt, out_path)


@report.command("sr")
@click.argument("study_uid")
@click.option("--model", default=None, help="The analysis of this model (name@version; default: the latest done).")
@click.option(
    "--out",
    "out_path",
    type=click.Path(dir_okay=False, writable=True),
    default=None,
    help="Write the SR to this file instead of the reports storage (NIGHTSCAN_REPORTS_URL).",
)
@click.pass_obj
def report_sr(settings: Settings, study_uid: str, model: str | None, out_path: str | None) -> None:
    """The DICOM SR (Comprehensive 3D SR, TID 1500) of study STUDY_UID's analysis, for PACS viewers.

    Written to NIGHTSCAN_REPORTS_URL (default <data_dir>/reports) at sr/<StudyInstanceUID>/<SOPInstanceUID>.dcm.
    It carries the patient module of the source images, read from the archive: it is PHI, like the images.
    """
    from nightscan.runtime import session_factory
    from reports.sr import SRError, build_sr, sr_bytes, study_analysis, write_sr

    try:
        with session_factory(settings)() as session:
            analysis_id = study_analysis(session, study_uid, model)
            if out_path is None:
                written = write_sr(session, settings, analysis_id)
                click.echo(f"{written.url.rstrip('/')}/{written.key}")
                return
            sr = build_sr(session, settings, analysis_id)
    except SRError as exc:
        raise click.ClickException(str(exc)) from None
    with open(out_path, "wb") as f:
        f.write(sr_bytes(sr))
    log.info("DICOM SR %s written to %s", sr.SOPInstanceUID, out_path)
