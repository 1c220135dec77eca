"""Synthetic chest-CT archives with ground truth: phantoms (HU volumes), DICOM CT series, archive layout."""

from synth.archive import (
    GroundTruth,
    NoduleRecord,
    StudyTruth,
    generate_archive,
    read_ground_truth,
    write_ground_truth,
)
from synth.dicom import SeriesHeader, series_datasets, series_files, voxel_to_patient_mm
from synth.phantom import NoduleKind, NoduleTruth, Phantom, make_phantom

__all__ = [
    "GroundTruth",
    "NoduleKind",
    "NoduleRecord",
    "NoduleTruth",
    "Phantom",
    "SeriesHeader",
    "StudyTruth",
    "generate_archive",
    "make_phantom",
    "read_ground_truth",
    "series_datasets",
    "series_files",
    "voxel_to_patient_mm",
    "write_ground_truth",
]
