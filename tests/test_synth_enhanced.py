"""synth.enhanced: one Enhanced CT file holds every slice as a frame, with geometry and rescale in functional groups."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.encaps import parse_basic_offsets
from pydicom.pixels import get_decoder, pixel_array

from synth.dicom import EncodeOptions, SeriesGeometry, SeriesHeader, TransferSyntax, codec_is_available
from synth.enhanced import ENHANCED_CT_IMAGE_STORAGE, PER_FRAME_INTERCEPT_STEP, enhanced_ct, enhanced_ct_dataset

HEADER = SeriesHeader(
    patient_id="SYN0002",
    patient_name="SYNTH^TWO",
    patient_birth_date="19610722",
    patient_sex="M",
    study_uid="1.2.826.0.1.3680043.8.498.11",
    series_uid="1.2.826.0.1.3680043.8.498.12",
    frame_of_reference_uid="1.2.826.0.1.3680043.8.498.13",
    study_date="20240305",
    study_time="083000",
    accession_number="ACC0002",
)
GEOMETRY = SeriesGeometry(origin_xyz_mm=(-100.5, -90.25, -300.0), spacing_zyx_mm=(2.5, 0.7, 0.8))
OBLIQUE = SeriesGeometry(
    origin_xyz_mm=(12.0, -40.0, 55.0),
    spacing_zyx_mm=(1.25, 0.75, 0.6),
    orientation=(0.866025, 0.5, 0.0, -0.5, 0.866025, 0.0),
)
SHUFFLED = [3, 0, 4, 1, 2]
# The largest error in stored units of a lossy syntax on random CT noise.
TOLERANCE = {TransferSyntax.JPEG_LS_NEAR_LOSSLESS: 2, TransferSyntax.JPEG2000: 8}
SYNTAXES = [
    TransferSyntax.EXPLICIT_VR_LITTLE_ENDIAN,
    TransferSyntax.IMPLICIT_VR_LITTLE_ENDIAN,
    TransferSyntax.EXPLICIT_VR_BIG_ENDIAN,
    TransferSyntax.DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    TransferSyntax.RLE_LOSSLESS,
    TransferSyntax.JPEG_LS_LOSSLESS,
    TransferSyntax.JPEG2000_LOSSLESS,
    TransferSyntax.JPEG_LOSSLESS,
    TransferSyntax.JPEG_LOSSLESS_SV1,
    TransferSyntax.JPEG_LS_NEAR_LOSSLESS,
    TransferSyntax.JPEG2000,
]


def _volume(shape: tuple[int, int, int] = (5, 32, 34), seed: int = 0) -> np.ndarray:
    """Integer HU over the whole CT range (z, y, x), float32; 32 pixels or more for JPEG 2000."""
    return np.random.default_rng(seed).integers(-1024, 3072, shape).astype(np.float32)


def _require_decoder(syntax: TransferSyntax) -> None:
    if not codec_is_available(syntax):
        pytest.skip(f"no encoder for {syntax.value} here: pip install {syntax.codec_packages}")
    if syntax.is_compressed and not get_decoder(syntax.uid).is_available:
        pytest.skip(f"pydicom has no decoder for {syntax.uid.name} here")


def _frame_rescale(ds: pydicom.Dataset, f: int) -> tuple[float, float]:
    """(intercept, slope) of frame f: its own PixelValueTransformationSequence, else the shared one."""
    groups = ds.PerFrameFunctionalGroupsSequence[f]
    if "PixelValueTransformationSequence" not in groups:
        groups = ds.SharedFunctionalGroupsSequence[0]
    item = groups.PixelValueTransformationSequence[0]
    assert item.RescaleType == "HU"
    return float(item.RescaleIntercept), float(item.RescaleSlope)


def _frame_position(ds: pydicom.Dataset, f: int) -> np.ndarray:
    return np.array(
        [float(v) for v in ds.PerFrameFunctionalGroupsSequence[f].PlanePositionSequence[0].ImagePositionPatient]
    )


@pytest.mark.parametrize("per_frame_rescale", [False, True], ids=["shared-rescale", "per-frame-rescale"])
@pytest.mark.parametrize("syntax", SYNTAXES)
def test_frames_give_back_the_hu_of_their_slice(syntax: TransferSyntax, per_frame_rescale: bool):
    _require_decoder(syntax)
    hu = _volume()
    options = EncodeOptions(syntax, "signed", -1024)
    data = enhanced_ct(hu, HEADER, GEOMETRY, options=options, per_frame_rescale=per_frame_rescale, frame_order=SHUFFLED)
    ds = pydicom.dcmread(io.BytesIO(data))
    assert ds.file_meta.TransferSyntaxUID == syntax.uid
    assert ds.SOPClassUID == ds.file_meta.MediaStorageSOPClassUID == ENHANCED_CT_IMAGE_STORAGE
    assert ds.NumberOfFrames == 5 and len(ds.PerFrameFunctionalGroupsSequence) == 5
    stored = ds.pixel_array
    assert stored.shape == (5, 32, 34)
    tolerance = TOLERANCE.get(syntax, 0)
    intercepts = set()
    for f, k in enumerate(SHUFFLED):
        intercept, slope = _frame_rescale(ds, f)
        intercepts.add(intercept)
        assert np.abs(np.rint(stored[f] * slope + intercept) - hu[k]).max() <= tolerance * slope
        np.testing.assert_allclose(_frame_position(ds, f), GEOMETRY.voxel_to_patient_mm((k, 0, 0)), atol=1e-4)
        content = ds.PerFrameFunctionalGroupsSequence[f].FrameContentSequence[0]
        assert (content.StackID, content.InStackPositionNumber, list(content.DimensionIndexValues)) == (
            "1",
            k + 1,
            [1, k + 1],
        )
    step = PER_FRAME_INTERCEPT_STEP
    assert intercepts == ({-1024.0, -1024.0 + step} if per_frame_rescale else {-1024.0})
    assert ("PixelValueTransformationSequence" in ds.SharedFunctionalGroupsSequence[0]) is not per_frame_rescale
    if syntax.is_lossy:
        assert (ds.LossyImageCompression, ds.LossyImageCompressionMethod) == ("01", syntax.lossy_method)
        assert float(ds.LossyImageCompressionRatio) > 1
    else:
        assert ds.LossyImageCompression == "00"


def test_geometry_lives_only_in_the_functional_groups() -> None:
    ds = pydicom.dcmread(io.BytesIO(enhanced_ct(_volume((4, 12, 10)), HEADER, OBLIQUE, sop_instance_uid="1.2.3.4")))
    for keyword in (
        "ImagePositionPatient",
        "ImageOrientationPatient",
        "PixelSpacing",
        "SliceThickness",
        "RescaleIntercept",
        "RescaleSlope",
    ):
        assert keyword not in ds, keyword
    assert ds.SOPInstanceUID == ds.file_meta.MediaStorageSOPInstanceUID == "1.2.3.4"
    assert list(ds.ImageType) == ["ORIGINAL", "PRIMARY", "AXIAL", "NONE"]
    assert (ds.Modality, ds.SamplesPerPixel, ds.PhotometricInterpretation) == ("CT", 1, "MONOCHROME2")
    assert (ds.Rows, ds.Columns, ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation) == (
        12,
        10,
        16,
        16,
        15,
        1,
    )
    assert ds.PatientID == HEADER.patient_id and ds.AccessionNumber == HEADER.accession_number
    assert ds.StudyInstanceUID == HEADER.study_uid and ds.SeriesInstanceUID == HEADER.series_uid
    assert ds.FrameOfReferenceUID == HEADER.frame_of_reference_uid
    shared = ds.SharedFunctionalGroupsSequence[0]
    measures = shared.PixelMeasuresSequence[0]
    assert [float(v) for v in measures.PixelSpacing] == [0.75, 0.6]  # [dy, dx]
    assert float(measures.SliceThickness) == float(measures.SpacingBetweenSlices) == 1.25
    np.testing.assert_allclose(
        [float(v) for v in shared.PlaneOrientationSequence[0].ImageOrientationPatient], OBLIQUE.orientation
    )
    assert list(shared.CTImageFrameTypeSequence[0].FrameType) == ["ORIGINAL", "PRIMARY", "AXIAL", "NONE"]
    for f in range(4):
        np.testing.assert_allclose(_frame_position(ds, f), OBLIQUE.voxel_to_patient_mm((f, 0, 0)), atol=1e-4)
    # The dimensions: Stack ID and In-Stack Position Number of the Frame Content Sequence, one organisation.
    organization = ds.DimensionOrganizationSequence[0].DimensionOrganizationUID
    pointers = [(item.DimensionIndexPointer, item.FunctionalGroupPointer) for item in ds.DimensionIndexSequence]
    assert pointers == [(0x00209056, 0x00209111), (0x00209057, 0x00209111)]
    assert {item.DimensionOrganizationUID for item in ds.DimensionIndexSequence} == {organization}


def test_sorting_frames_by_position_rebuilds_the_volume() -> None:
    hu = _volume((6, 16, 18), seed=2)
    order = [5, 2, 0, 4, 1, 3]
    options = EncodeOptions("jpeg-ls-lossless", "signed", -8192)
    ds = pydicom.dcmread(
        io.BytesIO(enhanced_ct(hu, HEADER, OBLIQUE, options=options, frame_order=order, per_frame_rescale=True))
    )
    stored = ds.pixel_array
    along_normal = [float(_frame_position(ds, f) @ OBLIQUE.normal) for f in range(6)]
    frames = np.argsort(along_normal)
    rebuilt = np.stack([stored[f] * _frame_rescale(ds, f)[1] + _frame_rescale(ds, f)[0] for f in frames])
    np.testing.assert_array_equal(rebuilt, hu)


@pytest.mark.parametrize("basic_offset_table", [True, False], ids=["bot", "empty-bot"])
def test_compressed_frames_are_one_fragment_each(basic_offset_table: bool) -> None:
    hu = _volume((3, 32, 32), seed=3)
    options = EncodeOptions("jpeg2000-lossless", "unsigned")
    data = enhanced_ct(hu, HEADER, GEOMETRY, options=options, basic_offset_table=basic_offset_table)
    ds = pydicom.dcmread(io.BytesIO(data))
    buffer = io.BytesIO(ds.PixelData)
    offsets = parse_basic_offsets(buffer)
    fragments = list(pydicom.encaps.generate_fragments(buffer))
    assert len(fragments) == 3
    assert all(fragment.startswith(b"\xff\x4f\xff\x51") for fragment in fragments)  # J2K SOC + SIZ
    assert offsets == (
        [0, len(fragments[0]) + 8, len(fragments[0]) + len(fragments[1]) + 16] if basic_offset_table else []
    )
    assert ds.pixel_array.shape == (3, 32, 32)
    for f in range(3):
        intercept, slope = _frame_rescale(ds, f)
        np.testing.assert_array_equal(ds.pixel_array[f] * slope + intercept, hu[f])
        # pydicom.pixels decodes one frame on its own, with or without the offset table.
        np.testing.assert_array_equal(pixel_array(io.BytesIO(data), index=f), ds.pixel_array[f])


def test_unusable_options_and_arguments_are_refused_clearly() -> None:
    hu = _volume((2, 8, 8))
    with pytest.raises(
        ValueError, match=r"Enhanced CT requires BitsAllocated 16, got pixel_representation 'unsigned-8'"
    ):
        enhanced_ct(hu, HEADER, GEOMETRY, options=EncodeOptions("jpeg-baseline", "unsigned-8", -1024, 16.1))
    with pytest.raises(ValueError, match=r"per_frame_rescale shifts the intercept of odd frames by 24 HU.*'unsigned'"):
        enhanced_ct(
            hu, HEADER, GEOMETRY, options=EncodeOptions(pixel_representation="unsigned"), per_frame_rescale=True
        )
    with pytest.raises(ValueError, match="frame_order must be a permutation of the 2 slice indices"):
        enhanced_ct(hu, HEADER, GEOMETRY, frame_order=[0, 0])
    with pytest.raises(ValueError, match=r"hu must be 3-D \(z, y, x\)"):
        enhanced_ct(hu[0], HEADER, GEOMETRY)


def test_the_dataset_is_what_the_file_holds() -> None:
    hu = _volume((2, 8, 8))
    kwargs = {"sop_instance_uid": "1.2.3.5", "frame_order": [1, 0], "per_frame_rescale": True}
    ds = enhanced_ct_dataset(hu, HEADER, GEOMETRY, **kwargs)
    assert ds.SOPInstanceUID == "1.2.3.5"
    assert enhanced_ct(hu, HEADER, GEOMETRY, **kwargs) == enhanced_ct(hu, HEADER, GEOMETRY, **kwargs)


@pytest.mark.parametrize(
    "options",
    [
        EncodeOptions(),
        EncodeOptions("jpeg-ls-lossless", "unsigned"),
        EncodeOptions("jpeg2000-lossless", "signed", -1000),
        EncodeOptions("explicit-vr-big-endian", "signed", -8192),
    ],
    ids=["explicit", "jpegls-unsigned", "j2k-1000", "big-endian"],
)
def test_simpleitk_reads_the_same_geometry_and_voxels(options: EncodeOptions, tmp_path: Path) -> None:
    sitk = pytest.importorskip("SimpleITK")
    hu = _volume((5, 40, 36), seed=9)
    path = tmp_path / "enhanced.dcm"
    path.write_bytes(enhanced_ct(hu, HEADER, OBLIQUE, options=options))  # frames in slice order, one rescale
    image = sitk.ReadImage(str(path))
    assert image.GetOrigin() == pytest.approx(OBLIQUE.origin_xyz_mm, abs=1e-4)
    assert image.GetSpacing() == pytest.approx(OBLIQUE.spacing_zyx_mm[::-1], abs=1e-4)
    direction = np.reshape(image.GetDirection(), (3, 3))
    expected = np.stack([OBLIQUE.row_cosine, OBLIQUE.column_cosine, OBLIQUE.normal], axis=1)
    np.testing.assert_allclose(direction, expected, atol=1e-5)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), hu)
