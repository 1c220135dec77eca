"""Plots of longitudinal evaluation reports (``nightscan follow-up evaluate``): what a reader would rather look at
than the JSON. One report or several pooled (say the six evaluation archives): the Lung-RADS confusion matrix
(truth against assessment, studies) and the VDT of the growing lesions of 6 mm and more kept twice, measured against
true, with the range each lesion's volumes allow (:func:`screening.growth.vdt_range_days`)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from models.plots import confusion_matrix_plot, vdt_plot

CATEGORIES = ("1", "2", "3", "4A", "4B", "4X")
"""Lung-RADS categories in the confusion matrix's order; "0" (a study without a date) is added when present."""


def pooled_confusion(reports: Sequence[dict]) -> tuple[list[str], np.ndarray]:
    """The categories and the matrix of studies (rows: the truth's category, columns: the assessed one), summed
    over ``reports``' per-study rows."""
    studies = [row for report in reports for row in report["result"]["per_study"]]
    seen = {row["truth"] for row in studies} | {row["assessed"] for row in studies}
    labels = ["0", *CATEGORIES] if "0" in seen else list(CATEGORIES)
    unknown = seen - set(labels)
    if unknown:
        raise ValueError(f"categories {sorted(unknown)} are not Lung-RADS categories {labels}")
    counts = np.zeros((len(labels), len(labels)), dtype=int)
    for row in studies:
        counts[labels.index(row["truth"]), labels.index(row["assessed"])] += 1
    return labels, counts


def vdt_points(reports: Sequence[dict]) -> list[tuple[float, float, tuple[float, float | None] | None]]:
    """(true VDT, measured VDT, range) in days of every lesion the reports score for VDT that has a measured VDT (a
    lesion measured shrinking has none and is left out); reports from before the ranges give None as the range."""
    points = []
    for report in reports:
        for row in report["result"]["vdt"]["rows"]:
            if row["lesion"] is None:
                continue
            vdt_range = row.get("lesion_range")
            points.append(
                (float(row["true_vdt_days"]), float(row["lesion"]), None if vdt_range is None else tuple(vdt_range))
            )
    return points


def plot_reports(report_paths: Sequence[Path], out_dir: Path, *, name: str) -> list[Path]:
    """Write ``<name>_lungrads.png`` and ``<name>_vdt.png`` to ``out_dir`` from the reports at ``report_paths``
    (pooled); returns the paths written."""
    if not report_paths:
        raise ValueError("no report to plot")
    reports = [json.loads(Path(p).read_text()) for p in report_paths]
    seeds = ", ".join(str(r["archive"]["seed"]) for r in reports)
    labels, counts = pooled_confusion(reports)
    agree = int(np.trace(counts))
    written = [
        confusion_matrix_plot(
            counts,
            labels,
            out_dir / f"{name}_lungrads.png",
            title=f"Lung-RADS, seeds {seeds}: {agree} of {counts.sum()} studies agree (rows: truth)",
        )
    ]
    points = vdt_points(reports)
    if points:
        written.append(
            vdt_plot(points, out_dir / f"{name}_vdt.png", title=f"VDT of growing lesions >= 6 mm, seeds {seeds}")
        )
    return written
