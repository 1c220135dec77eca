"""Key images: the axial slice through a nodule, read from the archive, windowed for the lung, the nodule outlined.

The slice is the one the finding names (``findings.sop_instance_uid`` and ``frame_number``), found through
``instances`` and ``archive_objects`` and read with :mod:`nightscan.storage`, decoded to HU by
:func:`workers.decode.decode_object`. The outline is an ellipse of the finding's mean diameter (mm) around
its centre, drawn at the slice's pixel spacing: the size that was measured, not a segmentation contour.
Images carry no identifier: the pixels, the lesion label, the study date and the size.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Ellipse
from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import ArchiveObject, Finding, Instance
from nightscan.pseudonym import redact_key
from nightscan.settings import Settings
from nightscan.storage import Storage, StorageError, open_storage

log = logging.getLogger(__name__)

LUNG_WINDOW_HU = (-600.0, 1500.0)
"""Lung window: (level, width) in HU."""
ZOOM_HALF_WIDTH_MM = 30.0
"""Half the side of the zoomed panel around the nodule, mm."""


class KeyImageError(ValueError):
    """A key image could not be made; the message names the finding and the reason (never the object key)."""


@dataclass(frozen=True, slots=True)
class KeyImage:
    """The PNG of one finding's slice (None when it could not be read: ``error`` says why, without PHI)."""

    finding_id: int
    lesion: str | None
    study_date: date | None
    diameter_mm: float
    png: bytes | None
    error: str | None = None


def pixel_of(
    point_mm: np.ndarray, position_mm: np.ndarray, orientation: np.ndarray, spacing_mm: tuple[float, float]
) -> tuple[float, float]:
    """(row, column) of a patient-space point (x, y, z in mm) projected on a frame, as floats.

    ``position_mm`` is the centre of the frame's first pixel, ``orientation`` the row cosines then the
    column cosines (6 values), ``spacing_mm`` (between rows, between columns).
    """
    row_cosines, column_cosines = np.asarray(orientation[:3], float), np.asarray(orientation[3:], float)
    offset = np.asarray(point_mm, float) - np.asarray(position_mm, float)
    return float(offset @ column_cosines / spacing_mm[0]), float(offset @ row_cosines / spacing_mm[1])


def render_slice(
    hu: np.ndarray,
    centre_rc: tuple[float, float],
    diameter_mm: float,
    spacing_mm: tuple[float, float],
    title: str,
    *,
    dpi: int = 100,
) -> bytes:
    """A PNG of the slice ``hu`` (rows, columns; HU) in the lung window: the whole slice and a zoom around
    ``centre_rc`` (row, column), each with an ellipse of ``diameter_mm`` at ``spacing_mm`` (dy, dx)."""
    level, width = LUNG_WINDOW_HU
    low, high = level - width / 2, level + width / 2
    row, col = centre_rc
    dy, dx = spacing_mm
    figure = Figure(figsize=(8.0, 4.2), dpi=dpi)
    FigureCanvasAgg(figure)
    whole, zoom = figure.subplots(1, 2)
    half_rows, half_cols = ZOOM_HALF_WIDTH_MM / dy, ZOOM_HALF_WIDTH_MM / dx
    for axes, limits in (
        (whole, None),
        (zoom, (col - half_cols, col + half_cols, row + half_rows, row - half_rows)),
    ):
        axes.imshow(hu, cmap="gray", vmin=low, vmax=high, interpolation="nearest")
        axes.add_patch(
            Ellipse(
                (col, row),
                width=diameter_mm / dx,
                height=diameter_mm / dy,
                fill=False,
                edgecolor="red",
                linewidth=1.5,
            )
        )
        if limits is not None:
            axes.set_xlim(limits[0], limits[1])
            axes.set_ylim(limits[2], limits[3])
        axes.set_axis_off()
    whole.set_title("axial slice", fontsize=8)
    zoom.set_title(f"{2 * ZOOM_HALF_WIDTH_MM:g} mm around the nodule", fontsize=8)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


@dataclass(frozen=True, slots=True)
class _Source:
    finding: Finding
    source: str
    key: str


def _sources(session: Session, finding_ids: Iterable[int]) -> dict[int, _Source]:
    rows = session.execute(
        select(Finding, ArchiveObject.source, ArchiveObject.key)
        .join(Instance, Instance.sop_instance_uid == Finding.sop_instance_uid)
        .join(ArchiveObject, ArchiveObject.id == Instance.object_id)
        .where(Finding.id.in_(list(finding_ids)))
    ).all()
    return {f.id: _Source(f, source, key) for f, source, key in rows}


def key_image(storage: Storage, finding: Finding, key: str, title: str) -> bytes:
    """The PNG of ``finding``'s slice, read at ``key`` from ``storage``; KeyImageError says why not."""
    from workers.decode import DecodeError, decode_object

    try:
        decoded = decode_object(key, storage.get(key))
    except (StorageError, DecodeError, OSError) as exc:
        log.warning("finding %d: slice %s unreadable: %s", finding.id, redact_key(key), type(exc).__name__)
        raise KeyImageError(f"finding {finding.id}: its slice could not be read ({type(exc).__name__})") from None
    index = (finding.frame_number or 1) - 1
    if not 0 <= index < len(decoded.frames):
        raise KeyImageError(
            f"finding {finding.id}: frame {finding.frame_number} is not in an object of {len(decoded.frames)}"
        )
    frame = decoded.frames[index]
    if frame.position is None or frame.orientation is None or frame.pixel_spacing is None:
        raise KeyImageError(f"finding {finding.id}: its slice has no position, orientation or pixel spacing")
    centre = np.array([finding.center_x_mm, finding.center_y_mm, finding.center_z_mm])
    rc = pixel_of(centre, frame.position, frame.orientation, frame.pixel_spacing)
    return render_slice(decoded.values(index), rc, finding.diameter_mm, frame.pixel_spacing, title)


def key_images(
    session: Session, settings: Settings, findings: Iterable[tuple[int, str | None, date | None]]
) -> list[KeyImage]:
    """Key images of ``findings``, given as (finding id, lesion label or None, study date), in that order.

    A finding whose slice is not indexed or cannot be read gets a :class:`KeyImage` with ``png`` None and
    the reason in ``error``.
    """
    wanted = list(findings)
    sources = _sources(session, [f for f, _, _ in wanted])
    storages: dict[str, Storage] = {}
    images = []
    for finding_id, lesion, study_date in wanted:
        found = sources.get(finding_id)
        if found is None:
            images.append(KeyImage(finding_id, lesion, study_date, float("nan"), None, "its slice is not indexed"))
            continue
        f = found.finding
        kind = f" {f.nodule_type.replace('_', '-')}" if f.nodule_type else ""
        title = (
            f"{lesion or 'finding ' + str(f.id)} on {study_date or 'an undated study'}: {f.diameter_mm:.1f} mm{kind}"
        )
        if found.source not in storages:
            storages[found.source] = open_storage(found.source, settings)
        try:
            png = key_image(storages[found.source], f, found.key, title)
            images.append(KeyImage(finding_id, lesion, study_date, f.diameter_mm, png))
        except KeyImageError as exc:
            images.append(KeyImage(finding_id, lesion, study_date, f.diameter_mm, None, str(exc)))
    return images
