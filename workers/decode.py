"""Decode one DICOM object into its frames' values (HU for CT, float32) and where each frame sits.

One object is one file: a classic single-frame CT slice, or an Enhanced CT object whose frames each
carry their own position and rescale in the functional groups. :func:`decode_object` is a pure function
of the bytes, so it runs in a thread or in a worker process alike (see :mod:`workers.series`).

Values: the stored values (pydicom masks BitsStored and sign-extends signed data), then the modality LUT
(RescaleSlope/RescaleIntercept, or a Modality LUT Sequence) in float32; pixels equal to PixelPaddingValue
(or inside PixelPaddingRangeLimit) become :data:`PADDING_HU`; MONOCHROME1 images other than CT (radiographs)
are inverted so that larger values are brighter, as in MONOCHROME2.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from io import BytesIO

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut

from workers.codecs import MissingCodecError, decoder_for

PADDING_HU = -1024.0  # value written where the scanner marked padding (outside the reconstruction circle): air
ENHANCED_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2.1"


class DecodeError(ValueError):
    """An object could not be decoded; the message names the object and the reason."""


@dataclass(frozen=True, slots=True)
class FrameRef:
    """One 2-D frame of an object and where it sits in the patient (DICOM LPS, mm).

    ``frame`` is the 0-based frame index within the object (0 for a single-frame image); ``position`` is the
    centre of the frame's first pixel (x, y, z); ``orientation`` the row cosines then the column cosines;
    ``pixel_spacing`` is (between rows, between columns) = (dy, dx) in mm. Projection images (radiographs)
    have no position or orientation: those are None, and such frames cannot form a volume.
    """

    key: str
    sop_instance_uid: str
    frame: int
    position: np.ndarray | None
    orientation: np.ndarray | None
    pixel_spacing: tuple[float, float] | None
    shape: tuple[int, int]  # (rows, columns)
    multi_frame: bool = False

    @property
    def frame_number(self) -> int | None:
        """DICOM's 1-based frame number in a multi-frame object (as SR and SEG reference it); None otherwise."""
        return self.frame + 1 if self.multi_frame else None


@dataclass(frozen=True, slots=True)
class DecodedObject:
    """An object's frames as stored, with what turns them into values: call :meth:`values` for HU (float32).

    Stored values take half the memory of float32 and cross between processes at half the cost; they are
    converted one frame at a time, as the volume is assembled. ``stored`` is (frames, rows, columns);
    ``rescale[f]`` is frame f's (slope, intercept); ``padding`` the (lowest, highest) stored value that marks
    padding; ``inverted_sum`` is set for MONOCHROME1 radiographs (value -> inverted_sum - value); ``padded``
    counts the padding pixels, which become :data:`PADDING_HU`.
    """

    key: str
    modality: str
    frames: tuple[FrameRef, ...]
    stored: np.ndarray
    rescale: tuple[tuple[float, float], ...]
    padding: tuple[int, int] | None
    inverted_sum: float | None
    padded: int

    def values(self, f: int) -> np.ndarray:
        """Frame f's values, HU for CT: (rows, columns) float32."""
        slope, intercept = self.rescale[f]
        values = self.stored[f].astype(np.float32)
        if slope != 1.0:
            values *= np.float32(slope)
        if intercept != 0.0:
            values += np.float32(intercept)
        if self.padding is not None:
            low, high = self.padding
            values[(self.stored[f] >= low) & (self.stored[f] <= high)] = PADDING_HU
        if self.inverted_sum is not None:
            np.subtract(np.float32(self.inverted_sum), values, out=values)
        return values

    @property
    def pixels(self) -> np.ndarray:
        """Every frame's values: (frames, rows, columns) float32."""
        return np.stack([self.values(f) for f in range(len(self.frames))])


def decode_object(key: str, data: bytes) -> DecodedObject:
    """Decode ``data`` (the whole object stored at ``key``); :class:`DecodeError` names the key and the reason."""
    ds = read_dataset(key, data)
    syntax = str(ds.file_meta.get("TransferSyntaxUID", ""))
    try:
        decoder, plugin = decoder_for(syntax)
    except MissingCodecError as exc:
        raise DecodeError(f"{key}: {exc}") from exc
    if int(ds.get("SamplesPerPixel", 1)) != 1:
        raise DecodeError(f"{key}: expected a grey-scale image, got SamplesPerPixel {ds.SamplesPerPixel}")
    frames = frame_refs(key, ds)
    try:
        stored, _ = decoder.as_array(ds, decoding_plugin=plugin)
    except Exception as exc:
        raise DecodeError(f"{key}: cannot decode pixel data ({pydicom.uid.UID(syntax).name}): {exc}") from exc
    stored = stored.reshape(len(frames), *frames[0].shape) if stored.ndim == 2 else stored
    if stored.shape != (len(frames), *frames[0].shape):
        raise DecodeError(f"{key}: pixel data of shape {stored.shape} does not match {len(frames)} frames")
    stored = stored.astype(stored.dtype.newbyteorder("="), copy=False)  # big endian data: native order
    padding = padding_range(ds)
    padded = int(((stored >= padding[0]) & (stored <= padding[1])).sum()) if padding else 0
    modality = str(ds.get("Modality", ""))
    inverted_sum = None
    if str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1" and modality != "CT":
        low, high = (float(v) for v in _lut_values(key, ds, stored_range(ds)))
        inverted_sum = low + high
    if "ModalityLUTSequence" in ds and "PerFrameFunctionalGroupsSequence" not in ds:
        values = _lut_values(key, ds, stored)  # a look-up table, not a line: applied here, once
        if padding is not None:
            values[(stored >= padding[0]) & (stored <= padding[1])] = PADDING_HU
        stored, rescale, padding = values, ((1.0, 0.0),) * len(frames), None
    else:
        rescale = tuple(rescale_of(key, ds, f) for f in range(len(frames)))
    return DecodedObject(key, modality, frames, stored, rescale, padding, inverted_sum, padded)


def read_dataset(key: str, data: bytes) -> Dataset:
    """Parse the whole object; :class:`DecodeError` when it is not readable DICOM or has no pixel data."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            ds = pydicom.dcmread(BytesIO(data), force=True)
    except Exception as exc:
        raise DecodeError(f"{key}: not a readable DICOM file: {exc}") from exc
    if "PixelData" not in ds:
        sop_class = pydicom.uid.UID(str(ds.get("SOPClassUID", "")))
        raise DecodeError(f"{key}: no Pixel Data: truncated, or not an image (SOP class {sop_class.name or 'unknown'})")
    if "TransferSyntaxUID" not in ds.file_meta:
        raise DecodeError(f"{key}: no Transfer Syntax UID in the file meta information")
    return ds


def frame_refs(key: str, ds: Dataset) -> tuple[FrameRef, ...]:
    """Where every frame of ``ds`` sits: from the functional groups for multi-frame objects, else the top level."""
    uid = str(ds.get("SOPInstanceUID", ""))
    shape = (int(ds.Rows), int(ds.Columns))
    try:
        if "PerFrameFunctionalGroupsSequence" in ds:
            return tuple(
                FrameRef(
                    key,
                    uid,
                    f,
                    _floats(_group(ds, f, "PlanePositionSequence").ImagePositionPatient, 3),
                    _floats(_group(ds, f, "PlaneOrientationSequence").ImageOrientationPatient, 6),
                    _spacing(_group(ds, f, "PixelMeasuresSequence").PixelSpacing),
                    shape,
                    multi_frame=True,
                )
                for f in range(int(ds.get("NumberOfFrames", 1)))
            )
        if int(ds.get("NumberOfFrames", 1) or 1) != 1:
            raise DecodeError(f"{key}: {ds.NumberOfFrames} frames without per-frame functional groups")
        spacing = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing")
        return (
            FrameRef(
                key,
                uid,
                0,
                _floats(ds.ImagePositionPatient, 3) if "ImagePositionPatient" in ds else None,
                _floats(ds.ImageOrientationPatient, 6) if "ImageOrientationPatient" in ds else None,
                _spacing(spacing) if spacing else None,
                shape,
            ),
        )
    except (AttributeError, KeyError, IndexError, TypeError, ValueError) as exc:
        raise DecodeError(f"{key}: missing or invalid geometry (position, orientation, pixel spacing): {exc}") from exc


def rescale_of(key: str, ds: Dataset, frame: int) -> tuple[float, float]:
    """Frame ``frame``'s (RescaleSlope, RescaleIntercept): HU = stored * slope + intercept for CT.

    Enhanced objects keep them in the Pixel Value Transformation functional group (shared or per frame);
    classic images at the top level. Absent: (1, 0).
    """
    source = ds
    if "PerFrameFunctionalGroupsSequence" in ds:
        source = _group(ds, frame, "PixelValueTransformationSequence", required=False) or ds
    try:
        return float(source.get("RescaleSlope", 1.0)), float(source.get("RescaleIntercept", 0.0))
    except (TypeError, ValueError) as exc:
        raise DecodeError(f"{key}: invalid rescale slope or intercept: {exc}") from exc


def _lut_values(key: str, ds: Dataset, stored: np.ndarray) -> np.ndarray:
    """The modality LUT (a Modality LUT Sequence, or rescale of frame 0) applied to ``stored``: float32."""
    if "ModalityLUTSequence" in ds:
        return np.asarray(apply_modality_lut(stored, ds), dtype=np.float32)
    slope, intercept = rescale_of(key, ds, 0)
    return stored.astype(np.float32) * np.float32(slope) + np.float32(intercept)


def padding_range(ds: Dataset) -> tuple[int, int] | None:
    """(lowest, highest) stored value marking padding: PixelPaddingValue up to PixelPaddingRangeLimit, inclusive."""
    if "PixelPaddingValue" not in ds:
        return None
    first = _as_stored(ds, ds.PixelPaddingValue)
    last = _as_stored(ds, ds.get("PixelPaddingRangeLimit", ds.PixelPaddingValue))
    return min(first, last), max(first, last)


def stored_range(ds: Dataset) -> np.ndarray:
    """The smallest and largest value BitsStored and PixelRepresentation allow, as a 1-D array of two."""
    bits = int(ds.BitsStored)
    if int(ds.get("PixelRepresentation", 0)) == 1:
        return np.array([-(1 << (bits - 1)), (1 << (bits - 1)) - 1], dtype=np.int64)
    return np.array([0, (1 << bits) - 1], dtype=np.int64)


def _as_stored(ds: Dataset, value: object) -> int:
    """A padding attribute as a stored value: raw bytes (an ambiguous VR) are read with the pixel's sign."""
    if isinstance(value, bytes):
        signed = int(ds.get("PixelRepresentation", 0)) == 1
        return int.from_bytes(value[:2], "little", signed=signed)
    return int(value)  # type: ignore[call-overload]


def _group(ds: Dataset, frame: int, name: str, *, required: bool = True) -> Dataset | None:
    """Item of functional group ``name`` for ``frame``: the per-frame one, else the shared one."""
    per_frame = ds.PerFrameFunctionalGroupsSequence[frame]
    if name in per_frame:
        return per_frame[name].value[0]
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared and name in shared[0]:
        return shared[0][name].value[0]
    if required:
        raise KeyError(f"functional group {name} missing for frame {frame + 1}")
    return None


def _floats(values: object, n: int) -> np.ndarray:
    out = np.asarray([float(v) for v in values], dtype=np.float64)  # type: ignore[attr-defined]
    if out.shape != (n,) or not np.all(np.isfinite(out)):
        raise ValueError(f"expected {n} finite numbers, got {values!r}")
    return out


def _spacing(values: object) -> tuple[float, float]:
    dy, dx = (float(v) for v in values)  # type: ignore[attr-defined]
    if dy <= 0 or dx <= 0:
        raise ValueError(f"pixel spacing must be positive, got {values!r}")
    return dy, dx
