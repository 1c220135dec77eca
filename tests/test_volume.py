"""Decoding and volume building: HU values, sort order along the normal, geometry, and bad series."""

from __future__ import annotations

import random

import numpy as np
import pytest
from pydicom.data import get_testdata_file

from synth.dicom import SeriesHeader, dataset_to_bytes, series_datasets
from synth.phantom import make_phantom
from workers.decode import DecodeError, decode_slice
from workers.volume import VolumeError, build_volume

HEADER = SeriesHeader(
    patient_id="T1",
    patient_name="TEST^ONE",
    patient_birth_date="19600101",
    patient_sex="F",
    study_uid="1.2.3.1",
    series_uid="1.2.3.2",
    frame_of_reference_uid="1.2.3.3",
    study_date="20240101",
    study_time="120000",
    accession_number="A1",
)
ORIGIN = (-80.0, -80.0, -300.0)


@pytest.fixture(scope="module")
def series() -> tuple[np.ndarray, list[tuple[str, bytes]]]:
    phantom = make_phantom(np.random.default_rng(5), shape_zyx=(24, 64, 64), n_nodules=1)
    blobs = [
        (f"slice-{ds.InstanceNumber}", dataset_to_bytes(ds))
        for ds in series_datasets(phantom.hu, phantom.spacing_zyx_mm, HEADER, origin_xyz_mm=ORIGIN)
    ]
    return phantom.hu, blobs


def test_volume_is_sorted_by_position_whatever_the_object_order(series) -> None:
    hu, blobs = series
    shuffled = blobs[:]
    random.Random(1).shuffle(shuffled)
    volume = build_volume([decode_slice(k, b) for k, b in shuffled])
    assert volume.hu.shape == hu.shape and volume.hu.dtype == np.float32
    assert np.abs(volume.hu - np.clip(np.round(hu), -1024, None)).max() <= 1.0
    assert volume.spacing_zyx_mm == pytest.approx((2.5, 2.5, 2.5))
    assert volume.to_patient((0, 0, 0)) == pytest.approx(ORIGIN)
    assert volume.to_patient((2, 3, 4)) == pytest.approx((ORIGIN[0] + 10.0, ORIGIN[1] + 7.5, ORIGIN[2] + 5.0))
    assert volume.keys == tuple(k for k, _ in blobs)


def test_duplicate_position_is_rejected_naming_both_objects(series) -> None:
    _, blobs = series
    slices = [decode_slice(k, b) for k, b in blobs]
    duplicate = decode_slice("copy-of-slice-3", blobs[2][1])
    with pytest.raises(VolumeError, match=r"duplicate slice position .* mm: slice-3 and copy-of-slice-3"):
        build_volume([*slices, duplicate])


def test_missing_slice_is_reported_as_a_gap(series) -> None:
    _, blobs = series
    slices = [decode_slice(k, b) for k, b in blobs]
    with pytest.raises(VolumeError, match="irregular slice spacing"):
        build_volume(slices[:10] + slices[11:])


def test_real_ct_file_gets_its_modality_lut() -> None:
    path = get_testdata_file("CT_small.dcm")
    with open(path, "rb") as f:
        data = f.read()
    sl = decode_slice("CT_small.dcm", data)
    import pydicom

    ds = pydicom.dcmread(path)
    assert float(ds.RescaleIntercept) == -1024.0
    np.testing.assert_allclose(sl.hu, ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope) - 1024.0)


def test_corrupt_object_names_the_key(series) -> None:
    _, blobs = series
    _, data = blobs[0]
    with pytest.raises(DecodeError, match="bad-slice"):
        decode_slice("bad-slice", data[: len(data) // 2])
