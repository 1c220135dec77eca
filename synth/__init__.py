"""Synthetic chest-CT screening archives with ground truth: patients over time, DICOM as scanners write it."""

from synth.archive import ArchiveOptions, generate_archive
from synth.dicom import EncodeOptions, PixelRepresentation, SeriesGeometry, SeriesHeader, TransferSyntax
from synth.layout import KeyLayout
from synth.manifest import GroundTruth, NoduleRecord, StudyTruth, TrackTruth, read_ground_truth, write_ground_truth
from synth.messy import Mess, ObjectRole
from synth.nodules import NoduleKind
from synth.phantom import NoduleTruth, Phantom, make_phantom

__all__ = [
    "ArchiveOptions",
    "EncodeOptions",
    "GroundTruth",
    "KeyLayout",
    "Mess",
    "NoduleKind",
    "NoduleRecord",
    "NoduleTruth",
    "ObjectRole",
    "Phantom",
    "PixelRepresentation",
    "SeriesGeometry",
    "SeriesHeader",
    "StudyTruth",
    "TrackTruth",
    "TransferSyntax",
    "generate_archive",
    "make_phantom",
    "read_ground_truth",
    "write_ground_truth",
]
