"""Exports of the reports: rich tables for the terminal, CSV and JSON, from the shapes of :mod:`reports.schemas`.

A :class:`Report` holds one or more :class:`Sheet` (what the terminal shows), the sheet that CSV writes
(one flat table, one row per record) and the JSON payload (the whole report, as the API returns it).
Units are in the column names (``_mm``, ``_mm3``, ``_days``); probabilities are 0..1.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from typing import IO, Any

from pydantic import BaseModel
from rich.console import Console
from rich.table import Table

from reports.schemas import FindingOut, RunOut, StudyDetailOut, TimelineOut, WorklistItemOut
from screening.growth import describe_vdt_range


class ExportFormat(StrEnum):
    """How a report is written."""

    TABLE = "table"
    CSV = "csv"
    JSON = "json"


@dataclass(frozen=True, slots=True)
class Sheet:
    """One table: a title, column names and rows of plain values (None for empty)."""

    title: str
    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]]
    caption: str = ""

    def __post_init__(self) -> None:
        for n, row in enumerate(self.rows):
            if len(row) != len(self.columns):
                raise ValueError(f"row {n} of {self.title!r} has {len(row)} values for {len(self.columns)} columns")


@dataclass(frozen=True, slots=True)
class Report:
    """What one ``nightscan report ...`` writes, in each format."""

    sheets: list[Sheet]
    csv_sheet: Sheet
    payload: Any  # JSON-ready


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{round(value, 3):g}"
    if isinstance(value, date | datetime):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return "; ".join(_text(v) for v in value)
    return str(value)


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, date | datetime):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return "; ".join(str(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return value


def _dump(value: BaseModel | Sequence[BaseModel]) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return [v.model_dump(mode="json") for v in value]


# --- writers --------------------------------------------------------------------------------------------


def write_report(report: Report, fmt: ExportFormat | str, stream: IO[str], *, console: Console | None = None) -> None:
    """Write ``report`` to ``stream`` as rich tables, CSV (its ``csv_sheet``) or JSON."""
    fmt = ExportFormat(fmt)
    if fmt is ExportFormat.JSON:
        json.dump(report.payload, stream, indent=2, sort_keys=False)
        stream.write("\n")
    elif fmt is ExportFormat.CSV:
        writer = csv.writer(stream, lineterminator="\n")
        writer.writerow(report.csv_sheet.columns)
        for row in report.csv_sheet.rows:
            writer.writerow([_csv_value(v) for v in row])
    else:
        console = console or Console(file=stream)
        for sheet in report.sheets:
            table = Table(title=sheet.title, caption=sheet.caption or None)
            for column in sheet.columns:
                table.add_column(column, overflow="fold")
            for row in sheet.rows:
                table.add_row(*(_text(v) for v in row))
            console.print(table)


# --- reports --------------------------------------------------------------------------------------------

WORKLIST_COLUMNS = (
    "patient_key",
    "lungrads",
    "reasons",
    "latest_study_date",
    "follow_up_due",
    "vdt_min_days",
    "brock_max",
    "n_lesions",
    "model",
)


def worklist_report(items: Sequence[WorklistItemOut], *, model: str, as_of: date) -> Report:
    """The worklist: one row per patient, most urgent first."""
    rows = [
        (
            i.patient_key,
            i.lungrads,
            list(i.reasons),
            i.latest_study_date,
            i.follow_up_due,
            i.vdt_min_days,
            i.brock_max,
            i.n_lesions,
            i.model,
        )
        for i in items
    ]
    title = f"worklist: {model}, as of {as_of.isoformat()} ({len(rows)} patients)"
    shown = Sheet(
        title,
        WORKLIST_COLUMNS[:-1],
        [(r[0][:16], *r[1:-1]) for r in rows],
        caption="patient key: first 16 of 64 hex digits; VDT in days; Brock probability 0..1",
    )
    flat = Sheet(title, WORKLIST_COLUMNS, rows)
    return Report([shown], flat, {"model": model, "as_of": as_of.isoformat(), "items": _dump(items)})


PATIENT_CSV_COLUMNS = (
    "patient_key",
    "model",
    "study_date",
    "study_instance_uid",
    "lungrads",
    "reason",
    "follow_up_due",
    "lesion",
    "lesion_status",
    "nodule_type",
    "diameter_mm",
    "long_axis_mm",
    "short_axis_mm",
    "volume_mm3",
    "vdt_days",
    "brock_probability",
)


def patient_report(timeline: TimelineOut) -> Report:
    """A patient's timeline: the studies with their assessments, and each lesion's sizes over time.

    CSV: one row per (study, lesion seen in it); a study without lesions gets one row with no lesion.
    """
    studies = Sheet(
        f"patient {timeline.patient_key[:12]}: studies ({timeline.model})",
        ("study_date", "study_instance_uid", "analysis", "lungrads", "reason", "brock_max", "vdt_min_days", "due"),
        [
            (
                s.study_date,
                s.study_instance_uid,
                s.analysis_status,
                s.lungrads,
                s.reason,
                s.brock_max,
                s.vdt_min_days,
                s.follow_up_due,
            )
            for s in timeline.studies
        ],
    )
    lesions = Sheet(
        "lesions",
        ("lesion", "status", "type", "first_seen", "last_seen", "diameters_mm", "vdt_days", "vdt_range_days", "brock"),
        [
            (
                le.label,
                le.status,
                le.nodule_type,
                le.first_seen,
                le.last_seen,
                " -> ".join(f"{p.diameter_mm:.1f}" for p in le.points),
                le.vdt_days,
                describe_vdt_range(le.vdt_shortest_days, le.vdt_longest_days),
                le.brock_probability,
            )
            for le in timeline.lesions
        ],
        caption="diameters: mean diameter at each study, oldest first; VDT range: what the measurements' noise allows",
    )
    seen: dict[str, list[tuple[Any, ...]]] = {}
    for le in timeline.lesions:
        for p in le.points:
            seen.setdefault(p.study_instance_uid, []).append(
                (
                    le.label,
                    le.status,
                    p.nodule_type,
                    p.diameter_mm,
                    p.long_axis_mm,
                    p.short_axis_mm,
                    p.volume_mm3,
                    le.vdt_days,
                    le.brock_probability,
                )
            )
    rows = []
    for s in timeline.studies:
        head = (
            timeline.patient_key,
            timeline.model,
            s.study_date,
            s.study_instance_uid,
            s.lungrads,
            s.reason,
            s.follow_up_due,
        )
        for lesion_row in seen.get(s.study_instance_uid, [(None,) * 9]):
            rows.append(head + lesion_row)
    flat = Sheet("timeline", PATIENT_CSV_COLUMNS, rows)
    return Report([studies, lesions], flat, _dump(timeline))


FINDING_COLUMNS = (
    "analysis_id",
    "model",
    "ordinal",
    "lesion",
    "label",
    "nodule_type",
    "diameter_mm",
    "long_axis_mm",
    "short_axis_mm",
    "volume_mm3",
    "solid_component_mm",
    "score",
    "probability",
    "center_x_mm",
    "center_y_mm",
    "center_z_mm",
    "sop_instance_uid",
    "frame_number",
)


def study_report(study: StudyDetailOut, findings: Sequence[FindingOut]) -> Report:
    """A study: its series, its analyses and every finding of its done analyses."""
    series = Sheet(
        f"study {study.study_instance_uid} ({study.study_date or 'no date'}), patient {study.patient_key[:12]}",
        ("series", "modality", "number", "slices", "slice_mm", "rows x columns"),
        [
            (
                s.series_instance_uid,
                s.modality,
                s.series_number,
                s.n_slices,
                s.slice_thickness_mm,
                f"{s.rows} x {s.columns}",
            )
            for s in study.series
        ],
    )
    analyses = Sheet(
        "analyses",
        ("id", "model", "status", "lungrads", "findings", "study_score", "finished", "error"),
        [
            (a.id, a.model, a.status, a.lungrads, a.n_findings, a.study_score, a.finished_at, a.error)
            for a in study.analyses
        ],
    )
    rows = [tuple(getattr(f, c) for c in FINDING_COLUMNS) for f in findings]
    shown = ("analysis_id", "ordinal", "lesion", "nodule_type", "diameter_mm", "volume_mm3", "score", "probability")
    table = Sheet(
        "findings",
        shown,
        [tuple(getattr(f, c) for c in shown) for f in findings],
        caption="mean diameter mm, volume mm3, detector score and classifier probability 0..1",
    )
    flat = Sheet("findings", FINDING_COLUMNS, rows)
    return Report([series, analyses, table], flat, {"study": _dump(study), "findings": _dump(findings)})


RUN_COLUMNS = (
    "id",
    "source",
    "night",
    "started_at",
    "finished_at",
    "status",
    "listed",
    "planned",
    "enqueued",
    "remaining",
    "batches_sent",
    "batches_done",
    "error",
)


def run_report(runs: Sequence[RunOut]) -> Report:
    """Scan runs: one row each, with the counts the scheduler recorded."""
    rows = [
        (
            r.id,
            r.source,
            r.night,
            r.started_at,
            r.finished_at,
            r.status,
            *((r.counts or {}).get(k) for k in ("listed", "planned", "enqueued", "remaining")),
            r.batches_sent,
            r.batches_done,
            r.error,
        )
        for r in runs
    ]
    sheet = Sheet("scan runs", RUN_COLUMNS, rows)
    return Report([sheet], sheet, _dump(runs))
