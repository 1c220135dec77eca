"""synth.dicom: every transfer syntax and pixel storage round-trips to the same HU; geometry, localizer and SR."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.pixels import apply_modality_lut, get_decoder

from nightscan.storage import ObjectInfo
from scheduler.headers import RejectedObjectError, read_header
from synth import dicom
from synth.dicom import (
    BASIC_TEXT_SR_STORAGE,
    CT_IMAGE_STORAGE,
    CodecUnavailableError,
    EncodeOptions,
    LocalizerView,
    SeriesGeometry,
    SeriesHeader,
    TransferSyntax,
    dataset_to_bytes,
    derived_header,
    encode_series,
    localizer_series,
    series_datasets,
    structured_report,
)

HEADER = SeriesHeader(
    patient_id="SYN0001",
    patient_name="SYNTH^ONE",
    patient_birth_date="19580314",
    patient_sex="F",
    study_uid="1.2.826.0.1.3680043.8.498.1",
    series_uid="1.2.826.0.1.3680043.8.498.2",
    frame_of_reference_uid="1.2.826.0.1.3680043.8.498.3",
    study_date="20240102",
    study_time="101500",
    accession_number="ACC0001",
)
GEOMETRY = SeriesGeometry(origin_xyz_mm=(-100.5, -90.25, -300.0), spacing_zyx_mm=(2.5, 0.7, 0.8))
# Rotated 30 degrees about z: rows along (cos, sin, 0), columns along (-sin, cos, 0).
OBLIQUE = SeriesGeometry(
    origin_xyz_mm=(12.0, -40.0, 55.0),
    spacing_zyx_mm=(1.25, 0.75, 0.6),
    orientation=(0.866025, 0.5, 0.0, -0.5, 0.866025, 0.0),
)
# (storage, intercept): the defaults, and intercepts that make readers apply the modality LUT for real.
STORAGES = [("signed", -1024), ("unsigned", -1024), ("signed", -1000), ("signed", -8192)]
SLOPE_8_BIT = 16.1  # 256 stored values x 16.1 HU cover -1024 to 3071 HU
LOSSLESS = [syntax for syntax in TransferSyntax if not syntax.is_lossy]
# The largest error in stored units of the lossy syntaxes on random CT noise (JPEG-LS: NEAR, a bound).
LOSSY_TOLERANCE = {
    TransferSyntax.JPEG_LS_NEAR_LOSSLESS: dicom.JPEG_LS_NEAR,
    TransferSyntax.JPEG2000: 8,
    TransferSyntax.JPEG_BASELINE: 12,
}


def _volume(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """Integer HU over the whole CT range (z, y, x), float32."""
    return np.random.default_rng(seed).integers(-1024, 3072, shape).astype(np.float32)


def _decode(data: bytes) -> tuple[pydicom.Dataset, np.ndarray]:
    ds = pydicom.dcmread(io.BytesIO(data))
    return ds, apply_modality_lut(ds.pixel_array, ds)


def _require_codec(syntax: TransferSyntax) -> None:
    """Skip unless ``syntax`` can be encoded here (JPEG Lossless SV1 needs GDCM, which is optional)."""
    if not dicom.codec_is_available(syntax):
        pytest.skip(f"no encoder for {syntax.value} here: pip install {syntax.codec_packages}")


def _require_decoder(syntax: TransferSyntax) -> None:
    """Skip unless ``syntax`` can be encoded, and decoded by pydicom (JPEG Lossless: GDCM or pylibjpeg-libjpeg)."""
    _require_codec(syntax)
    if syntax.is_compressed and not get_decoder(syntax.uid).is_available:
        pytest.skip(f"pydicom has no decoder for {syntax.uid.name} here")


def _check_instance(ds: pydicom.Dataset, instance: dicom.EncodedInstance, options: EncodeOptions) -> None:
    storage = options.pixel_representation
    assert ds.file_meta.TransferSyntaxUID == options.transfer_syntax.uid
    assert ds.SOPClassUID == CT_IMAGE_STORAGE
    assert ds.SOPInstanceUID == instance.sop_instance_uid == ds.file_meta.MediaStorageSOPInstanceUID
    assert ds.PixelRepresentation == storage.dicom_value
    assert (ds.BitsAllocated, ds.BitsStored, ds.HighBit) == (
        storage.bits_allocated,
        storage.bits_stored,
        storage.bits_stored - 1,
    )
    assert (float(ds.RescaleIntercept), float(ds.RescaleSlope)) == (options.rescale_intercept, options.rescale_slope)
    assert ds.pixel_array.dtype.str[1:] == storage.dtype.str[1:]  # big endian files decode to '>i2' / '>u2'


@pytest.mark.parametrize("syntax", LOSSLESS)
@pytest.mark.parametrize(("storage", "intercept"), STORAGES)
def test_every_lossless_syntax_and_storage_round_trips_to_the_same_hu(
    syntax: TransferSyntax, storage: str, intercept: int
):
    _require_decoder(syntax)
    hu = _volume((3, 40, 48))
    options = EncodeOptions(transfer_syntax=syntax, pixel_representation=storage, rescale_intercept=intercept)
    instances = list(encode_series(hu, GEOMETRY, HEADER, options=options, uid_entropy="rt"))
    assert [i.slice_index for i in instances] == [0, 1, 2]
    for k, instance in enumerate(instances):
        ds, decoded = _decode(instance.data)
        _check_instance(ds, instance, options)
        assert "LossyImageCompression" not in ds
        np.testing.assert_array_equal(ds.pixel_array, options.stored_from_hu(hu[k]))
        np.testing.assert_array_equal(decoded, hu[k])


@pytest.mark.parametrize("syntax", [s for s in LOSSLESS if s.bits_allocated is None])
def test_8_bit_storage_round_trips_in_every_lossless_syntax(syntax: TransferSyntax):
    _require_decoder(syntax)
    hu = _volume((2, 33, 34), seed=4)
    options = EncodeOptions(syntax, "unsigned-8", -1024, SLOPE_8_BIT)
    for k, instance in enumerate(encode_series(hu, GEOMETRY, HEADER, options=options)):
        ds, decoded = _decode(instance.data)
        _check_instance(ds, instance, options)
        np.testing.assert_array_equal(ds.pixel_array, options.stored_from_hu(hu[k]))
        assert np.abs(decoded - hu[k]).max() <= SLOPE_8_BIT / 2 + 1e-6


def _lossy_cases() -> list[tuple[TransferSyntax, str, int, float]]:
    cases = []
    for syntax in LOSSY_TOLERANCE:
        if syntax.bits_allocated == 8:
            cases.append((syntax, "unsigned-8", -1024, SLOPE_8_BIT))
        else:
            cases += [(syntax, storage, intercept, 1.0) for storage, intercept in STORAGES]
    return cases


@pytest.mark.parametrize(("syntax", "storage", "intercept", "slope"), _lossy_cases())
def test_lossy_syntaxes_round_trip_within_tolerance_and_say_so(
    syntax: TransferSyntax, storage: str, intercept: int, slope: float
):
    _require_decoder(syntax)
    hu = _volume((4, 32, 33), seed=5)
    options = EncodeOptions(syntax, storage, intercept, slope)
    tolerance = LOSSY_TOLERANCE[syntax]
    for k, instance in enumerate(encode_series(hu, GEOMETRY, HEADER, options=options, uid_entropy="lossy")):
        ds, decoded = _decode(instance.data)
        _check_instance(ds, instance, options)
        assert ds.LossyImageCompression == "01"
        assert ds.LossyImageCompressionMethod == syntax.lossy_method
        assert float(ds.LossyImageCompressionRatio) > 0.5
        expected = options.stored_from_hu(hu[k]).astype(np.int64)
        error = np.abs(ds.pixel_array.astype(np.int64) - expected)
        assert error.max() <= tolerance, (syntax, error.max())
        assert np.abs(decoded - hu[k]).max() <= tolerance * slope + slope / 2 + 1e-6
    assert syntax.max_error == (dicom.JPEG_LS_NEAR if syntax is TransferSyntax.JPEG_LS_NEAR_LOSSLESS else None)


def test_jpeg_baseline_takes_8_bit_storage_only() -> None:
    for storage in ("signed", "unsigned"):
        with pytest.raises(ValueError, match=r"'jpeg-baseline' encodes only 8-bit pixels, got pixel_representation"):
            EncodeOptions(transfer_syntax="jpeg-baseline", pixel_representation=storage)
    with pytest.raises(ValueError, match=r"cover -1024 to -769 HU.*needs a rescale_slope of at least 16.06"):
        EncodeOptions("jpeg-baseline", "unsigned-8")
    options = EncodeOptions("jpeg-baseline", "unsigned-8", -1024, SLOPE_8_BIT)
    assert options.transfer_syntax.is_lossy and options.pixel_representation.bits_allocated == 8


def test_jpeg_ls_near_lossless_keeps_signed_values_away_from_the_wrap_around() -> None:
    _require_decoder(TransferSyntax.JPEG_LS_NEAR_LOSSLESS)
    options = EncodeOptions("jpeg-ls-near-lossless", rescale_intercept=-8192)
    near = dicom.JPEG_LS_NEAR
    assert options.stored_range == (-(2**15) + near, 2**15 - 1 - near)
    assert EncodeOptions("jpeg-ls-near-lossless", "unsigned").stored_range == (0, 4095)
    hu = np.zeros((1, 8, 8), np.float32)
    hu[0, ::2] = 1e6  # far beyond the stored range: clipped to its narrowed top
    hu[0, 1::2] = -1e6
    ds, _ = _decode(next(encode_series(hu, GEOMETRY, HEADER, options=options)).data)
    expected = np.where(hu[0] > 0, 2**15 - 1 - near, -(2**15) + near)
    assert np.abs(ds.pixel_array.astype(np.int64) - expected).max() <= near


def test_big_endian_files_hold_byte_swapped_pixels() -> None:
    hu = _volume((1, 6, 5), seed=6)
    for storage in ("signed", "unsigned", "unsigned-8"):
        slope = SLOPE_8_BIT if storage == "unsigned-8" else 1.0
        options = EncodeOptions("explicit-vr-big-endian", storage, -1024, slope)
        data = next(encode_series(hu, GEOMETRY, HEADER, options=options)).data
        ds = pydicom.dcmread(io.BytesIO(data))
        stored = options.stored_from_hu(hu[0])
        assert ds.PixelData == stored.astype(stored.dtype.newbyteorder(">")).tobytes()
        pixel_data_vr = ds["PixelData"].VR
        assert pixel_data_vr == ("OB" if storage == "unsigned-8" else "OW")
        assert not ds.original_encoding[1]  # read as big endian
        assert data.find(b"\x00\x28\x00\x10US\x00\x02\x00\x06") > 0  # (0028,0010) Rows = 6, big endian
        np.testing.assert_array_equal(ds.pixel_array, stored)


def test_deflated_files_compress_the_dataset_after_the_file_meta() -> None:
    hu = np.zeros((1, 64, 64), np.float32)  # compresses well
    options = EncodeOptions("deflated-explicit-vr-little-endian")
    data = next(encode_series(hu, GEOMETRY, HEADER, options=options)).data
    assert HEADER.patient_id.encode() not in data and len(data) < 64 * 64 * 2 // 4
    ds, decoded = _decode(data)
    assert ds.PatientID == HEADER.patient_id
    np.testing.assert_array_equal(decoded, hu[0])


def _markers(codestream: bytes) -> tuple[int, int]:
    """(sample precision of SOF3, predictor of the SOS) of a JPEG Lossless codestream."""
    sof = codestream.index(b"\xff\xc3")
    sos = codestream.index(b"\xff\xda")
    return codestream[sof + 4], codestream[sos + 7]


@pytest.mark.parametrize("predictor", range(1, 8))
def test_the_jpeg_lossless_encoder_round_trips_every_predictor(predictor: int) -> None:
    _require_decoder(TransferSyntax.JPEG_LOSSLESS)
    rng = np.random.default_rng(predictor)
    frames = [
        (rng.integers(-(2**15), 2**15, (17, 23)).astype(np.int16), 16, 1),  # every difference, incl. 32768
        (np.array([[-32768, 32767, -32768, 0], [32767, -32768, 32767, -1]], np.int16), 16, 1),
        (rng.integers(0, 4096, (9, 31)).astype(np.uint16), 12, 0),
        (rng.integers(0, 256, (12, 5)).astype(np.uint8), 8, 0),
        (np.full((6, 7), -5, np.int16), 16, 1),  # one Huffman symbol only
        (np.full((1, 1), 9, np.uint16), 12, 0),
    ]
    for frame, bits_stored, signed in frames:
        codestream = dicom.jpeg_lossless_codestream(frame, precision=bits_stored, predictor=predictor)
        assert _markers(codestream) == (bits_stored, predictor)
        ds = pydicom.Dataset()
        ds.file_meta = pydicom.dataset.FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = TransferSyntax.JPEG_LOSSLESS.uid
        ds.Rows, ds.Columns = frame.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = frame.dtype.itemsize * 8, bits_stored, bits_stored - 1
        ds.PixelRepresentation = signed
        ds.PixelData = pydicom.encaps.encapsulate([codestream])
        np.testing.assert_array_equal(ds.pixel_array, frame)
    with pytest.raises(ValueError, match="predictor must be a selection value 1 to 7"):
        dicom.jpeg_lossless_codestream(frames[0][0], precision=16, predictor=0)


def test_jpeg_lossless_files_name_their_precision_and_predictor() -> None:
    _require_codec(TransferSyntax.JPEG_LOSSLESS_SV1)
    hu = _volume((1, 16, 16))
    for syntax, storage, expected in [
        ("jpeg-lossless", "signed", (16, dicom.JPEG_LOSSLESS_PREDICTOR)),
        ("jpeg-lossless", "unsigned", (12, dicom.JPEG_LOSSLESS_PREDICTOR)),
        ("jpeg-lossless-sv1", "signed", (16, 1)),
        ("jpeg-lossless-sv1", "unsigned", (16, 1)),  # GDCM writes precision 16 for BitsStored 12
    ]:
        data = next(encode_series(hu, GEOMETRY, HEADER, options=EncodeOptions(syntax, storage))).data
        ds = pydicom.dcmread(io.BytesIO(data))
        codestream = next(pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=1))
        assert _markers(codestream) == expected, syntax


def test_default_options_store_hu_plus_1024_as_before() -> None:
    hu = _volume((2, 16, 16))
    ds, _ = _decode(next(encode_series(hu, GEOMETRY, HEADER)).data)
    np.testing.assert_array_equal(ds.pixel_array, dicom.hu_to_stored(hu[0]))
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian


def test_values_outside_the_stored_range_are_clipped_and_slope_applies() -> None:
    hu = np.array([[[-3000.0, -1024.0, 0.0, 3071.0, 9000.0]]], dtype=np.float32)
    unsigned = EncodeOptions(pixel_representation="unsigned")
    _, decoded = _decode(next(encode_series(hu, GEOMETRY, HEADER, options=unsigned)).data)
    np.testing.assert_array_equal(decoded, [[-1024, -1024, 0, 3071, 3071]])
    halved = EncodeOptions(rescale_slope=2.0, rescale_intercept=-2048)
    ds, decoded = _decode(next(encode_series(hu, GEOMETRY, HEADER, options=halved)).data)
    assert float(ds.RescaleSlope) == 2.0
    np.testing.assert_array_equal(decoded, [[-3000, -1024, 0, 3072, 9000]])  # 2 HU steps


@pytest.mark.parametrize(
    "syntax",
    [
        TransferSyntax.IMPLICIT_VR_LITTLE_ENDIAN,
        TransferSyntax.JPEG_LS_LOSSLESS,
        TransferSyntax.EXPLICIT_VR_BIG_ENDIAN,
        TransferSyntax.DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
        TransferSyntax.JPEG_LS_NEAR_LOSSLESS,  # a per-slice LossyImageCompressionRatio
        TransferSyntax.JPEG_LOSSLESS,
    ],
)
def test_spliced_files_equal_pydicom_written_datasets(syntax: TransferSyntax) -> None:
    hu = _volume((3, 24, 20))
    options = EncodeOptions(transfer_syntax=syntax, pixel_representation="unsigned")
    numbers = [3, 1, 2]
    spliced = encode_series(hu, OBLIQUE, HEADER, options=options, instance_numbers=numbers, uid_entropy="s")
    datasets = series_datasets(
        hu,
        OBLIQUE.spacing_zyx_mm,
        HEADER,
        origin_xyz_mm=OBLIQUE.origin_xyz_mm,
        orientation=OBLIQUE.orientation,
        options=options,
        instance_numbers=numbers,
        uid_entropy="s",
    )
    for instance, ds in zip(spliced, datasets, strict=True):
        assert instance.data == dataset_to_bytes(ds)


def test_geometry_attributes_follow_the_convention() -> None:
    hu = _volume((4, 12, 10))
    numbers = [4, 2, 1, 3]  # out of order
    instances = list(encode_series(hu, OBLIQUE, HEADER, instance_numbers=numbers, uid_entropy="g"))
    normal = np.cross(OBLIQUE.orientation[:3], OBLIQUE.orientation[3:])
    for k, instance in enumerate(instances):
        ds = pydicom.dcmread(io.BytesIO(instance.data), stop_before_pixels=True)
        expected = np.asarray(OBLIQUE.origin_xyz_mm) + k * 1.25 * normal
        np.testing.assert_allclose([float(v) for v in ds.ImagePositionPatient], expected, atol=1e-4)
        np.testing.assert_allclose([float(v) for v in ds.ImageOrientationPatient], OBLIQUE.orientation)
        assert [float(v) for v in ds.PixelSpacing] == [0.75, 0.6]  # [dy, dx]
        assert float(ds.SliceThickness) == 1.25
        assert float(ds.SliceLocation) == pytest.approx(float(expected @ normal), abs=1e-4)
        assert ds.InstanceNumber == numbers[k] == instance.instance_number
        assert (ds.Rows, ds.Columns) == (12, 10)
        assert ds.FrameOfReferenceUID == HEADER.frame_of_reference_uid
        assert ds.PatientID == HEADER.patient_id and ds.AccessionNumber == HEADER.accession_number
    # A voxel's patient position: the geometry's mapping agrees with IPP + i * dy * col + j * dx * row.
    k, i, j = 2, 5, 7
    position = np.asarray(OBLIQUE.origin_xyz_mm) + k * 1.25 * normal
    position = position + i * 0.75 * np.asarray(OBLIQUE.orientation[3:]) + j * 0.6 * np.asarray(OBLIQUE.orientation[:3])
    assert OBLIQUE.voxel_to_patient_mm((k, i, j)) == pytest.approx(tuple(position))
    # SOP UIDs: derived from the entropy, distinct per slice, and different for another entropy.
    again = [i.sop_instance_uid for i in encode_series(hu, OBLIQUE, HEADER, uid_entropy="g")]
    other = [i.sop_instance_uid for i in encode_series(hu, OBLIQUE, HEADER, uid_entropy="h")]
    assert again == [i.sop_instance_uid for i in instances]
    assert len(set(again)) == 4 and not set(again) & set(other)


def test_512_by_512_slices_round_trip() -> None:
    hu = _volume((2, 512, 512), seed=3)
    geometry = SeriesGeometry(spacing_zyx_mm=(1.0, 0.68, 0.68))
    for syntax in (TransferSyntax.EXPLICIT_VR_LITTLE_ENDIAN, TransferSyntax.JPEG_LS_LOSSLESS):
        options = EncodeOptions(transfer_syntax=syntax)
        for k, instance in enumerate(encode_series(hu, geometry, HEADER, options=options)):
            ds, decoded = _decode(instance.data)
            assert (ds.Rows, ds.Columns) == (512, 512)
            np.testing.assert_array_equal(decoded, hu[k])


class _NoEncoder:
    is_available = False


def test_a_missing_codec_names_the_syntax_and_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dicom, "get_encoder", lambda uid: _NoEncoder())
    assert not dicom.codec_is_available("jpeg-ls-lossless")
    with pytest.raises(CodecUnavailableError, match=r"'jpeg-ls-lossless' .*pip install pyjpegls"):
        EncodeOptions(transfer_syntax="jpeg-ls-lossless")
    with pytest.raises(CodecUnavailableError, match=r"'jpeg-ls-near-lossless' .*pip install pyjpegls"):
        EncodeOptions(transfer_syntax="jpeg-ls-near-lossless")
    with pytest.raises(CodecUnavailableError, match=r"'jpeg2000-lossless' .*pip install pylibjpeg pylibjpeg-openjpeg"):
        EncodeOptions(transfer_syntax=TransferSyntax.JPEG2000_LOSSLESS)
    with pytest.raises(CodecUnavailableError, match=r"'jpeg2000' .*pip install pylibjpeg pylibjpeg-openjpeg"):
        EncodeOptions(transfer_syntax=TransferSyntax.JPEG2000)
    assert EncodeOptions(transfer_syntax="implicit-vr-little-endian").transfer_syntax.is_implicit_vr


def test_gdcm_and_pillow_encoders_are_checked_by_module(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dicom.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(CodecUnavailableError, match=r"'jpeg-lossless-sv1' .*pip install python-gdcm"):
        EncodeOptions(transfer_syntax="jpeg-lossless-sv1")
    with pytest.raises(CodecUnavailableError, match=r"'jpeg-baseline' .*pip install pillow"):
        EncodeOptions("jpeg-baseline", "unsigned-8", -1024, SLOPE_8_BIT)
    # Encoded by pydicom alone or by this module's own JPEG Lossless encoder.
    for syntax in ("jpeg-lossless", "explicit-vr-big-endian", "deflated-explicit-vr-little-endian", "rle-lossless"):
        assert dicom.codec_is_available(syntax)


def test_every_syntax_has_its_uid_and_properties() -> None:
    uids = {syntax: str(syntax.uid) for syntax in TransferSyntax}
    assert uids[TransferSyntax.EXPLICIT_VR_BIG_ENDIAN] == "1.2.840.10008.1.2.2"
    assert uids[TransferSyntax.DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN] == "1.2.840.10008.1.2.1.99"
    assert uids[TransferSyntax.JPEG_LOSSLESS_SV1] == "1.2.840.10008.1.2.4.70"
    assert uids[TransferSyntax.JPEG_LOSSLESS] == "1.2.840.10008.1.2.4.57"
    assert uids[TransferSyntax.JPEG_LS_NEAR_LOSSLESS] == "1.2.840.10008.1.2.4.81"
    assert uids[TransferSyntax.JPEG2000] == "1.2.840.10008.1.2.4.91"
    assert uids[TransferSyntax.JPEG_BASELINE] == "1.2.840.10008.1.2.4.50"
    assert len(set(uids.values())) == len(uids)
    assert [s for s in TransferSyntax if not s.is_little_endian] == [TransferSyntax.EXPLICIT_VR_BIG_ENDIAN]
    assert [s for s in TransferSyntax if s.is_deflated] == [TransferSyntax.DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN]
    assert {s for s in TransferSyntax if s.is_lossy} == set(LOSSY_TOLERANCE)
    assert all(s.max_error == 0 for s in LOSSLESS)


def test_jpeg2000_refuses_images_under_32_pixels_clearly() -> None:
    options = EncodeOptions(transfer_syntax="jpeg2000-lossless")
    with pytest.raises(ValueError, match=r"'jpeg2000-lossless' needs images of at least 32 x 32 pixels, got 40 x 31"):
        next(encode_series(_volume((1, 40, 31)), GEOMETRY, HEADER, options=options))
    with pytest.raises(ValueError, match=r"'jpeg2000' needs images of at least 32 x 32 pixels, got 31 x 40"):
        next(encode_series(_volume((1, 31, 40)), GEOMETRY, HEADER, options=EncodeOptions("jpeg2000")))


def test_bad_options_and_geometry_name_the_argument() -> None:
    with pytest.raises(ValueError, match=r"transfer_syntax must be one of .*got 'jpeg'"):
        EncodeOptions(transfer_syntax="jpeg")
    with pytest.raises(ValueError, match=r"pixel_representation must be one of"):
        EncodeOptions(pixel_representation="float")
    with pytest.raises(ValueError, match=r"rescale_intercept -8192.0 .* unsigned storage"):
        EncodeOptions(pixel_representation="unsigned", rescale_intercept=-8192)
    with pytest.raises(ValueError, match="rescale_slope must be > 0"):
        EncodeOptions(rescale_slope=0)
    with pytest.raises(ValueError, match="orientation must be two orthogonal unit vectors"):
        SeriesGeometry(orientation=(1, 0, 0, 1, 0, 0))
    with pytest.raises(ValueError, match="spacing_zyx_mm must be three positive"):
        SeriesGeometry(spacing_zyx_mm=(1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="instance_numbers must be distinct"):
        next(encode_series(_volume((2, 8, 8)), GEOMETRY, HEADER, instance_numbers=[1, 1]))
    with pytest.raises(ValueError, match=r"hu must be 3-D \(z, y, x\), got shape \(8, 8\)"):
        next(encode_series(np.zeros((8, 8)), GEOMETRY, HEADER))


def _object(data: bytes, key: str = "k.dcm") -> ObjectInfo:
    return ObjectInfo(key=key, size=len(data), etag="e", last_modified=datetime(2024, 1, 1, tzinfo=UTC))


def test_localizer_is_a_non_axial_localizer_image_in_the_same_study() -> None:
    hu = _volume((6, 20, 16))
    header = derived_header(
        HEADER, series_uid="1.2.826.0.1.3680043.8.498.9", series_number=101, series_description="SCOUT"
    )
    options = EncodeOptions(transfer_syntax="rle-lossless")
    images = localizer_series(hu, GEOMETRY, header, views=["frontal", LocalizerView.LATERAL], options=options)
    assert len(images) == 2
    for image in images:  # header indexing accepts it as a CT image and sees LOCALIZER (selection skips it)
        assert read_header(_object(image.data), image.data).image_type == ("ORIGINAL", "PRIMARY", "LOCALIZER")
    (frontal, frontal_hu), (lateral, lateral_hu) = (_decode(image.data) for image in images)
    for ds in (frontal, lateral):
        assert "LOCALIZER" in ds.ImageType and ds.SOPClassUID == CT_IMAGE_STORAGE
        assert ds.StudyInstanceUID == HEADER.study_uid and ds.SeriesInstanceUID == header.series_uid
        assert ds.FrameOfReferenceUID == HEADER.frame_of_reference_uid
    assert [float(v) for v in frontal.ImageOrientationPatient] == [1, 0, 0, 0, 0, -1]
    assert [float(v) for v in lateral.ImageOrientationPatient] == [0, 1, 0, 0, 0, -1]
    # The top row is the last slice; rows step down along -z by dz.
    assert float(frontal.ImagePositionPatient[2]) == pytest.approx(-300.0 + 5 * 2.5)
    assert [float(v) for v in frontal.PixelSpacing] == [2.5, 0.8]
    np.testing.assert_array_equal(frontal_hu, np.rint(hu.mean(axis=1)[::-1]))
    np.testing.assert_array_equal(lateral_hu, np.rint(hu.mean(axis=2)[::-1]))


def test_structured_report_is_a_non_image_object_that_indexing_rejects() -> None:
    header = derived_header(
        HEADER, series_uid="1.2.826.0.1.3680043.8.498.8", series_number=201, series_description="SR"
    )
    report = structured_report(header, uid_entropy="sr")
    assert report == structured_report(header, uid_entropy="sr")
    ds = pydicom.dcmread(io.BytesIO(report.data))
    assert "PixelData" not in ds
    assert ds.SOPClassUID == BASIC_TEXT_SR_STORAGE and ds.Modality == "SR"
    assert ds.StudyInstanceUID == HEADER.study_uid and ds.PatientID == HEADER.patient_id
    assert ds.ContentSequence[0].ValueType == "TEXT"
    with pytest.raises(RejectedObjectError, match="not a CT image"):
        read_header(_object(report.data), report.data)


@pytest.mark.parametrize("geometry", [GEOMETRY, OBLIQUE], ids=["axial", "oblique"])
@pytest.mark.parametrize(
    ("syntax", "storage", "intercept"),
    [
        ("explicit-vr-little-endian", "signed", -1024),
        ("jpeg-ls-lossless", "unsigned", -1024),
        ("jpeg2000-lossless", "signed", -1000),
        ("explicit-vr-big-endian", "signed", -1000),
        ("deflated-explicit-vr-little-endian", "unsigned", -1024),
        ("jpeg-lossless", "signed", -8192),
        ("jpeg-lossless-sv1", "unsigned", -1024),
    ],
    ids=["explicit-signed", "jpegls-unsigned", "j2k-signed-1000", "big-endian", "deflated", "jpeg-p7", "jpeg-sv1"],
)
def test_simpleitk_reads_the_same_geometry_and_voxels(
    geometry: SeriesGeometry, syntax: str, storage: str, intercept: int, tmp_path: Path
):
    sitk = pytest.importorskip("SimpleITK")
    _require_codec(TransferSyntax(syntax))
    options = EncodeOptions(syntax, storage, intercept)
    hu = _volume((5, 40, 36), seed=9)  # JPEG 2000 needs 32 x 32 pixels or more
    numbers = [3, 5, 1, 4, 2]  # file order and numbering unrelated to position
    for instance in encode_series(hu, geometry, HEADER, options=options, instance_numbers=numbers, uid_entropy="i"):
        (tmp_path / f"{instance.sop_instance_uid}.dcm").write_bytes(instance.data)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(tmp_path)))
    image = reader.Execute()
    assert image.GetOrigin() == pytest.approx(geometry.origin_xyz_mm, abs=1e-4)
    assert image.GetSpacing() == pytest.approx(geometry.spacing_zyx_mm[::-1], abs=1e-4)  # SimpleITK: (x, y, z)
    direction = np.reshape(image.GetDirection(), (3, 3))  # columns: row cosine, column cosine, normal
    expected = np.stack([geometry.row_cosine, geometry.column_cosine, geometry.normal], axis=1)
    np.testing.assert_allclose(direction, expected, atol=1e-5)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), hu)  # (z, y, x), HU after the modality LUT
