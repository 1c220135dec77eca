"""Plots of the reports, as PNG bytes: each lesion's mean diameter over time, with the Lung-RADS size thresholds.

Drawn on a bare matplotlib ``Figure`` with the Agg canvas (no pyplot: no global state, safe in threads and
server processes).
"""

from __future__ import annotations

import io
from datetime import date

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from reports.schemas import TimelineOut
from screening.lungrads import SOLID_BASELINE

THRESHOLDS_MM: tuple[tuple[float, str], ...] = tuple(
    (lower_mm, category.value) for lower_mm, category in SOLID_BASELINE if lower_mm > 0
)
"""Lung-RADS v2022 baseline size thresholds of a solid nodule: (mean diameter in mm, category from there on)."""


def lesion_growth_png(timeline: TimelineOut, *, width_in: float = 8.0, height_in: float = 4.5, dpi: int = 100) -> bytes:
    """Each lesion's mean diameter (mm) at each study date, one line per lesion (``L1``, ...), over the
    Lung-RADS solid-nodule thresholds (6, 8 and 15 mm: categories 3, 4A, 4B), as a PNG."""
    figure = Figure(figsize=(width_in, height_in), dpi=dpi)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    largest = 0.0
    dates: list[date] = [s.study_date for s in timeline.studies if s.study_date is not None]
    for lesion in timeline.lesions:
        points = [(p.study_date, p.diameter_mm) for p in lesion.points if p.study_date is not None]
        if not points:
            continue
        xs, ys = zip(*points, strict=True)
        largest = max(largest, *ys)
        style = "-" if lesion.status == "present" else ":"
        kind = f", {lesion.nodule_type.replace('_', '-')}" if lesion.nodule_type else ""
        axes.plot(xs, ys, style, marker="o", label=f"{lesion.label}{kind} ({lesion.status})")
        dates.extend(xs)
    top = max(largest * 1.15, THRESHOLDS_MM[-1][0] * 1.15)
    for lower_mm, category in THRESHOLDS_MM:
        axes.axhline(lower_mm, color="tab:red", linestyle="--", linewidth=0.8, alpha=0.7)
        axes.annotate(
            f"Lung-RADS {category} from {lower_mm:g} mm",
            xy=(0.005, lower_mm),
            xycoords=("axes fraction", "data"),
            xytext=(0, 2),
            textcoords="offset points",
            fontsize=7,
            color="tab:red",
        )
    axes.set_ylim(0, top)
    axes.set_ylabel("mean diameter (mm)")
    axes.set_xlabel("study date")
    axes.set_title(f"lesion size over time ({timeline.model}); thresholds: solid nodule, baseline", fontsize=9)
    axes.grid(True, alpha=0.3)
    if timeline.lesions:
        axes.legend(loc="upper right", fontsize=8)
    else:
        axes.text(0.5, 0.5, "no tracked lesion", transform=axes.transAxes, ha="center", va="center")
    if len(set(dates)) == 1:  # one date: widen the axis so the point is not on its edge
        only = dates[0].toordinal()
        axes.set_xlim(date.fromordinal(only - 90), date.fromordinal(only + 90))
    figure.autofmt_xdate()
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
