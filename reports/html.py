"""The HTML report of one patient: risk, studies, lesions, the growth plot and the key images, in one file.

The page is self-contained (images embedded as ``data:`` URIs, no script, no external resource), so it
can be written to any storage and opened anywhere. It names the patient only by the pseudonymous key;
every text that comes from the database is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy.orm import Session

from db.models import Patient
from nightscan.settings import Settings
from reports.key_images import KeyImage, key_images
from reports.plots import lesion_growth_png
from reports.records import timeline
from reports.schemas import TimelineOut
from screening.growth import describe_vdt_range

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #bbb; padding: 0.25em 0.6em; text-align: left; font-size: 0.9em; }
th { background: #eee; }
.risk { font-size: 1.1em; }
figure { display: inline-block; margin: 0 1em 1em 0; }
figcaption { font-size: 0.85em; color: #555; }
.missing { color: #a00; }
footer { margin-top: 2em; font-size: 0.8em; color: #777; }
"""


def _e(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return html.escape(f"{round(value, 3):g}")
    return html.escape(str(value))


def _png(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _table(columns: Sequence[str], rows: Sequence[Sequence[object]], table_id: str) -> str:
    head = "".join(f"<th>{_e(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_e(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def patient_html(
    data: TimelineOut, plot_png: bytes, images: Sequence[KeyImage], *, generated_at: datetime | None = None
) -> str:
    """The page for ``data`` with the growth plot and the key images (PNG bytes)."""
    generated_at = generated_at or datetime.now(UTC)
    risk = data.risk
    risk_text = (
        "not assessed yet"
        if risk is None
        else f"Lung-RADS <strong>{_e(risk.lungrads)}</strong>; highest Brock probability {_e(risk.brock_max)}; "
        f"shortest VDT {_e(risk.vdt_min_days) or '-'} days; follow-up due {_e(risk.follow_up_due) or '-'}; "
        f"{_e(risk.n_lesions)} lesion(s) present (latest study {_e(risk.latest_study_date)})"
    )
    studies = _table(
        ("study date", "StudyInstanceUID", "analysis", "Lung-RADS", "reason", "Brock max", "VDT min (days)", "due"),
        [
            (
                s.study_date,
                s.study_instance_uid,
                s.analysis_status or "not analysed",
                s.lungrads,
                s.reason,
                s.brock_max,
                s.vdt_min_days,
                s.follow_up_due,
            )
            for s in data.studies
        ],
        "studies",
    )
    lesions = _table(
        (
            "lesion",
            "status",
            "type",
            "first seen",
            "last seen",
            "mean diameter (mm) per study",
            "VDT (days)",
            "VDT range (days)",
            "Brock",
        ),
        [
            (
                le.label,
                le.status,
                (le.nodule_type or "").replace("_", "-"),
                le.first_seen,
                le.last_seen,
                " → ".join(f"{p.diameter_mm:.1f}" for p in le.points),
                le.vdt_days,
                describe_vdt_range(le.vdt_shortest_days, le.vdt_longest_days),
                le.brock_probability,
            )
            for le in data.lesions
        ],
        "lesions",
    )
    figures = []
    for image in images:
        name = image.lesion or f"finding {image.finding_id}"
        caption = f"{_e(name)}, {_e(image.study_date)}: axial slice through the nodule, outlined"
        if image.png is None:
            figures.append(f'<p class="missing">{_e(name)}: no key image ({_e(image.error)})</p>')
            continue
        figures.append(
            f'<figure class="key-image" data-lesion="{_e(name)}">'
            f'<img src="{_png(image.png)}" alt="{_e(name)} key image">'
            f"<figcaption>{caption}</figcaption></figure>"
        )
    title = f"nightscan: patient {data.patient_key[:16]}"
    return f"""<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>{_e(title)}</title><style>{STYLE}</style></head>
<body>
<h1>Patient {_e(data.patient_key[:16])}</h1>
<p>Pseudonymous key {_e(data.patient_key)}; sex {_e(data.sex) or "unknown"}; model {_e(data.model)}.</p>
<p class="risk" id="risk">{risk_text}</p>
<h2>Studies</h2>
{studies}
<h2>Lesions</h2>
{lesions}
<h2>Growth</h2>
<img id="growth-plot" src="{_png(plot_png)}" alt="mean diameter of each lesion over time, with Lung-RADS thresholds">
<h2>Key images</h2>
<div id="key-images">{"".join(figures) or "<p>no lesion</p>"}</div>
<footer>Generated by nightscan at {_e(generated_at.isoformat(timespec="seconds"))}. Sizes are mean diameters in mm,
volume doubling times (VDT) in days, Brock malignancy probabilities from 0 to 1. Screening support, not a
diagnosis.</footer>
</body>
</html>
"""


def patient_report_html(
    session: Session, settings: Settings, patient: Patient, model: str, *, every_study: bool = False
) -> str:
    """The HTML report of ``patient`` under ``model``: key images of each lesion at its latest study (at every
    study with ``every_study``), read from the archive."""
    data = timeline(session, patient, model)
    wanted = []
    for lesion in data.lesions:
        points = lesion.points if every_study else lesion.points[-1:]
        wanted += [(p.finding_id, lesion.label, p.study_date) for p in points]
    images = key_images(session, settings, wanted)
    return patient_html(data, lesion_growth_png(data), images)
