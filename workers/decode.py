"""Decode one DICOM object into a slice in Hounsfield units (float32), keeping its geometry."""

from __future__ import annotations

from dataclasses import dataclass
from io import BytesIO

import numpy as np
import pydicom
from pydicom.pixels import apply_modality_lut


class DecodeError(ValueError):
    """An object could not be decoded; the message names the object and the reason."""


@dataclass(frozen=True, slots=True)
class Slice:
    """One decoded image: HU pixels (rows = y, columns = x) and where it sits in the patient (mm)."""

    key: str
    sop_instance_uid: str
    hu: np.ndarray
    position: np.ndarray  # ImagePositionPatient, mm (x, y, z)
    orientation: np.ndarray  # ImageOrientationPatient: row cosines, then column cosines
    pixel_spacing: tuple[float, float]  # (between rows, between columns) = (y, x), mm


def decode_slice(key: str, data: bytes) -> Slice:
    """Decode ``data`` (the whole object at ``key``) to HU with the modality LUT applied."""
    try:
        ds = pydicom.dcmread(BytesIO(data), force=True)
        syntax = ds.file_meta.get("TransferSyntaxUID", "unknown")
    except Exception as exc:
        raise DecodeError(f"{key}: not a readable DICOM file: {exc}") from exc
    try:
        stored = ds.pixel_array
    except Exception as exc:
        raise DecodeError(f"{key}: cannot decode pixel data (transfer syntax {syntax}): {exc}") from exc
    if stored.ndim != 2:
        raise DecodeError(f"{key}: expected one 2-D frame, got pixel array of shape {stored.shape}")
    try:
        hu = np.asarray(apply_modality_lut(stored, ds), dtype=np.float32)
        position = np.asarray([float(v) for v in ds.ImagePositionPatient], dtype=np.float64)
        orientation = np.asarray([float(v) for v in ds.ImageOrientationPatient], dtype=np.float64)
        spacing = (float(ds.PixelSpacing[0]), float(ds.PixelSpacing[1]))
    except (AttributeError, ValueError, TypeError, IndexError) as exc:
        raise DecodeError(f"{key}: missing or invalid geometry or rescale attributes: {exc}") from exc
    return Slice(key, str(ds.SOPInstanceUID), hu, position, orientation, spacing)
