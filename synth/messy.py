"""One study's objects as a real archive holds them, with the mess real archives have, on request.

:func:`write_study_objects` writes a study's CT series through ``put(key, data)`` and, as :class:`Mess` asks:

- shuffled instance numbers: InstanceNumber is a random permutation of 1..n, unrelated to position;
- random file names: each slice's file name is a random token (hierarchical layout; flat keys are hashes);
- a localizer series (a frontal and a lateral projection, ImageType ORIGINAL\\PRIMARY\\LOCALIZER), in the
  series' transfer syntax, except that a JPEG 2000 localizer under 32 pixels (fewer than 32 slices) is written
  in explicit VR little endian (OpenJPEG cannot encode it);
- a non-image object: a Basic Text SR in its own series;
- a duplicate upload: one slice's exact bytes again, under a second key;
- a truncated file: one slice's bytes cut short inside its PixelData (the header stays readable), as an
  EXTRA object under its own key. The study keeps a complete, valid copy of every slice, so the truncated
  object (same SOPInstanceUID as a complete one) must be rejected or ignored, never make the study fail;
- a split study: the slices from a random index on are written under the top-level prefix ``incoming/``.

Every choice comes from ``rng`` and every UID from ``uid_entropy``: the same inputs give the same keys and
bytes. Memory: slices are encoded and written one at a time.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from enum import StrEnum

import numpy as np
from pydicom.uid import generate_uid

from synth.dicom import (
    EncodedInstance,
    EncodeOptions,
    LocalizerView,
    SeriesGeometry,
    SeriesHeader,
    TransferSyntax,
    derived_header,
    encode_series,
    localizer_series,
    structured_report,
)
from synth.layout import KeyLayout, object_key, resolve_layout

logger = logging.getLogger(__name__)

SPLIT_PREFIX = "incoming"
LOCALIZER_SERIES_OFFSET = 100  # localizer SeriesNumber = CT SeriesNumber + this
REPORT_SERIES_OFFSET = 200  # SR SeriesNumber = CT SeriesNumber + this
_PIXEL_DATA_TAG = b"\xe0\x7f\x10\x00"  # (7FE0,0010), little endian


class ObjectRole(StrEnum):
    """What a written object is, for the ground truth and for tests."""

    IMAGE = "image"  # one slice of the study's CT series (complete, valid)
    LOCALIZER = "localizer"  # an image of the localizer series
    STRUCTURED_REPORT = "structured_report"  # the non-image object
    DUPLICATE = "duplicate"  # the same bytes as an IMAGE, under a second key
    TRUNCATED = "truncated"  # an IMAGE's bytes cut short, under its own key


@dataclass(frozen=True)
class Mess:
    """Which real-world mess to write; all off by default (a clean study)."""

    shuffled_instance_numbers: bool = False
    random_file_names: bool = False
    localizer: bool = False
    structured_report: bool = False
    duplicate_upload: bool = False
    truncated_file: bool = False
    split_across_prefixes: bool = False

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if not isinstance(value, bool):
                raise TypeError(f"{field.name} must be a bool, got {type(value).__name__} {value!r}")

    @classmethod
    def everything(cls) -> Mess:
        """Every kind of mess at once."""
        return cls(**{field.name: True for field in fields(cls)})


@dataclass(frozen=True)
class WrittenObject:
    """One object written to the archive: its key, the SOPInstanceUID inside it, and its role."""

    key: str
    sop_instance_uid: str
    role: ObjectRole


def _token(rng: np.random.Generator) -> str:
    return rng.bytes(8).hex()


def _truncated(data: bytes, rng: np.random.Generator) -> bytes:
    """``data`` cut at a random byte inside its PixelData value (after the element's header)."""
    start = data.find(_PIXEL_DATA_TAG)
    if start < 0:
        raise ValueError("data has no PixelData element to cut short")
    first = start + 16  # past tag, VR and length (and, encapsulated, into the first item)
    if first >= len(data) - 1:
        raise ValueError(f"PixelData of {len(data) - start} bytes is too short to cut")
    return data[: int(rng.integers(first, len(data) - 1))]


def write_study_objects(
    put: Callable[[str, bytes], object],
    *,
    hu: np.ndarray,
    geometry: SeriesGeometry,
    header: SeriesHeader,
    options: EncodeOptions | None = None,
    layout: KeyLayout | str = KeyLayout.HIERARCHICAL,
    mess: Mess | None = None,
    rng: np.random.Generator,
    uid_entropy: str,
) -> list[WrittenObject]:
    """Write one study (its CT series of ``hu``, (z, y, x) in HU, plus the mess asked for) through ``put``.

    ``header`` describes the CT series; the localizer and the SR get their own series in the same study
    (SeriesNumber + 100 and + 200, UIDs derived from ``uid_entropy``). Keys follow ``layout`` (``mixed`` is
    resolved once for the study). Returns the objects in the order written.
    """
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    if not isinstance(uid_entropy, str) or not uid_entropy:
        raise ValueError(f"uid_entropy must be a non-empty str, got {uid_entropy!r}")
    mess = mess or Mess()
    options = options or EncodeOptions()
    study_layout = resolve_layout(layout, header.study_uid)
    if np.ndim(hu) != 3 or np.shape(hu)[0] < 1:
        raise ValueError(f"hu must be 3-D (z, y, x) with at least one slice, got shape {np.shape(hu)}")
    n_slices = int(np.shape(hu)[0])
    if n_slices < 2 and mess.split_across_prefixes:
        raise ValueError(f"hu must have at least 2 slices to split the study, got shape {np.shape(hu)}")
    written: list[WrittenObject] = []

    def write(
        instance: EncodedInstance,
        data: bytes,
        role: ObjectRole,
        series: SeriesHeader,
        *,
        name: str | None = None,
        prefix: str = "",
    ) -> None:
        key = object_key(
            study_layout,
            patient_id=series.patient_id,
            study_uid=series.study_uid,
            series_uid=series.series_uid,
            sop_uid=instance.sop_instance_uid,
            instance_number=instance.instance_number,
            name=name,
            prefix=prefix,
        )
        put(key, data)
        written.append(WrittenObject(key, instance.sop_instance_uid, role))

    if mess.localizer:
        localizer_options = options
        if min(n_slices, *np.shape(hu)[1:]) < options.transfer_syntax.min_image_size_px:
            localizer_options = replace(options, transfer_syntax=TransferSyntax.EXPLICIT_VR_LITTLE_ENDIAN)
        localizer_header = derived_header(
            header,
            series_uid=generate_uid(entropy_srcs=[uid_entropy, "localizer-series"]),
            series_number=header.series_number + LOCALIZER_SERIES_OFFSET,
            series_description="TOPOGRAM",
        )
        for instance in localizer_series(
            hu,
            geometry,
            localizer_header,
            views=(LocalizerView.FRONTAL, LocalizerView.LATERAL),
            options=localizer_options,
            uid_entropy=f"{uid_entropy}/localizer",
        ):
            write(instance, instance.data, ObjectRole.LOCALIZER, localizer_header)

    numbers = [int(n) + 1 for n in rng.permutation(n_slices)] if mess.shuffled_instance_numbers else None
    split_from = int(rng.integers(1, n_slices)) if mess.split_across_prefixes else n_slices
    duplicate_index = int(rng.integers(n_slices)) if mess.duplicate_upload else -1
    truncated_index = int(rng.integers(n_slices)) if mess.truncated_file else -1
    extras: list[tuple[EncodedInstance, str]] = []  # (instance, prefix) to write again after the series
    for instance in encode_series(
        hu, geometry, header, options=options, instance_numbers=numbers, uid_entropy=uid_entropy
    ):
        prefix = SPLIT_PREFIX if instance.slice_index >= split_from else ""
        name = _token(rng) if mess.random_file_names else None
        write(instance, instance.data, ObjectRole.IMAGE, header, name=name, prefix=prefix)
        if instance.slice_index in (duplicate_index, truncated_index):
            extras.append((instance, prefix))

    for instance, prefix in extras:
        stem = f"{instance.instance_number:04d}"
        if instance.slice_index == duplicate_index:
            write(instance, instance.data, ObjectRole.DUPLICATE, header, name=f"{stem}-1", prefix=prefix)
        if instance.slice_index == truncated_index:
            partial = _truncated(instance.data, rng)
            write(instance, partial, ObjectRole.TRUNCATED, header, name=f"{stem}-partial", prefix=prefix)

    if mess.structured_report:
        report_header = derived_header(
            header,
            series_uid=generate_uid(entropy_srcs=[uid_entropy, "report-series"]),
            series_number=header.series_number + REPORT_SERIES_OFFSET,
            series_description="REPORT",
        )
        report = structured_report(report_header, uid_entropy=f"{uid_entropy}/report")
        write(report, report.data, ObjectRole.STRUCTURED_REPORT, report_header)

    counts = Counter(obj.role.value for obj in written)
    logger.debug("wrote one study (%s layout): %s", study_layout.value, dict(sorted(counts.items())))
    return written
