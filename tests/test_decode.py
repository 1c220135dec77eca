"""Decoding one object: every codec on pydicom's real files, HU from the modality LUT, padding, MONOCHROME1."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

from synth.dicom import dataset_to_bytes, series_datasets
from tests.test_volume import HEADER
from workers.codecs import CODECS, codec_status, decoder_for, is_heavy, transfer_syntax_of
from workers.decode import PADDING_HU, DecodeError, decode_object


def real(name: str) -> tuple[str, bytes]:
    """(name, bytes) of a file that ships inside pydicom's wheel."""
    return name, Path(get_testdata_file(name)).read_bytes()


def test_real_ct_file_gets_its_modality_lut() -> None:
    decoded = decode_object(*real("CT_small.dcm"))
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    assert float(ds.RescaleIntercept) == -1024.0
    assert decoded.pixels.dtype == np.float32 and decoded.pixels.shape == (1, 128, 128)
    np.testing.assert_array_equal(decoded.pixels[0], ds.pixel_array.astype(np.float32) * 1.0 - 1024.0)
    frame = decoded.frames[0]
    assert frame.position.tolist() == [float(v) for v in ds.ImagePositionPatient]
    assert frame.pixel_spacing == (float(ds.PixelSpacing[0]), float(ds.PixelSpacing[1]))
    assert frame.frame_number is None and frame.sop_instance_uid == ds.SOPInstanceUID


@pytest.mark.parametrize(
    "name",
    [
        "MR_small_implicit.dcm",  # implicit VR little endian
        "MR_small_bigendian.dcm",  # explicit VR big endian
        "MR_small_expb.dcm",  # explicit VR big endian, another writer
        "MR_small_RLE.dcm",  # RLE lossless
        "MR_small_jp2klossless.dcm",  # JPEG 2000 lossless
        "MR_small_jpeg_ls_lossless.dcm",  # JPEG-LS lossless
    ],
)
def test_the_same_image_in_every_transfer_syntax_decodes_to_the_same_values(name: str) -> None:
    reference = decode_object(*real("MR_small.dcm"))
    decoded = decode_object(*real(name))
    np.testing.assert_array_equal(decoded.pixels, reference.pixels)
    assert decoded.pixels.min() < decoded.pixels.max()


def test_signed_jpeg2000_ct_gives_hounsfield_units() -> None:
    key, data = real("693_J2KI.dcm")
    decoded = decode_object(key, data)
    ds = pydicom.dcmread(get_testdata_file(key))
    assert ds.PixelRepresentation == 1 and ds.BitsStored == 14
    hu = decoded.pixels[0]
    assert hu.shape == (512, 512)
    stored = ds.pixel_array
    padding = stored == ds.PixelPaddingValue  # -2000: outside the reconstruction circle
    assert decoded.padded == padding.sum() > 0 and np.all(hu[padding] == PADDING_HU)
    # a real chest or abdomen slice: air outside the body, soft tissue inside, bone brighter still
    assert np.percentile(hu, 5) < -900
    assert -100 < np.median(hu[200:300, 200:300]) < 200
    assert hu.max() > 300
    # two independent JPEG 2000 decoders (OpenJPEG through pylibjpeg, and GDCM) agree
    from pydicom.pixels import get_decoder

    gdcm, _ = get_decoder(ds.file_meta.TransferSyntaxUID).as_array(ds, decoding_plugin="gdcm")
    other = gdcm.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    np.testing.assert_array_equal(hu[~padding], other[~padding])


def test_monochrome1_radiograph_is_inverted() -> None:
    key = "dicomdirtests/77654033/CR1/6154"
    decoded = decode_object(*real(key))
    ds = pydicom.dcmread(get_testdata_file(key))
    assert ds.PhotometricInterpretation == "MONOCHROME1" and ds.BitsStored == 12
    slope, intercept = float(ds.get("RescaleSlope", 1)), float(ds.get("RescaleIntercept", 0))
    stored = ds.pixel_array.astype(np.float32) * slope + intercept
    low, high = intercept, 4095 * slope + intercept
    np.testing.assert_allclose(decoded.pixels[0], low + high - stored)
    assert decoded.frames[0].position is None  # a projection image: it cannot join a volume


def _ct_slice(**attributes: object) -> Dataset:
    hu = np.full((1, 16, 16), -800.0)
    ds = next(series_datasets(hu, (2.5, 1.0, 1.0), HEADER))
    for name, value in attributes.items():
        setattr(ds, name, value)
    return ds


def test_padding_value_and_range_become_air() -> None:
    ds = _ct_slice(RescaleIntercept=-1024)
    stored = np.full((16, 16), 224, dtype=np.int16)  # -800 HU
    stored[0, :] = -2000
    stored[1, :] = -1990
    ds.PixelData = stored.tobytes()
    ds.PixelPaddingValue = -2000
    decoded = decode_object("pad.dcm", dataset_to_bytes(ds))
    assert decoded.padded == 16
    assert np.all(decoded.pixels[0, 0] == PADDING_HU)
    assert np.all(decoded.pixels[0, 1] == -1990 - 1024)  # not padding: kept
    ds.PixelPaddingRangeLimit = -1990
    decoded = decode_object("pad.dcm", dataset_to_bytes(ds))
    assert decoded.padded == 32 and np.all(decoded.pixels[0, :2] == PADDING_HU)
    assert np.all(decoded.pixels[0, 2:] == -800.0)


def test_bits_stored_masks_the_high_bits_and_sign_extends() -> None:
    ds = _ct_slice(BitsStored=12, HighBit=11, PixelRepresentation=0, RescaleIntercept=-1024)
    raw = np.full((16, 16), 0xF000 | 1000, dtype=np.uint16)  # garbage above bit 11
    ds.PixelData = raw.tobytes()
    assert np.all(decode_object("u12.dcm", dataset_to_bytes(ds)).pixels == 1000 - 1024)
    ds = _ct_slice(BitsStored=12, HighBit=11, PixelRepresentation=1, RescaleIntercept=0)
    ds.PixelData = np.full((16, 16), 0x0FFB, dtype=np.uint16).tobytes()  # -5 in 12-bit two's complement
    assert np.all(decode_object("s12.dcm", dataset_to_bytes(ds)).pixels == -5)


def test_modality_lut_sequence_is_applied() -> None:
    ds = _ct_slice(RescaleIntercept=0)
    del ds.RescaleIntercept, ds.RescaleSlope
    ds.PixelData = np.arange(256, dtype=np.int16).reshape(16, 16).tobytes()
    ds.PixelRepresentation = 0
    item = Dataset()
    item.LUTDescriptor = [256, 0, 16]
    item.ModalityLUTType = "HU"
    item.add_new(0x00283006, "US", [2 * v for v in range(256)])  # LUT Data
    ds.ModalityLUTSequence = [item]
    decoded = decode_object("lut.dcm", dataset_to_bytes(ds))
    np.testing.assert_array_equal(decoded.pixels[0], 2.0 * np.arange(256).reshape(16, 16))


def test_corrupt_object_names_the_key() -> None:
    _, data = real("693_J2KI.dcm")
    with pytest.raises(DecodeError, match="bad-slice: no Pixel Data: truncated"):
        decode_object("bad-slice", data[: len(data) // 2])
    _, data = real("CT_small.dcm")
    with pytest.raises(DecodeError, match=r"short.dcm: cannot decode .* \(13303 vs 32768 bytes\)"):
        decode_object("short.dcm", data[: len(data) // 2])
    with pytest.raises(DecodeError, match=r"notes\.txt: no Pixel Data"):
        decode_object("notes.txt", b"not a DICOM file at all")
    with pytest.raises(DecodeError, match=r"rtplan.dcm: no Pixel Data: truncated, or not an image \(SOP class RT Plan"):
        decode_object(*real("rtplan.dcm"))


def test_unknown_transfer_syntax_names_it() -> None:
    with pytest.raises(Exception, match=r"1\.2\.3\.4 .* is not supported"):
        decoder_for("1.2.3.4")


def test_every_supported_syntax_has_a_codec_installed() -> None:
    rows = codec_status()
    assert {uid for uid, *_ in rows} == set(CODECS)
    assert not [row for row in rows if row[2] == "MISSING"]
    by_uid = {uid: available for uid, _, available, _ in rows}
    assert by_uid["1.2.840.10008.1.2.4.80"].startswith("pyjpegls")  # preferred: twice GDCM's speed
    from click.testing import CliRunner

    from nightscan.cli import main

    result = CliRunner().invoke(main, ["codecs"], terminal_width=200)
    assert result.exit_code == 0 and "JPEG-LS Lossless" in result.output and "MISSING" not in result.output


def test_a_missing_codec_says_which_package_to_install() -> None:
    """In a fresh interpreter where neither JPEG-LS codec can be imported, the error names syntax and package."""
    script = f"""
import sys
for name in ("jpeg_ls", "gdcm", "_CharLS", "charls"):
    sys.modules[name] = None  # importing it now fails, as if it were not installed
from pathlib import Path
from workers.decode import DecodeError, decode_object
try:
    decode_object("ls.dcm", Path({get_testdata_file("MR_small_jpeg_ls_lossless.dcm")!r}).read_bytes())
except DecodeError as exc:
    print(exc)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60)
    assert "ls.dcm: transfer syntax 1.2.840.10008.1.2.4.80 (JPEG-LS Lossless Image Compression)" in out.stdout
    assert "install one of: pyjpegls, python-gdcm" in out.stdout


def test_transfer_syntax_is_read_from_the_first_bytes() -> None:
    assert transfer_syntax_of(real("CT_small.dcm")[1]) == "1.2.840.10008.1.2.1"
    assert transfer_syntax_of(real("693_J2KI.dcm")[1][:400]) == "1.2.840.10008.1.2.4.91"
    assert transfer_syntax_of(real("no_meta.dcm")[1]) is None
    assert is_heavy("1.2.840.10008.1.2.4.201") and not is_heavy("1.2.840.10008.1.2.1") and not is_heavy(None)


def test_jpeg2000_with_a_pixel_representation_mismatch_decodes_alike_in_both_codecs() -> None:
    """J2K_pixelrep_mismatch: the codestream is unsigned while the dataset says signed; pydicom corrects both."""
    key, data = real("J2K_pixelrep_mismatch.dcm")
    ds = pydicom.dcmread(get_testdata_file(key))
    from pydicom.pixels import get_decoder

    decoder = get_decoder(ds.file_meta.TransferSyntaxUID)
    by_openjpeg, _ = decoder.as_array(ds, decoding_plugin="pylibjpeg")
    by_gdcm, _ = decoder.as_array(ds, decoding_plugin="gdcm")
    np.testing.assert_array_equal(by_openjpeg, by_gdcm)
    np.testing.assert_array_equal(decode_object(key, data).stored[0], by_openjpeg)
