"""Encode synthetic volumes as DICOM the way scanners write them: CT series, localizers and a text SR.

Geometry convention (the study worker relies on it): voxel (k, i, j) of a (z, y, x) volume lies at the
patient position (LPS, mm)

    origin_xyz_mm + j * dx * row_cosine + i * dy * column_cosine + k * dz * normal

with ImageOrientationPatient = row_cosine + column_cosine (axial [1, 0, 0, 0, 1, 0] by default) and
normal = row_cosine x column_cosine. Slice k has ImagePositionPatient origin + k * dz * normal and
PixelSpacing [dy, dx] (row spacing, column spacing).

Pixel storage (see :class:`EncodeOptions`): signed 16-bit (PixelRepresentation 1, BitsStored 16), unsigned
12-bit in 16 (PixelRepresentation 0, BitsStored 12) or unsigned 8-bit (BitsAllocated 8, for JPEG Baseline; it
needs RescaleSlope >= 4095 / 255 HU to cover the CT range); stored = round((HU - intercept) / slope), clipped to
the stored range; the defaults are RescaleIntercept -1024 and RescaleSlope 1 (stored = HU + 1024).

Transfer syntaxes (see :class:`TransferSyntax`), and what encodes them:

- explicit VR little and big endian (native pixels byte-swapped to big endian), implicit VR little endian and
  deflated explicit VR little endian: pydicom alone;
- RLE Lossless: pydicom (faster with pylibjpeg-rle);
- JPEG 2000 Lossless, and JPEG 2000 (lossy: irreversible 9/7 wavelet at :data:`JPEG2000_PSNR_DB`): pylibjpeg +
  pylibjpeg-openjpeg;
- JPEG-LS Lossless, and JPEG-LS Near-Lossless (NEAR = :data:`JPEG_LS_NEAR`): pyjpegls;
- JPEG Lossless SV1 (Process 14, predictor 1): GDCM (python-gdcm), which writes sample precision 16 even for
  12-bit data;
- JPEG Lossless (Process 14) with predictor :data:`JPEG_LOSSLESS_PREDICTOR`: this module's own NumPy encoder
  (:func:`jpeg_lossless_codestream`; precision = BitsStored, a Huffman table optimal for each frame);
- JPEG Baseline (8-bit only): Pillow at quality :data:`JPEG_BASELINE_QUALITY`.

HTJ2K is not offered: no installed package encodes it (OpenJPEG 2.5, inside pylibjpeg-openjpeg 2.6, decodes HTJ2K
but has no HT block encoder, and GDCM 3.2 names the syntaxes but cannot convert to them). Reading back the JPEG
Lossless syntaxes with pydicom needs GDCM (or pylibjpeg-libjpeg). A codec is checked when options name it, never at
import. Lossy syntaxes add LossyImageCompression "01", LossyImageCompressionRatio (per image) and
LossyImageCompressionMethod. pydicom decodes a big endian file's pixel_array with a big-endian dtype ('>i2'),
which, e.g., torch.from_numpy refuses: readers must convert to native byte order.

Speed: the slices of a series share all but five elements, so :func:`encode_series` encodes the shared
elements once per series and splices the per-slice ones in; its bytes are identical to
``dataset_to_bytes(ds)`` for the datasets :func:`series_datasets` yields.
"""

from __future__ import annotations

import copy
import importlib.util
import io
import itertools
import logging
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import NamedTuple

import numpy as np
from pydicom import dcmwrite
from pydicom.charset import convert_encodings
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element, write_dataset, write_file_meta_info
from pydicom.pixels import get_encoder
from pydicom.sequence import Sequence as DicomSequence
from pydicom.tag import Tag
from pydicom.uid import (
    JPEG2000,
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
    generate_uid,
)

from nightscan.enums import to_enum

logger = logging.getLogger(__name__)

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
BASIC_TEXT_SR_STORAGE = "1.2.840.10008.5.1.4.1.1.88.11"
RESCALE_INTERCEPT_HU = -1024
RESCALE_SLOPE = 1
DEFAULT_ORIGIN_XYZ_MM = (-160.0, -160.0, -300.0)
AXIAL_ORIENTATION = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
# The lung window written as WindowCenter / WindowWidth (HU).
WINDOW_CENTER_HU = -600
WINDOW_WIDTH_HU = 1500
# The CT number range a 12-bit scanner stores; every EncodeOptions must represent it exactly.
CT_RANGE_HU = (-1024.0, 3071.0)

_CHARACTER_SET = "ISO_IR 100"
_ENCODINGS = convert_encodings([_CHARACTER_SET])
_PREAMBLE = b"\x00" * 128 + b"DICM"
# Elements that differ between the slices of one series, in tag order (and LossyImageCompressionRatio).
_PER_SLICE_TAGS = (
    Tag(0x0008, 0x0018),  # SOPInstanceUID
    Tag(0x0020, 0x0013),  # InstanceNumber
    Tag(0x0020, 0x0032),  # ImagePositionPatient
    Tag(0x0020, 0x1041),  # SliceLocation
    Tag(0x7FE0, 0x0010),  # PixelData
)
_LOSSY_RATIO_TAG = Tag(0x0028, 0x2112)  # LossyImageCompressionRatio: per slice too, in lossy syntaxes
_POSITION_DECIMALS = 4
_COSINE_DECIMALS = 6


class TransferSyntax(StrEnum):
    """How pixel data (and the dataset) are encoded in the file."""

    EXPLICIT_VR_LITTLE_ENDIAN = "explicit-vr-little-endian"
    IMPLICIT_VR_LITTLE_ENDIAN = "implicit-vr-little-endian"
    RLE_LOSSLESS = "rle-lossless"
    JPEG2000_LOSSLESS = "jpeg2000-lossless"
    JPEG_LS_LOSSLESS = "jpeg-ls-lossless"
    EXPLICIT_VR_BIG_ENDIAN = "explicit-vr-big-endian"
    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN = "deflated-explicit-vr-little-endian"
    JPEG_LOSSLESS_SV1 = "jpeg-lossless-sv1"
    JPEG_LOSSLESS = "jpeg-lossless"
    JPEG_LS_NEAR_LOSSLESS = "jpeg-ls-near-lossless"
    JPEG2000 = "jpeg2000"
    JPEG_BASELINE = "jpeg-baseline"

    @property
    def uid(self) -> UID:
        """The Transfer Syntax UID."""
        return _SYNTAX_UIDS[self]

    @property
    def is_compressed(self) -> bool:
        """Whether pixel data is encapsulated (compressed frames)."""
        return self.uid.is_compressed

    @property
    def is_implicit_vr(self) -> bool:
        """Whether data elements are written without their VR."""
        return self is TransferSyntax.IMPLICIT_VR_LITTLE_ENDIAN

    @property
    def is_little_endian(self) -> bool:
        """Whether the dataset (and native pixel data) is little endian; only explicit VR big endian is not."""
        return self is not TransferSyntax.EXPLICIT_VR_BIG_ENDIAN

    @property
    def is_deflated(self) -> bool:
        """Whether the dataset after the file meta information is deflate-compressed (RFC 1951, no header)."""
        return self is TransferSyntax.DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN

    @property
    def is_lossy(self) -> bool:
        """Whether decoded pixels may differ from the stored values written (see :attr:`max_error`)."""
        return self in _LOSSY_METHODS

    @property
    def lossy_method(self) -> str | None:
        """LossyImageCompressionMethod (the standard's number) of a lossy syntax, else None."""
        return _LOSSY_METHODS.get(self)

    @property
    def max_error(self) -> int | None:
        """The largest difference between a decoded and a written stored value: 0 for lossless syntaxes, NEAR for
        JPEG-LS Near-Lossless, None (no bound, small in practice) for JPEG 2000 and JPEG Baseline."""
        if not self.is_lossy:
            return 0
        return JPEG_LS_NEAR if self is TransferSyntax.JPEG_LS_NEAR_LOSSLESS else None

    @property
    def bits_allocated(self) -> int | None:
        """The only BitsAllocated the syntax can encode (8 for JPEG Baseline), or None when 8 and 16 both work."""
        return 8 if self is TransferSyntax.JPEG_BASELINE else None

    @property
    def min_image_size_px(self) -> int:
        """The smallest Rows and Columns the encoder takes: 32 for JPEG 2000 (OpenJPEG's encoder always uses
        6 resolution levels), else 1."""
        return 32 if self in (TransferSyntax.JPEG2000_LOSSLESS, TransferSyntax.JPEG2000) else 1

    @property
    def codec_packages(self) -> str:
        """The pip requirement(s) that give an encoder for this syntax ("" when pydicom or this module encodes it)."""
        return _CODEC_PACKAGES.get(self, "")


_SYNTAX_UIDS = {
    TransferSyntax.EXPLICIT_VR_LITTLE_ENDIAN: ExplicitVRLittleEndian,
    TransferSyntax.IMPLICIT_VR_LITTLE_ENDIAN: ImplicitVRLittleEndian,
    TransferSyntax.RLE_LOSSLESS: RLELossless,
    TransferSyntax.JPEG2000_LOSSLESS: JPEG2000Lossless,
    TransferSyntax.JPEG_LS_LOSSLESS: JPEGLSLossless,
    TransferSyntax.EXPLICIT_VR_BIG_ENDIAN: ExplicitVRBigEndian,
    TransferSyntax.DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN: DeflatedExplicitVRLittleEndian,
    TransferSyntax.JPEG_LOSSLESS_SV1: JPEGLosslessSV1,
    TransferSyntax.JPEG_LOSSLESS: JPEGLossless,
    TransferSyntax.JPEG_LS_NEAR_LOSSLESS: JPEGLSNearLossless,
    TransferSyntax.JPEG2000: JPEG2000,
    TransferSyntax.JPEG_BASELINE: JPEGBaseline8Bit,
}
_CODEC_PACKAGES = {
    TransferSyntax.JPEG2000_LOSSLESS: "pylibjpeg pylibjpeg-openjpeg",
    TransferSyntax.JPEG2000: "pylibjpeg pylibjpeg-openjpeg",
    TransferSyntax.JPEG_LS_LOSSLESS: "pyjpegls",
    TransferSyntax.JPEG_LS_NEAR_LOSSLESS: "pyjpegls",
    TransferSyntax.JPEG_LOSSLESS_SV1: "python-gdcm",
    TransferSyntax.JPEG_BASELINE: "pillow",
}
# Syntaxes this module encodes with a package of its own choosing (not a pydicom encoder): the modules they need.
_ENCODER_MODULES = {
    TransferSyntax.JPEG_LOSSLESS_SV1: ("gdcm",),
    TransferSyntax.JPEG_LOSSLESS: (),
    TransferSyntax.JPEG_BASELINE: ("PIL",),
}
_LOSSY_METHODS = {
    TransferSyntax.JPEG_LS_NEAR_LOSSLESS: "ISO_14495_1",
    TransferSyntax.JPEG2000: "ISO_15444_1",
    TransferSyntax.JPEG_BASELINE: "ISO_10918_1",
}
# Encoder settings of the lossy and JPEG Lossless syntaxes.
JPEG_LS_NEAR = 2
JPEG2000_PSNR_DB = 100.0
JPEG_BASELINE_QUALITY = 95
JPEG_LOSSLESS_PREDICTOR = 7


class PixelRepresentation(StrEnum):
    """Stored pixel type: signed 16-bit, unsigned 12 bits stored in 16 allocated, or unsigned 8-bit."""

    SIGNED = "signed"
    UNSIGNED = "unsigned"
    UNSIGNED_8 = "unsigned-8"

    @property
    def dicom_value(self) -> int:
        """DICOM PixelRepresentation: 1 for two's complement, 0 for unsigned."""
        return 1 if self is PixelRepresentation.SIGNED else 0

    @property
    def bits_allocated(self) -> int:
        """DICOM BitsAllocated: 8 for unsigned-8, else 16."""
        return 8 if self is PixelRepresentation.UNSIGNED_8 else 16

    @property
    def bits_stored(self) -> int:
        """DICOM BitsStored (HighBit is BitsStored - 1)."""
        return {PixelRepresentation.SIGNED: 16, PixelRepresentation.UNSIGNED: 12}.get(self, 8)

    @property
    def dtype(self) -> np.dtype:
        """The little-endian NumPy dtype of stored values."""
        return np.dtype({PixelRepresentation.SIGNED: "<i2", PixelRepresentation.UNSIGNED: "<u2"}.get(self, "u1"))

    @property
    def stored_range(self) -> tuple[int, int]:
        """The smallest and largest stored value."""
        if self is PixelRepresentation.SIGNED:
            return (-(2**15), 2**15 - 1)
        return (0, 2**self.bits_stored - 1)


class CodecUnavailableError(RuntimeError):
    """The transfer syntax needs an encoder package that is not installed."""


def codec_is_available(transfer_syntax: TransferSyntax | str) -> bool:
    """Whether pixel data can be encoded in ``transfer_syntax`` with the packages installed here."""
    syntax = to_enum(TransferSyntax, transfer_syntax, "transfer_syntax")
    if not syntax.is_compressed:
        return True
    if syntax in _ENCODER_MODULES:
        return all(importlib.util.find_spec(module) is not None for module in _ENCODER_MODULES[syntax])
    return bool(get_encoder(syntax.uid).is_available)


def require_codec(transfer_syntax: TransferSyntax | str) -> TransferSyntax:
    """``transfer_syntax`` as an enum; raises CodecUnavailableError naming the package to install."""
    syntax = to_enum(TransferSyntax, transfer_syntax, "transfer_syntax")
    if not codec_is_available(syntax):
        raise CodecUnavailableError(
            f"transfer_syntax {syntax.value!r} ({syntax.uid.name}, {syntax.uid}) needs an encoder that is not "
            f"installed: pip install {syntax.codec_packages or 'pydicom>=3.0'}"
        )
    return syntax


@dataclass(frozen=True)
class EncodeOptions:
    """How pixel values are stored and the file is encoded.

    ``rescale_intercept`` (HU) and ``rescale_slope`` (HU per stored unit) are the modality LUT:
    HU = stored * slope + intercept. Any pair is allowed whose stored range covers the CT range
    -1024 to 3071 HU (:data:`CT_RANGE_HU`), e.g. signed with intercept -1000 or -8192, so that readers must
    really apply the modality LUT. Strings are accepted for the enums.

    JPEG Baseline encodes 8 bits per pixel only: it needs ``pixel_representation="unsigned-8"`` (BitsAllocated and
    BitsStored 8) and then a slope of at least 4095 / 255 HU, e.g. ``EncodeOptions("jpeg-baseline", "unsigned-8",
    -1024, 16.1)``, which keeps HU to within half a slope plus the JPEG error; 16-bit storage is refused with a
    ValueError. JPEG-LS Near-Lossless with signed storage narrows the stored range by NEAR at both ends (see
    :attr:`stored_range`), as a decoded value must not wrap around.
    """

    transfer_syntax: TransferSyntax = TransferSyntax.EXPLICIT_VR_LITTLE_ENDIAN
    pixel_representation: PixelRepresentation = PixelRepresentation.SIGNED
    rescale_intercept: float = float(RESCALE_INTERCEPT_HU)
    rescale_slope: float = float(RESCALE_SLOPE)

    def __post_init__(self) -> None:
        object.__setattr__(self, "transfer_syntax", require_codec(self.transfer_syntax))
        storage = to_enum(PixelRepresentation, self.pixel_representation, "pixel_representation")
        object.__setattr__(self, "pixel_representation", storage)
        syntax = self.transfer_syntax
        if syntax.bits_allocated is not None and syntax.bits_allocated != storage.bits_allocated:
            raise ValueError(
                f"transfer_syntax {syntax.value!r} encodes only {syntax.bits_allocated}-bit pixels, got "
                f"pixel_representation {storage.value!r} ({storage.bits_allocated} bits allocated): use "
                f"pixel_representation='unsigned-8' with a rescale_slope of at least {_min_slope(2**8):.4g}"
            )
        for name in ("rescale_intercept", "rescale_slope"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not np.isfinite(value):
                raise TypeError(f"{name} must be a finite number, got {type(value).__name__} {value!r}")
            object.__setattr__(self, name, float(value))
        if self.rescale_slope <= 0:
            raise ValueError(f"rescale_slope must be > 0 (HU per stored unit), got {self.rescale_slope!r}")
        low, high = self.stored_range
        covered = (
            low * self.rescale_slope + self.rescale_intercept,
            high * self.rescale_slope + self.rescale_intercept,
        )
        if covered[0] > CT_RANGE_HU[0] or covered[1] < CT_RANGE_HU[1]:
            min_slope = _min_slope(high - low + 1)
            hint = f" (needs a rescale_slope of at least {min_slope:.4g})" if self.rescale_slope < min_slope else ""
            raise ValueError(
                f"rescale_intercept {self.rescale_intercept!r} and rescale_slope {self.rescale_slope!r} with "
                f"{storage.value} storage cover {covered[0]:g} to {covered[1]:g} HU, which must include "
                f"{CT_RANGE_HU[0]:g} to {CT_RANGE_HU[1]:g} HU{hint}"
            )

    @property
    def stored_range(self) -> tuple[int, int]:
        """The smallest and largest stored value written: the storage's range, narrowed by NEAR at both ends for
        JPEG-LS Near-Lossless with signed storage (JPEG-LS knows no sign, so an error could wrap around)."""
        low, high = self.pixel_representation.stored_range
        if self.transfer_syntax is TransferSyntax.JPEG_LS_NEAR_LOSSLESS and self.pixel_representation.dicom_value:
            return (low + JPEG_LS_NEAR, high - JPEG_LS_NEAR)
        return (low, high)

    def stored_from_hu(self, hu: np.ndarray) -> np.ndarray:
        """Stored values for HU: round((HU - intercept) / slope), clipped to the stored range; same shape."""
        stored = np.rint((np.asarray(hu, dtype=np.float64) - self.rescale_intercept) / self.rescale_slope)
        low, high = self.stored_range
        return np.clip(stored, low, high).astype(self.pixel_representation.dtype)


def _min_slope(n_values: int) -> float:
    """The smallest RescaleSlope with which ``n_values`` stored values can cover the CT range."""
    return (CT_RANGE_HU[1] - CT_RANGE_HU[0]) / (n_values - 1)


@dataclass(frozen=True)
class SeriesGeometry:
    """Where a (z, y, x) volume lies in patient space (LPS, mm); see the module docstring for the convention.

    ``origin_xyz_mm`` is the centre of voxel (0, 0, 0); ``spacing_zyx_mm`` the voxel size (slice spacing dz,
    row spacing dy, column spacing dx); ``orientation`` is ImageOrientationPatient (row cosine, then column
    cosine), rounded to 6 decimals as written.
    """

    origin_xyz_mm: tuple[float, float, float] = DEFAULT_ORIGIN_XYZ_MM
    spacing_zyx_mm: tuple[float, float, float] = (2.5, 0.7, 0.7)
    orientation: tuple[float, float, float, float, float, float] = AXIAL_ORIENTATION

    def __post_init__(self) -> None:
        origin = _floats(self.origin_xyz_mm, 3, "origin_xyz_mm")
        spacing = _floats(self.spacing_zyx_mm, 3, "spacing_zyx_mm")
        if min(spacing) <= 0:
            raise ValueError(f"spacing_zyx_mm must be three positive values in mm, got {self.spacing_zyx_mm!r}")
        cosines = tuple(round(c, _COSINE_DECIMALS) + 0.0 for c in _floats(self.orientation, 6, "orientation"))
        row, column = np.asarray(cosines[:3]), np.asarray(cosines[3:])
        if abs(np.linalg.norm(row) - 1) > 1e-5 or abs(np.linalg.norm(column) - 1) > 1e-5 or abs(row @ column) > 1e-5:
            raise ValueError(f"orientation must be two orthogonal unit vectors, got {self.orientation!r}")
        object.__setattr__(self, "origin_xyz_mm", origin)
        object.__setattr__(self, "spacing_zyx_mm", spacing)
        object.__setattr__(self, "orientation", cosines)

    @property
    def row_cosine(self) -> np.ndarray:
        """Direction (x, y, z) of increasing column index j."""
        return np.asarray(self.orientation[:3])

    @property
    def column_cosine(self) -> np.ndarray:
        """Direction (x, y, z) of increasing row index i."""
        return np.asarray(self.orientation[3:])

    @property
    def normal(self) -> np.ndarray:
        """Direction (x, y, z) of increasing slice index k: row_cosine x column_cosine."""
        return np.cross(self.row_cosine, self.column_cosine)

    def voxel_to_patient_mm(self, center_zyx_vox: Sequence[float] | np.ndarray) -> tuple[float, float, float]:
        """Patient position (x, y, z) in mm (LPS) of a fractional voxel coordinate (z, y, x)."""
        k, i, j = (float(c) for c in center_zyx_vox)
        dz, dy, dx = self.spacing_zyx_mm
        position = (
            np.asarray(self.origin_xyz_mm)
            + j * dx * self.row_cosine
            + i * dy * self.column_cosine
            + k * dz * self.normal
        )
        return (float(position[0]), float(position[1]), float(position[2]))

    def slice_position_mm(self, k: int) -> tuple[float, float, float]:
        """ImagePositionPatient (x, y, z) of slice k, in mm, rounded as written."""
        x, y, z = self.voxel_to_patient_mm((k, 0, 0))
        return (round(x, _POSITION_DECIMALS), round(y, _POSITION_DECIMALS), round(z, _POSITION_DECIMALS))


def _floats(values: Sequence[float], n: int, argument: str) -> tuple[float, ...]:
    try:
        out = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise TypeError(f"{argument} must be {n} numbers, got {values!r}") from None
    if len(out) != n or not all(np.isfinite(out)):
        raise ValueError(f"{argument} must be {n} finite numbers, got {values!r}")
    return out


@dataclass(frozen=True)
class SeriesHeader:
    """Identifying attributes shared by every instance of one series (all fake; no real PHI)."""

    patient_id: str
    patient_name: str
    patient_birth_date: str  # YYYYMMDD
    patient_sex: str  # "M" | "F" | "O"
    study_uid: str
    series_uid: str
    frame_of_reference_uid: str
    study_date: str  # YYYYMMDD
    study_time: str  # HHMMSS
    accession_number: str
    series_number: int = 1
    study_description: str = "CT CHEST LOW DOSE"
    series_description: str = "AXIAL 2.5mm"


@dataclass(frozen=True)
class EncodedInstance:
    """One Part 10 file: its SOPInstanceUID, InstanceNumber, the index of its slice (or image) and its bytes."""

    sop_instance_uid: str
    instance_number: int
    slice_index: int
    data: bytes


def voxel_to_patient_mm(
    center_zyx_vox: tuple[float, float, float] | np.ndarray,
    spacing_zyx_mm: tuple[float, float, float],
    origin_xyz_mm: tuple[float, float, float],
) -> tuple[float, float, float]:
    """Patient position (x, y, z) in mm (LPS) of a fractional voxel coordinate (z, y, x), axial orientation."""
    k, i, j = (float(c) for c in center_zyx_vox)
    dz, dy, dx = spacing_zyx_mm
    x0, y0, z0 = origin_xyz_mm
    return (x0 + j * dx, y0 + i * dy, z0 + k * dz)


def hu_to_stored(hu: np.ndarray) -> np.ndarray:
    """Stored int16 pixel values for HU with the default options: round(HU + 1024), clipped to int16."""
    stored = np.rint(np.asarray(hu, dtype=np.float64) - RESCALE_INTERCEPT_HU)
    return np.clip(stored, np.iinfo(np.int16).min, np.iinfo(np.int16).max).astype(np.int16)


def _sop_uid(uid_entropy: str | None, *parts: str) -> str:
    """A SOPInstanceUID: derived from ``uid_entropy`` and ``parts`` when entropy is given, else random."""
    return generate_uid(entropy_srcs=[uid_entropy, *parts]) if uid_entropy else generate_uid()


# --------------------------------------------------------------------------------------------------------------
# Building datasets


def part10_file_meta(sop_class: str, sop_uid: str, syntax: TransferSyntax) -> FileMetaDataset:
    """The File Meta Information of a Part 10 file of ``sop_class`` written in ``syntax``."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = syntax.uid
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    return meta


def add_study_elements(ds: Dataset, header: SeriesHeader, *, modality: str, sop_class: str) -> None:
    """Add the patient, study, series and equipment attributes shared by every object of the series to ``ds``."""
    ds.SpecificCharacterSet = _CHARACTER_SET
    ds.SOPClassUID = sop_class
    ds.StudyDate = header.study_date
    ds.SeriesDate = header.study_date
    ds.ContentDate = header.study_date
    ds.StudyTime = header.study_time
    ds.SeriesTime = header.study_time
    ds.ContentTime = header.study_time
    ds.AccessionNumber = header.accession_number
    ds.Modality = modality
    ds.Manufacturer = "nightscan-synth"
    ds.StudyDescription = header.study_description
    ds.SeriesDescription = header.series_description
    ds.PatientName = header.patient_name
    ds.PatientID = header.patient_id
    ds.PatientBirthDate = header.patient_birth_date
    ds.PatientSex = header.patient_sex
    ds.StudyInstanceUID = header.study_uid
    ds.SeriesInstanceUID = header.series_uid
    ds.StudyID = "1"
    ds.SeriesNumber = header.series_number


def add_image_pixel_elements(ds: Dataset, options: EncodeOptions, *, rows: int, columns: int) -> None:
    """Add the Image Pixel module's description of the stored pixels (no PixelData) to ``ds``."""
    storage = options.pixel_representation
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = columns
    ds.BitsAllocated = storage.bits_allocated
    ds.BitsStored = storage.bits_stored
    ds.HighBit = storage.bits_stored - 1
    ds.PixelRepresentation = storage.dicom_value


def add_lossy_elements(ds: Dataset, syntax: TransferSyntax, compression_ratio: float | None) -> None:
    """Add LossyImageCompression "01", LossyImageCompressionMethod and (when given) LossyImageCompressionRatio for a
    lossy ``syntax``; nothing for a lossless one."""
    if syntax.lossy_method is None:
        return
    ds.LossyImageCompression = "01"
    if compression_ratio is not None:
        ds.add(lossy_ratio_element(compression_ratio))
    ds.LossyImageCompressionMethod = syntax.lossy_method


def lossy_ratio_element(compression_ratio: float) -> DataElement:
    """LossyImageCompressionRatio (0028,2112), rounded to 2 decimals."""
    return DataElement(0x00282112, "DS", ds_number(round(float(compression_ratio), 2)))


def _image_template(
    header: SeriesHeader,
    options: EncodeOptions,
    *,
    rows: int,
    columns: int,
    image_type: Sequence[str],
    orientation: Sequence[float],
    pixel_spacing: tuple[float, float],
    slice_thickness_mm: float | None,
) -> Dataset:
    """A CT image dataset without the per-slice elements (SOPInstanceUID, InstanceNumber, position, pixels, and the
    lossy compression ratio)."""
    ds = Dataset()
    add_study_elements(ds, header, modality="CT", sop_class=CT_IMAGE_STORAGE)
    ds.ImageType = list(image_type)
    ds.BodyPartExamined = "CHEST"
    if slice_thickness_mm is not None:
        ds.SliceThickness = slice_thickness_mm
    ds.KVP = 120
    ds.PatientPosition = "FFS"
    ds.ImageOrientationPatient = list(orientation)
    ds.FrameOfReferenceUID = header.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    add_image_pixel_elements(ds, options, rows=rows, columns=columns)
    ds.PixelSpacing = list(pixel_spacing)
    ds.WindowCenter = ds_number(WINDOW_CENTER_HU)
    ds.WindowWidth = ds_number(WINDOW_WIDTH_HU)
    ds.RescaleIntercept = ds_number(options.rescale_intercept)
    ds.RescaleSlope = ds_number(options.rescale_slope)
    ds.RescaleType = "HU"
    add_lossy_elements(ds, options.transfer_syntax, None)
    return ds


def ds_number(value: float) -> str | float:
    """A DS value: an integral number as its integer string, so that DS holds "-1024" rather than "-1024.0"."""
    return str(int(value)) if float(value).is_integer() else float(value)


# --------------------------------------------------------------------------------------------------------------
# Pixel data


class EncodedPixelData(NamedTuple):
    """A PixelData element and its compression ratio (uncompressed bytes / encoded bytes; 1.0 when native)."""

    element: DataElement
    compression_ratio: float


def native_pixel_bytes(stored: np.ndarray, options: EncodeOptions) -> bytes:
    """Stored values (any shape) as native PixelData bytes, in the byte order of the options' transfer syntax."""
    dtype = options.pixel_representation.dtype
    if not options.transfer_syntax.is_little_endian:
        dtype = dtype.newbyteorder(">")
    return np.ascontiguousarray(stored, dtype=dtype).tobytes()


def encode_frame(stored: np.ndarray, options: EncodeOptions) -> bytes:
    """One (rows, columns) frame of stored values as the codestream of the options' (compressed) transfer syntax."""
    syntax = options.transfer_syntax
    storage = options.pixel_representation
    frame = np.ascontiguousarray(stored, dtype=storage.dtype)
    if frame.ndim != 2:
        raise ValueError(f"a frame must be 2-D (rows, columns), got shape {frame.shape}")
    if not syntax.is_compressed:
        raise ValueError(f"transfer_syntax {syntax.value!r} is native: use native_pixel_bytes")
    if min(frame.shape) < syntax.min_image_size_px:
        raise ValueError(
            f"transfer_syntax {syntax.value!r} needs images of at least {syntax.min_image_size_px} x "
            f"{syntax.min_image_size_px} pixels, got {frame.shape[0]} x {frame.shape[1]} (rows x columns)"
        )
    if syntax is TransferSyntax.JPEG_LOSSLESS:
        return jpeg_lossless_codestream(frame, precision=storage.bits_stored, predictor=JPEG_LOSSLESS_PREDICTOR)
    if syntax is TransferSyntax.JPEG_LOSSLESS_SV1:
        return _gdcm_encode(frame, options)
    if syntax is TransferSyntax.JPEG_BASELINE:
        return _pillow_jpeg_baseline(frame)
    lossy_options: dict[str, object] = {}
    if syntax is TransferSyntax.JPEG_LS_NEAR_LOSSLESS:
        lossy_options["jls_error"] = JPEG_LS_NEAR
    elif syntax is TransferSyntax.JPEG2000:
        lossy_options["j2k_psnr"] = [JPEG2000_PSNR_DB]
    return bytes(
        get_encoder(syntax.uid).encode(
            frame,
            rows=frame.shape[0],
            columns=frame.shape[1],
            samples_per_pixel=1,
            number_of_frames=1,
            bits_allocated=storage.bits_allocated,
            bits_stored=storage.bits_stored,
            pixel_representation=storage.dicom_value,
            photometric_interpretation="MONOCHROME2",
            **lossy_options,
        )
    )


def encode_pixel_data(
    frames: Sequence[np.ndarray] | np.ndarray, options: EncodeOptions, *, basic_offset_table: bool = True
) -> EncodedPixelData:
    """PixelData for one or more (rows, columns) frames of stored values: native (OW, or OB when 8-bit; big endian
    when the syntax is), or encapsulated (OB) with one fragment per frame and, when ``basic_offset_table``, a Basic
    Offset Table (else an empty one)."""
    arrays = [np.asarray(frame) for frame in frames]
    storage = options.pixel_representation
    raw_bytes = sum(array.size for array in arrays) * storage.dtype.itemsize
    if not options.transfer_syntax.is_compressed:
        value = b"".join(native_pixel_bytes(array, options) for array in arrays)
        vr = "OB" if storage.bits_allocated == 8 else "OW"
        return EncodedPixelData(DataElement(0x7FE00010, vr, value), 1.0)
    encoded = [encode_frame(array, options) for array in arrays]
    element = DataElement(0x7FE00010, "OB", encapsulate(encoded, has_bot=basic_offset_table))
    element.is_undefined_length = True
    return EncodedPixelData(element, raw_bytes / sum(len(codestream) for codestream in encoded))


def _gdcm_encode(frame: np.ndarray, options: EncodeOptions) -> bytes:
    """A frame as GDCM's codestream for the options' transfer syntax (JPEG Lossless SV1)."""
    import gdcm  # optional: codec_is_available checks it

    storage = options.pixel_representation
    writer = gdcm.ImageWriter()  # gdcm.Image must come from an ImageWriter that stays in scope
    image = writer.GetImage()
    image.SetNumberOfDimensions(2)
    image.SetDimensions((frame.shape[1], frame.shape[0], 1))
    image.SetPhotometricInterpretation(gdcm.PhotometricInterpretation(gdcm.PhotometricInterpretation.MONOCHROME2))
    image.SetTransferSyntax(gdcm.TransferSyntax(gdcm.TransferSyntax.ImplicitVRLittleEndian))
    image.SetPixelFormat(
        gdcm.PixelFormat(1, storage.bits_allocated, storage.bits_stored, storage.bits_stored - 1, storage.dicom_value)
    )
    pixels = gdcm.DataElement(gdcm.Tag(0x7FE0, 0x0010))
    pixels.SetByteStringValue(frame.tobytes())
    image.SetDataElement(pixels)
    converter = gdcm.ImageChangeTransferSyntax()
    converter.SetTransferSyntax(gdcm.TransferSyntax(gdcm.TransferSyntax.GetTSType(str(options.transfer_syntax.uid))))
    converter.SetInput(image)
    if not converter.Change():
        raise RuntimeError(f"GDCM could not encode a frame as {options.transfer_syntax.value!r}")
    fragments = converter.GetOutput().GetDataElement().GetSequenceOfFragments()
    if fragments is None or fragments.GetNumberOfFragments() != 1:
        raise RuntimeError("GDCM wrote an unexpected number of fragments for one frame")
    # GDCM hands the fragment over as a str; surrogateescape gives back its bytes (as pydicom's GDCM plugin does).
    return fragments.GetFragment(0).GetByteValue().GetBuffer().encode("utf-8", "surrogateescape")


def _pillow_jpeg_baseline(frame: np.ndarray) -> bytes:
    """An 8-bit frame as a baseline JPEG (JFIF) at :data:`JPEG_BASELINE_QUALITY`."""
    from PIL import Image  # optional: codec_is_available checks it

    buffer = io.BytesIO()
    Image.fromarray(frame, mode="L").save(buffer, format="JPEG", quality=JPEG_BASELINE_QUALITY)
    return buffer.getvalue()


def jpeg_lossless_codestream(frame: np.ndarray, *, precision: int, predictor: int = JPEG_LOSSLESS_PREDICTOR) -> bytes:
    """A (rows, columns) frame of integers as a JPEG Lossless (ITU T.81 Process 14, Huffman) codestream.

    Samples are the ``precision``-bit patterns of the values (2 to 16 bits; signed values as two's complement, so a
    decoder must reinterpret them with PixelRepresentation). ``predictor`` is the selection value 1 to 7 (Table
    H.1; 5 and 6 halve with an arithmetic shift, 7 adds in full precision); the first row predicts from the left,
    the first column from above, the first sample from 2 ** (precision - 1); differences are taken modulo 2 ** 16.
    One Huffman table, optimal for the frame (Annex K.2), no restart intervals, point transform 0.
    """
    if not 2 <= precision <= 16:
        raise ValueError(f"precision must be 2 to 16 bits, got {precision!r}")
    if predictor not in range(1, 8):
        raise ValueError(f"predictor must be a selection value 1 to 7, got {predictor!r}")
    frame = np.asarray(frame)
    if frame.ndim != 2 or min(frame.shape) < 1:
        raise ValueError(f"frame must be 2-D (rows, columns) and not empty, got shape {frame.shape}")
    rows, columns = frame.shape
    x = frame.astype(np.int64) & ((1 << precision) - 1)
    px = np.empty_like(x)
    px[0, 0] = 1 << (precision - 1)
    px[0, 1:] = x[0, :-1]
    px[1:, 0] = x[:-1, 0]
    a, b, c = x[1:, :-1], x[:-1, 1:], x[:-1, :-1]
    predictions = {
        1: lambda: a,
        2: lambda: b,
        3: lambda: c,
        4: lambda: a + b - c,
        5: lambda: a + ((b - c) >> 1),
        6: lambda: b + ((a - c) >> 1),
        7: lambda: (a + b) >> 1,
    }
    px[1:, 1:] = predictions[predictor]()
    diff = (x - px) & 0xFFFF
    diff = np.where(diff >= 0x8000, diff - 0x10000, diff).ravel()  # -32768 codes as category 16 (32768)
    category = np.frexp(np.abs(diff).astype(np.float64))[1].astype(np.int64)  # bit length of |diff|
    counts, symbols = _optimal_huffman_table(np.bincount(category, minlength=17).tolist())
    code_lengths, codes = np.zeros(17, np.int64), np.zeros(17, np.int64)
    code, index = 0, 0
    for length, count in enumerate(counts, start=1):  # canonical codes (Annex C)
        for _ in range(count):
            code_lengths[symbols[index]], codes[symbols[index]] = length, code
            code, index = code + 1, index + 1
        code <<= 1
    extra_length = np.where(category == 16, 0, category)
    extra = np.where(diff < 0, diff - 1, diff) & ((1 << extra_length) - 1)
    lengths = code_lengths[category] + extra_length
    values = (codes[category] << extra_length) | extra
    ends = np.cumsum(lengths)
    starts = ends - lengths
    bits = np.ones(-(-int(ends[-1]) // 8) * 8, np.uint8)  # the last byte is padded with 1-bits
    for bit in range(int(lengths.max())):
        chosen = lengths > bit
        bits[starts[chosen] + bit] = (values[chosen] >> (lengths[chosen] - 1 - bit)) & 1
    entropy_coded = np.packbits(bits).tobytes().replace(b"\xff", b"\xff\x00")
    frame_header = bytes([0xFF, 0xC3, 0, 11, precision, *rows.to_bytes(2, "big"), *columns.to_bytes(2, "big")])
    frame_header += bytes([1, 1, 0x11, 0])
    table = bytes([0x00, *counts, *symbols])
    huffman = bytes([0xFF, 0xC4, *(2 + len(table)).to_bytes(2, "big")]) + table
    scan_header = bytes([0xFF, 0xDA, 0, 8, 1, 1, 0x00, predictor, 0, 0])
    return b"\xff\xd8" + frame_header + huffman + scan_header + entropy_coded + b"\xff\xd9"


def _optimal_huffman_table(frequencies: list[int]) -> tuple[list[int], list[int]]:
    """BITS (the number of codes of each length 1 to 16) and HUFFVAL for symbol ``frequencies``: ITU T.81 Annex K.2,
    with a reserved symbol so that no code is all ones."""
    freq = [int(f) for f in frequencies] + [1]
    n = len(freq)
    code_size = [0] * n
    others = [-1] * n
    while True:
        c1 = c2 = -1
        for i in range(n):  # the least frequent, ties to the larger symbol; then the next least frequent
            if freq[i] and (c1 < 0 or freq[i] <= freq[c1]):
                c1 = i
        for i in range(n):
            if freq[i] and i != c1 and (c2 < 0 or freq[i] <= freq[c2]):
                c2 = i
        if c2 < 0:
            break
        freq[c1] += freq[c2]
        freq[c2] = 0
        code_size[c1] += 1
        while others[c1] >= 0:
            c1 = others[c1]
            code_size[c1] += 1
        others[c1] = c2
        code_size[c2] += 1
        while others[c2] >= 0:
            c2 = others[c2]
            code_size[c2] += 1
    bits = [0] * 33
    for size in code_size:
        if size:
            bits[size] += 1
    for i in range(32, 16, -1):  # limit code lengths to 16 bits (Figure K.3)
        while bits[i] > 0:
            j = i - 2
            while bits[j] == 0:
                j -= 1
            bits[i] -= 2
            bits[i - 1] += 1
            bits[j + 1] += 2
            bits[j] -= 1
    i = 16
    while bits[i] == 0:
        i -= 1
    bits[i] -= 1  # drop the reserved symbol, which has a longest code
    symbols = sorted((s for s in range(n - 1) if code_size[s]), key=lambda s: (code_size[s], s))
    return bits[1:17], symbols


# --------------------------------------------------------------------------------------------------------------
# Series of single-frame CT images


def _slice_elements(
    sop_uid: str,
    instance_number: int,
    position: Sequence[float],
    slice_location: float,
    pixels: EncodedPixelData,
    syntax: TransferSyntax,
) -> list[DataElement]:
    """The per-slice elements, in tag order (see _SeriesPlan.per_slice_tags)."""
    elements = [
        DataElement(0x00080018, "UI", sop_uid),
        DataElement(0x00200013, "IS", instance_number),
        DataElement(0x00200032, "DS", list(position)),
        DataElement(0x00201041, "DS", slice_location),
    ]
    if syntax.is_lossy:
        elements.append(lossy_ratio_element(pixels.compression_ratio))
    return [*elements, pixels.element]


def checked_volume(hu: np.ndarray) -> np.ndarray:
    """``hu`` as an array, checked to be a non-empty 3-D (z, y, x) volume."""
    hu = np.asarray(hu)
    if hu.ndim != 3:
        raise ValueError(f"hu must be 3-D (z, y, x), got shape {hu.shape}")
    if min(hu.shape) < 1:
        raise ValueError(f"hu must not be empty, got shape {hu.shape}")
    return hu


def _instance_numbers(n_slices: int, instance_numbers: Sequence[int] | None, descending: bool) -> list[int]:
    if instance_numbers is None:
        return [n_slices - k for k in range(n_slices)] if descending else [k + 1 for k in range(n_slices)]
    if descending:
        raise ValueError("give instance_numbers or descending_instance_numbers=True, not both")
    numbers = [int(n) for n in instance_numbers]
    if len(numbers) != n_slices:
        raise ValueError(f"instance_numbers must have one number per slice ({n_slices}), got {len(numbers)}")
    if min(numbers) < 1 or len(set(numbers)) != n_slices:
        raise ValueError(f"instance_numbers must be distinct positive integers, got {numbers[:8]}...")
    return numbers


class _SeriesPlan:
    """What the slices of one CT series share, and what each slice has of its own."""

    def __init__(
        self,
        hu: np.ndarray,
        geometry: SeriesGeometry,
        header: SeriesHeader,
        options: EncodeOptions,
        instance_numbers: list[int],
        uid_entropy: str | None,
    ) -> None:
        self.hu = hu
        self.geometry = geometry
        self.options = options
        self.instance_numbers = instance_numbers
        self.uid_entropy = uid_entropy
        dz, dy, dx = geometry.spacing_zyx_mm
        self.template = _image_template(
            header,
            options,
            rows=int(hu.shape[1]),
            columns=int(hu.shape[2]),
            image_type=("ORIGINAL", "PRIMARY", "AXIAL"),
            orientation=geometry.orientation,
            pixel_spacing=(dy, dx),
            slice_thickness_mm=dz,
        )
        ratio = (_LOSSY_RATIO_TAG,) if options.transfer_syntax.is_lossy else ()
        self.per_slice_tags = (*_PER_SLICE_TAGS[:-1], *ratio, _PER_SLICE_TAGS[-1])

    def slice_elements(self, k: int) -> tuple[str, list[DataElement]]:
        """(SOPInstanceUID, per-slice elements) of slice k; the pixels are encoded here."""
        sop_uid = _sop_uid(self.uid_entropy, str(k))
        position = self.geometry.slice_position_mm(k)
        location = round(float(np.asarray(position) @ self.geometry.normal), _POSITION_DECIMALS) + 0.0
        pixels = encode_pixel_data([self.options.stored_from_hu(self.hu[k])], self.options)
        number = self.instance_numbers[k]
        return sop_uid, _slice_elements(sop_uid, number, position, location, pixels, self.options.transfer_syntax)


def _new_buffer(syntax: TransferSyntax) -> DicomBytesIO:
    fp = DicomBytesIO()
    fp.is_little_endian = syntax.is_little_endian
    fp.is_implicit_VR = syntax.is_implicit_vr
    return fp


def _encode_dataset_bytes(ds: Dataset, syntax: TransferSyntax) -> bytes:
    """The data elements of ``ds`` (no preamble, no file meta) as ``syntax`` encodes them (before any deflate)."""
    fp = _new_buffer(syntax)
    write_dataset(fp, ds, parent_encoding=_ENCODINGS)
    return fp.getvalue()


def deflate_dataset_bytes(data: bytes) -> bytes:
    """The dataset bytes of a Deflated Explicit VR Little Endian file: raw deflate, padded to even length (as
    pydicom's dcmwrite does)."""
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    deflated = compressor.compress(data) + compressor.flush()
    return deflated + b"\x00" * (len(deflated) % 2)


class _Splicer:
    """Part 10 bytes of the slices of one series: the shared elements are encoded once, in chunks that lie
    between the per-slice tags, and each slice's own elements are encoded and spliced in between."""

    def __init__(self, template: Dataset, syntax: TransferSyntax, per_slice_tags: Sequence[Tag]) -> None:
        self.syntax = syntax
        bounds = [Tag(0, 0), *per_slice_tags, Tag(0xFFFF, 0xFFFF)]
        self.chunks: list[bytes] = []
        for low, high in itertools.pairwise(bounds):
            chunk = Dataset()
            for element in template:
                if low < element.tag < high:
                    chunk.add(element)
            self.chunks.append(_encode_dataset_bytes(chunk, syntax))

    def encode(self, sop_uid: str, elements: list[DataElement]) -> bytes:
        body = _new_buffer(self.syntax)
        body.write(self.chunks[0])
        for element, chunk in zip(elements, self.chunks[1:], strict=True):
            write_data_element(body, element, _ENCODINGS)
            body.write(chunk)
        fp = DicomBytesIO()
        fp.is_little_endian = True
        fp.is_implicit_VR = False
        fp.write(_PREAMBLE)
        write_file_meta_info(fp, part10_file_meta(CT_IMAGE_STORAGE, sop_uid, self.syntax), enforce_standard=True)
        data = body.getvalue()
        fp.write(deflate_dataset_bytes(data) if self.syntax.is_deflated else data)
        return fp.getvalue()


def encode_series(
    hu: np.ndarray,
    geometry: SeriesGeometry,
    header: SeriesHeader,
    *,
    options: EncodeOptions | None = None,
    instance_numbers: Sequence[int] | None = None,
    uid_entropy: str | None = None,
) -> Iterator[EncodedInstance]:
    """Yield one CT Image Storage Part 10 file per slice k of ``hu`` ((z, y, x), HU), in slice order.

    ``instance_numbers`` gives the InstanceNumber of each slice (default k + 1); numbering may be reversed
    or shuffled, as readers must sort by position. ``uid_entropy`` makes SOPInstanceUIDs deterministic
    (derived from it and k). Slices are encoded one at a time, as the caller consumes them.
    """
    hu = checked_volume(hu)
    options = options or EncodeOptions()
    plan = _SeriesPlan(
        hu, geometry, header, options, _instance_numbers(hu.shape[0], instance_numbers, False), uid_entropy
    )
    splicer = _Splicer(plan.template, options.transfer_syntax, plan.per_slice_tags)
    for k in range(hu.shape[0]):
        sop_uid, elements = plan.slice_elements(k)
        yield EncodedInstance(sop_uid, plan.instance_numbers[k], k, splicer.encode(sop_uid, elements))


def _positional_series(
    hu: np.ndarray,
    spacing_zyx_mm: tuple[float, float, float],
    origin_xyz_mm: tuple[float, float, float],
    orientation: Sequence[float],
    instance_numbers: Sequence[int] | None,
    descending: bool,
) -> tuple[np.ndarray, SeriesGeometry, list[int]]:
    """The checked volume, its geometry and its InstanceNumbers, from the older keyword-style arguments."""
    hu = checked_volume(hu)
    geometry = SeriesGeometry(origin_xyz_mm, spacing_zyx_mm, tuple(orientation))  # type: ignore[arg-type]
    return hu, geometry, _instance_numbers(hu.shape[0], instance_numbers, descending)


def series_datasets(
    hu: np.ndarray,
    spacing_zyx_mm: tuple[float, float, float],
    header: SeriesHeader,
    *,
    origin_xyz_mm: tuple[float, float, float] = DEFAULT_ORIGIN_XYZ_MM,
    uid_entropy: str | None = None,
    descending_instance_numbers: bool = False,
    orientation: Sequence[float] = AXIAL_ORIENTATION,
    options: EncodeOptions | None = None,
    instance_numbers: Sequence[int] | None = None,
) -> Iterator[Dataset]:
    """Yield one CT Image Storage dataset per slice k of ``hu`` ((z, y, x), HU), in slice order.

    InstanceNumber is k + 1, n_slices - k with ``descending_instance_numbers`` (head-first numbering, as some
    scanners do: readers must sort by position, never by InstanceNumber), or ``instance_numbers[k]``.
    ``uid_entropy``, when given, makes SOPInstanceUIDs deterministic (derived from it and the slice index).
    ``dataset_to_bytes`` of each dataset equals the bytes :func:`encode_series` writes for the same slice.
    """
    hu, geometry, numbers = _positional_series(
        hu, spacing_zyx_mm, origin_xyz_mm, orientation, instance_numbers, descending_instance_numbers
    )
    options = options or EncodeOptions()
    plan = _SeriesPlan(hu, geometry, header, options, numbers, uid_entropy)
    for k in range(hu.shape[0]):
        sop_uid, elements = plan.slice_elements(k)
        ds = copy.deepcopy(plan.template)
        for element in elements:
            ds.add(element)
        ds.file_meta = part10_file_meta(CT_IMAGE_STORAGE, sop_uid, options.transfer_syntax)
        yield ds


def dataset_to_bytes(ds: Dataset) -> bytes:
    """Encode a dataset as a DICOM Part 10 file (preamble, file meta, the transfer syntax its file meta names)."""
    buffer = io.BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def series_files(
    hu: np.ndarray,
    spacing_zyx_mm: tuple[float, float, float],
    header: SeriesHeader,
    *,
    origin_xyz_mm: tuple[float, float, float] = DEFAULT_ORIGIN_XYZ_MM,
    uid_entropy: str | None = None,
    descending_instance_numbers: bool = False,
    orientation: Sequence[float] = AXIAL_ORIENTATION,
    options: EncodeOptions | None = None,
    instance_numbers: Sequence[int] | None = None,
) -> Iterator[tuple[int, bytes]]:
    """Yield (InstanceNumber, Part 10 bytes) for every slice of ``hu`` ((z, y, x), HU); see series_datasets."""
    hu, geometry, numbers = _positional_series(
        hu, spacing_zyx_mm, origin_xyz_mm, orientation, instance_numbers, descending_instance_numbers
    )
    for instance in encode_series(
        hu, geometry, header, options=options, instance_numbers=numbers, uid_entropy=uid_entropy
    ):
        yield instance.instance_number, instance.data


# --------------------------------------------------------------------------------------------------------------
# Localizer and structured report


class LocalizerView(StrEnum):
    """Projection direction of a localizer (scout) image."""

    FRONTAL = "frontal"  # through the volume's column direction (anterior-posterior for axial): coronal plane
    LATERAL = "lateral"  # through the volume's row direction (left-right for axial): sagittal plane


def localizer_series(
    hu: np.ndarray,
    geometry: SeriesGeometry,
    header: SeriesHeader,
    *,
    views: Sequence[LocalizerView | str] = (LocalizerView.FRONTAL,),
    options: EncodeOptions | None = None,
    uid_entropy: str | None = None,
) -> list[EncodedInstance]:
    """A LOCALIZER series (ImageType ORIGINAL\\PRIMARY\\LOCALIZER) of 1-2 projections of ``hu`` (z, y, x).

    ``header`` describes the localizer series itself (its own SeriesInstanceUID and SeriesNumber, the study's
    other attributes). Each image is the mean HU along one in-plane axis of the volume, lying in the plane
    through the volume's centre: rows run from the last slice to the first (orientation row_cosine or
    column_cosine, then -normal: [1, 0, 0, 0, 0, -1] for a frontal view of an axial series). Series selection
    must skip these images.
    """
    hu = checked_volume(hu)
    options = options or EncodeOptions()
    chosen = [to_enum(LocalizerView, view, "views") for view in views]
    if not 1 <= len(chosen) <= 2 or len(set(chosen)) != len(chosen):
        raise ValueError(f"views must be one or two distinct views, got {list(views)!r}")
    nz, ny, nx = hu.shape
    dz, dy, dx = geometry.spacing_zyx_mm
    top = np.asarray(geometry.voxel_to_patient_mm((nz - 1, (ny - 1) / 2, (nx - 1) / 2)))
    out = []
    for index, view in enumerate(chosen):
        if view is LocalizerView.FRONTAL:
            image = hu.mean(axis=1)[::-1]  # (z reversed, x)
            row_cosine, spacing = geometry.row_cosine, (dz, dx)
            first = top - (nx - 1) / 2 * dx * geometry.row_cosine
        else:
            image = hu.mean(axis=2)[::-1]  # (z reversed, y)
            row_cosine, spacing = geometry.column_cosine, (dz, dy)
            first = top - (ny - 1) / 2 * dy * geometry.column_cosine
        orientation = [round(float(c), _COSINE_DECIMALS) + 0.0 for c in (*row_cosine, *(-geometry.normal))]
        ds = _image_template(
            header,
            options,
            rows=int(image.shape[0]),
            columns=int(image.shape[1]),
            image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"),
            orientation=orientation,
            pixel_spacing=spacing,
            slice_thickness_mm=None,
        )
        sop_uid = _sop_uid(uid_entropy, "localizer", str(index))
        position = [round(float(c), _POSITION_DECIMALS) + 0.0 for c in first]
        ds.SOPInstanceUID = sop_uid
        ds.InstanceNumber = index + 1
        ds.ImagePositionPatient = position
        pixels = encode_pixel_data([options.stored_from_hu(image)], options)
        ds.add(pixels.element)
        add_lossy_elements(ds, options.transfer_syntax, pixels.compression_ratio)
        ds.file_meta = part10_file_meta(CT_IMAGE_STORAGE, sop_uid, options.transfer_syntax)
        out.append(EncodedInstance(sop_uid, index + 1, index, dataset_to_bytes(ds)))
    return out


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def structured_report(
    header: SeriesHeader,
    *,
    text: str = "Synthetic screening study; findings are in the archive manifest.",
    uid_entropy: str | None = None,
) -> EncodedInstance:
    """A Basic Text SR (SOP class 1.2.840.10008.5.1.4.1.1.88.11, Modality SR, no PixelData) as Part 10 bytes.

    ``header`` describes the SR's own series in the study. Header indexing must reject it as not a CT image.
    """
    if not isinstance(text, str) or not text:
        raise ValueError(f"text must be a non-empty str, got {text!r}")
    sop_uid = _sop_uid(uid_entropy, "structured-report")
    ds = Dataset()
    add_study_elements(ds, header, modality="SR", sop_class=BASIC_TEXT_SR_STORAGE)
    ds.SOPInstanceUID = sop_uid
    ds.ReferencedPerformedProcedureStepSequence = DicomSequence()
    ds.InstanceNumber = 1
    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = DicomSequence([_code("18748-4", "LN", "Diagnostic Imaging Report")])
    ds.ContinuityOfContent = "SEPARATE"
    ds.CompletionFlag = "COMPLETE"
    ds.VerificationFlag = "UNVERIFIED"
    ds.PerformedProcedureCodeSequence = DicomSequence()
    finding = Dataset()
    finding.RelationshipType = "CONTAINS"
    finding.ValueType = "TEXT"
    finding.ConceptNameCodeSequence = DicomSequence([_code("121071", "DCM", "Finding")])
    finding.TextValue = text
    ds.ContentSequence = DicomSequence([finding])
    ds.file_meta = part10_file_meta(BASIC_TEXT_SR_STORAGE, sop_uid, TransferSyntax.EXPLICIT_VR_LITTLE_ENDIAN)
    return EncodedInstance(sop_uid, 1, 0, dataset_to_bytes(ds))


def derived_header(
    header: SeriesHeader, *, series_uid: str, series_number: int, series_description: str
) -> SeriesHeader:
    """``header`` for another series of the same study (localizer, report)."""
    return replace(header, series_uid=series_uid, series_number=series_number, series_description=series_description)
