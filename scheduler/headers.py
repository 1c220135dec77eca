"""Read a DICOM object's header with ranged GETs, and decide whether it is an image nightscan can use.

The first ``header_bytes`` are fetched; when the header runs past them (no Pixel Data tag yet and
more object left), the range grows fourfold until it covers the header or the whole object.
"""

from __future__ import annotations

import re
import struct
import warnings
from dataclasses import dataclass
from datetime import date
from io import BytesIO

import pydicom
from pydicom.errors import InvalidDicomError

from nightscan.storage import ObjectInfo, Storage

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2.1"
SUPPORTED_SOP_CLASSES = {CT_IMAGE_STORAGE: "CT Image Storage", ENHANCED_CT_IMAGE_STORAGE: "Enhanced CT"}

# Pixel Data (7FE0,0010) in little endian: explicit VR (OB/OW, 2 reserved bytes, 4-byte length) or implicit.
_PIXEL_DATA_EXPLICIT = re.compile(rb"\xe0\x7f\x10\x00(?:OB|OW)\x00\x00(....)", re.DOTALL)
_PIXEL_DATA_TAG = b"\xe0\x7f\x10\x00"
_UNDEFINED_LENGTH = 0xFFFFFFFF
SEQUENCE_DELIMITER = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"  # (FFFE,E0DD), length 0


class RejectedObjectError(ValueError):
    """An archive object that is not a usable image; the message is the recorded reason."""


@dataclass(frozen=True, slots=True)
class Header:
    """What the index keeps of one image instance. ``patient_id`` is hashed before it is stored."""

    sop_instance_uid: str
    sop_class_uid: str
    series_instance_uid: str
    study_instance_uid: str
    patient_id: str
    patient_sex: str | None
    patient_age_years: float | None
    study_date: date | None
    modality: str
    series_number: int | None
    instance_number: int | None
    frame_of_reference_uid: str | None
    image_type: tuple[str, ...]
    image_orientation: tuple[float, ...] | None
    image_position: tuple[float, ...] | None
    slice_thickness_mm: float | None
    rows: int | None
    columns: int | None
    transfer_syntax_uid: str | None
    n_frames: int = 1  # slices held by the object: NumberOfFrames of an Enhanced CT object, else 1


def fetch_header_bytes(storage: Storage, obj: ObjectInfo, first_bytes: int) -> bytes:
    """Fetch enough of ``obj`` to hold its whole header (up to the Pixel Data tag)."""
    length = first_bytes
    while True:
        if length >= obj.size:
            return storage.get(obj.key)
        data = storage.get_range(obj.key, 0, length)
        if _PIXEL_DATA_TAG in data:
            return data
        length *= 4


def read_header(obj: ObjectInfo, data: bytes, tail: bytes | None = None) -> Header:
    """Parse the header bytes of ``obj``; raise :class:`RejectedObjectError` with the reason if unusable.

    ``tail`` (from :func:`fetch_tail`) lets a truncated compressed object be recognised too.
    """
    if obj.size == 0:
        raise RejectedObjectError("empty object (0 bytes)")
    try:
        with warnings.catch_warnings():  # force=True on a non-DICOM file warns; the rejection says it all
            warnings.simplefilter("ignore", UserWarning)
            ds = pydicom.dcmread(BytesIO(data), stop_before_pixels=True, force=True)
    except (InvalidDicomError, EOFError, ValueError, struct.error, OSError) as exc:
        raise RejectedObjectError(f"not a readable DICOM file: {exc}") from exc
    sop_class = str(ds.get("SOPClassUID", "") or ds.file_meta.get("MediaStorageSOPClassUID", ""))
    if not sop_class:
        raise RejectedObjectError("not DICOM: no SOP Class UID")
    if sop_class not in SUPPORTED_SOP_CLASSES:
        name = pydicom.uid.UID(sop_class).name
        raise RejectedObjectError(f"not a CT image: SOP class {sop_class} ({name})")
    missing = [k for k in ("SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID", "PatientID") if not ds.get(k)]
    if missing:
        raise RejectedObjectError(f"missing required attributes: {', '.join(missing)}")
    _check_not_truncated(obj, data, tail)
    return Header(
        sop_instance_uid=str(ds.SOPInstanceUID),
        sop_class_uid=sop_class,
        series_instance_uid=str(ds.SeriesInstanceUID),
        study_instance_uid=str(ds.StudyInstanceUID),
        patient_id=str(ds.PatientID),
        patient_sex=str(ds.get("PatientSex", "")) or None,
        patient_age_years=_age_years(ds),
        study_date=_date(ds.get("StudyDate")),
        modality=str(ds.get("Modality", "")),
        series_number=_int(ds.get("SeriesNumber")),
        instance_number=_int(ds.get("InstanceNumber")),
        frame_of_reference_uid=str(ds.get("FrameOfReferenceUID", "")) or None,
        image_type=tuple(str(v) for v in ds.get("ImageType", [])),
        image_orientation=_floats(_attribute(ds, "PlaneOrientationSequence", "ImageOrientationPatient")),
        image_position=_floats(_attribute(ds, "PlanePositionSequence", "ImagePositionPatient")),
        slice_thickness_mm=_float(_attribute(ds, "PixelMeasuresSequence", "SliceThickness")),
        rows=_int(ds.get("Rows")),
        columns=_int(ds.get("Columns")),
        transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID) if "TransferSyntaxUID" in ds.file_meta else None,
        n_frames=_int(ds.get("NumberOfFrames")) or 1,
    )


def _attribute(ds: pydicom.Dataset, group: str, name: str) -> object:
    """``name`` at the top level, else in functional group ``group`` (shared, then the first frame's).

    Enhanced CT keeps position, orientation and pixel measures only in its functional groups.
    """
    if name in ds:
        return ds.get(name)
    for sequence in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        items = ds.get(sequence)
        if items and group in items[0] and items[0][group].value and name in items[0][group].value[0]:
            return items[0][group].value[0].get(name)
    return None


def fetch_tail(storage: Storage, obj: ObjectInfo, data: bytes) -> bytes | None:
    """The object's last 8 bytes when its Pixel Data is encapsulated (compressed), else None.

    Encapsulated Pixel Data has no declared length: a complete object ends with the sequence
    delimiter, which a truncated one lacks. One more small ranged GET, for compressed objects only.
    """
    found = _pixel_data_length(data)
    if found is None or found[1] != _UNDEFINED_LENGTH or obj.size < len(SEQUENCE_DELIMITER):
        return None
    if len(data) >= obj.size:
        return data[-len(SEQUENCE_DELIMITER) :]
    return storage.get_range(obj.key, obj.size - len(SEQUENCE_DELIMITER), len(SEQUENCE_DELIMITER))


def _pixel_data_length(data: bytes) -> tuple[int, int] | None:
    """(offset of the value, declared length) of the Pixel Data element in ``data``, if it is there."""
    match = _PIXEL_DATA_EXPLICIT.search(data)
    if match is not None:
        return match.end(), struct.unpack("<I", match.group(1))[0]
    index = data.find(_PIXEL_DATA_TAG)
    if index < 0 or index + 8 > len(data):
        return None
    return index + 8, struct.unpack("<I", data[index + 4 : index + 8])[0]


def _check_not_truncated(obj: ObjectInfo, data: bytes, tail: bytes | None) -> None:
    """Reject an object whose Pixel Data holds fewer bytes than it declares, or lacks its end delimiter."""
    found = _pixel_data_length(data)
    if found is None:
        return
    value_start, length = found
    if length == _UNDEFINED_LENGTH:
        if tail is not None and tail != SEQUENCE_DELIMITER:
            raise RejectedObjectError("truncated: encapsulated Pixel Data does not end with a sequence delimiter")
    elif value_start + length > obj.size:
        raise RejectedObjectError(
            f"truncated: Pixel Data declares {length} bytes but only {obj.size - value_start} remain"
        )


def _int(value: object) -> int | None:
    try:
        return int(value) if value not in (None, "") else None  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return None


def _float(value: object) -> float | None:
    try:
        return float(value) if value not in (None, "") else None  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _floats(value: object) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        return tuple(float(v) for v in value)  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        return None


def _date(value: object) -> date | None:
    text = str(value or "")
    try:
        return date(int(text[0:4]), int(text[4:6]), int(text[6:8])) if len(text) >= 8 else None
    except ValueError:
        return None


def _age_years(ds: pydicom.Dataset) -> float | None:
    """PatientAge (e.g. ``063Y``), else the years between PatientBirthDate and StudyDate."""
    age = str(ds.get("PatientAge", ""))
    units = {"Y": 1.0, "M": 1 / 12, "W": 7 / 365.25, "D": 1 / 365.25}
    if len(age) == 4 and age[:3].isdigit() and age[3] in units:
        return round(int(age[:3]) * units[age[3]], 2)
    birth, study = _date(ds.get("PatientBirthDate")), _date(ds.get("StudyDate"))
    if birth and study and study >= birth:
        return round((study - birth).days / 365.25, 2)
    return None
