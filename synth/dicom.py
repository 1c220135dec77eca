"""Encode a synthetic phantom as a DICOM CT Image Storage series (Explicit VR Little Endian).

Geometry convention (the study worker relies on it): voxel (k, i, j) of a (z, y, x) volume lies at the
patient position (LPS, mm)

    origin_xyz_mm + j * dx * [1, 0, 0] + i * dy * [0, 1, 0] + k * dz * [0, 0, 1]

so slice k has ImagePositionPatient [x0, y0, z0 + k * dz], ImageOrientationPatient [1, 0, 0, 0, 1, 0] and
PixelSpacing [dy, dx] (row spacing, column spacing). Stored values are HU + 1024 as signed 16-bit integers,
with RescaleIntercept -1024 and RescaleSlope 1.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from pydicom import dcmwrite
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
RESCALE_INTERCEPT_HU = -1024
RESCALE_SLOPE = 1
DEFAULT_ORIGIN_XYZ_MM = (-160.0, -160.0, -300.0)


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


def voxel_to_patient_mm(
    center_zyx_vox: tuple[float, float, float] | np.ndarray,
    spacing_zyx_mm: tuple[float, float, float],
    origin_xyz_mm: tuple[float, float, float],
) -> tuple[float, float, float]:
    """Patient position (x, y, z) in mm (LPS) of a fractional voxel coordinate (z, y, x)."""
    k, i, j = (float(c) for c in center_zyx_vox)
    dz, dy, dx = spacing_zyx_mm
    x0, y0, z0 = origin_xyz_mm
    return (x0 + j * dx, y0 + i * dy, z0 + k * dz)


def hu_to_stored(hu: np.ndarray) -> np.ndarray:
    """Stored int16 pixel values for HU: round(HU - intercept), clipped to the int16 range."""
    stored = np.rint(np.asarray(hu, dtype=np.float64) - RESCALE_INTERCEPT_HU)
    return np.clip(stored, np.iinfo(np.int16).min, np.iinfo(np.int16).max).astype(np.int16)


def series_datasets(
    hu: np.ndarray,
    spacing_zyx_mm: tuple[float, float, float],
    header: SeriesHeader,
    *,
    origin_xyz_mm: tuple[float, float, float] = DEFAULT_ORIGIN_XYZ_MM,
    uid_entropy: str | None = None,
    descending_instance_numbers: bool = False,
) -> Iterator[Dataset]:
    """Yield one CT Image Storage dataset per slice k of `hu` ((z, y, x), HU), in slice order.

    InstanceNumber is k + 1, or n_slices - k with `descending_instance_numbers` (head-first numbering, as some
    scanners do: readers must sort by position, never by InstanceNumber). `uid_entropy`, when given, makes
    SOPInstanceUIDs deterministic (derived from it and the slice index).
    """
    if hu.ndim != 3:
        raise ValueError(f"hu must be 3-D (z, y, x), got shape {hu.shape}")
    if len(spacing_zyx_mm) != 3 or min(spacing_zyx_mm) <= 0:
        raise ValueError(f"spacing_zyx_mm must be three positive values in mm, got {spacing_zyx_mm}")
    stored = hu_to_stored(hu)
    dz, dy, dx = (float(s) for s in spacing_zyx_mm)
    x0, y0, z0 = (float(v) for v in origin_xyz_mm)
    for k in range(stored.shape[0]):
        sop_uid = generate_uid(entropy_srcs=[uid_entropy, str(k)]) if uid_entropy else generate_uid()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID

        ds = Dataset()
        ds.file_meta = meta
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SOPClassUID = CT_IMAGE_STORAGE
        ds.SOPInstanceUID = sop_uid
        ds.StudyDate = header.study_date
        ds.SeriesDate = header.study_date
        ds.ContentDate = header.study_date
        ds.StudyTime = header.study_time
        ds.SeriesTime = header.study_time
        ds.ContentTime = header.study_time
        ds.AccessionNumber = header.accession_number
        ds.Modality = "CT"
        ds.Manufacturer = "nightscan-synth"
        ds.StudyDescription = header.study_description
        ds.SeriesDescription = header.series_description
        ds.PatientName = header.patient_name
        ds.PatientID = header.patient_id
        ds.PatientBirthDate = header.patient_birth_date
        ds.PatientSex = header.patient_sex
        ds.BodyPartExamined = "CHEST"
        ds.SliceThickness = dz
        ds.KVP = 120
        ds.PatientPosition = "FFS"
        ds.StudyInstanceUID = header.study_uid
        ds.SeriesInstanceUID = header.series_uid
        ds.StudyID = "1"
        ds.SeriesNumber = header.series_number
        ds.InstanceNumber = stored.shape[0] - k if descending_instance_numbers else k + 1
        ds.ImagePositionPatient = [round(x0, 4), round(y0, 4), round(z0 + k * dz, 4)]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.FrameOfReferenceUID = header.frame_of_reference_uid
        ds.PositionReferenceIndicator = ""
        ds.SliceLocation = round(z0 + k * dz, 4)
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = int(stored.shape[1])
        ds.Columns = int(stored.shape[2])
        ds.PixelSpacing = [dy, dx]
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.WindowCenter = -600
        ds.WindowWidth = 1500
        ds.RescaleIntercept = RESCALE_INTERCEPT_HU
        ds.RescaleSlope = RESCALE_SLOPE
        ds.RescaleType = "HU"
        ds.PixelData = np.ascontiguousarray(stored[k]).astype("<i2").tobytes()
        yield ds


def dataset_to_bytes(ds: Dataset) -> bytes:
    """Encode a dataset as a DICOM Part 10 file (preamble, file meta, Explicit VR Little Endian)."""
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
) -> Iterator[tuple[int, bytes]]:
    """Yield (InstanceNumber, Part 10 bytes) for every slice of `hu` ((z, y, x), HU); see series_datasets."""
    datasets = series_datasets(
        hu,
        spacing_zyx_mm,
        header,
        origin_xyz_mm=origin_xyz_mm,
        uid_entropy=uid_entropy,
        descending_instance_numbers=descending_instance_numbers,
    )
    for ds in datasets:
        yield int(ds.InstanceNumber), dataset_to_bytes(ds)
