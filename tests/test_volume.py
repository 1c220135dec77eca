"""Building volumes: order along the normal, spacing from positions, gaps, tilt, real files, world coordinates."""

from __future__ import annotations

import random
from pathlib import Path
from unittest.mock import patch

import numpy as np
import pytest
from pydicom.data import get_testdata_file

from synth.dicom import EncodeOptions, SeriesGeometry, SeriesHeader, dataset_to_bytes, series_datasets
from synth.phantom import make_phantom
from workers.decode import DecodeError, decode_object
from workers.series import DecodePool, load_series
from workers.volume import IrregularSeries, Volume, VolumeError, build_volume

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
RESAMPLE = IrregularSeries.RESAMPLE


def load(
    blobs: list[tuple[str, bytes]], policy: IrregularSeries = IrregularSeries.REJECT, processes: int = 1
) -> Volume:
    """The volume of ``blobs`` ((key, bytes) pairs), loaded as the worker loads a series.

    With ``processes`` > 1 every object goes to the decoder processes, whatever its syntax (only HTJ2K would,
    and no installed package can write HTJ2K), so that the process path is what is tested.
    """
    store = dict(blobs)
    pool = DecodePool(processes)
    try:
        with patch("workers.series.is_heavy", return_value=processes > 1):
            volume, _ = load_series(list(store), store.__getitem__, fetch_threads=4, pool=pool, policy=policy)
    finally:
        pool.close()
    return volume


def encode(hu: np.ndarray, **kwargs: object) -> list[tuple[str, bytes]]:
    """One (key, bytes) per slice of ``hu`` ((z, y, x), HU) at 2.5 mm, origin ORIGIN unless given."""
    kwargs.setdefault("origin_xyz_mm", ORIGIN)
    datasets = series_datasets(hu, kwargs.pop("spacing", (2.5, 2.5, 2.5)), HEADER, **kwargs)  # type: ignore[arg-type]
    return [(f"slice-{ds.InstanceNumber}", dataset_to_bytes(ds)) for ds in datasets]


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(np.random.default_rng(5), shape_zyx=(24, 64, 64), n_nodules=1)


@pytest.fixture(scope="module")
def series(phantom) -> tuple[np.ndarray, list[tuple[str, bytes]]]:
    return phantom.hu, encode(phantom.hu)


def expected_hu(hu: np.ndarray) -> np.ndarray:
    """What the files hold: HU rounded, and clipped to the stored range's floor."""
    return np.clip(np.round(hu), -1024, None)


def test_volume_is_sorted_by_position_whatever_the_object_order(series) -> None:
    hu, blobs = series
    shuffled = blobs[:]
    random.Random(1).shuffle(shuffled)
    volume = load(shuffled)
    assert volume.hu.shape == hu.shape and volume.hu.dtype == np.float32
    assert np.abs(volume.hu - expected_hu(hu)).max() <= 1.0
    assert volume.spacing_zyx_mm == pytest.approx((2.5, 2.5, 2.5))
    assert volume.to_patient((0, 0, 0)) == pytest.approx(ORIGIN)
    assert volume.to_patient((2, 3, 4)) == pytest.approx((ORIGIN[0] + 10.0, ORIGIN[1] + 7.5, ORIGIN[2] + 5.0))
    assert volume.keys == tuple(k for k, _ in blobs)
    assert volume.corrections == ()


def test_decoder_processes_give_the_same_volume(phantom) -> None:
    blobs = encode(phantom.hu, options=EncodeOptions(transfer_syntax="jpeg2000-lossless"))
    inline, pooled = load(blobs), load(blobs, processes=2)
    np.testing.assert_array_equal(inline.hu, pooled.hu)
    assert inline.keys == pooled.keys


def test_instance_numbers_against_position_order_real_files() -> None:
    """CT5N: InstanceNumber rises while z falls. Slices are ordered by position along the normal."""
    folder = Path(get_testdata_file("dicomdirtests/98892001/CT5N/2062")).parent
    blobs = [(p.name, p.read_bytes()) for p in sorted(folder.iterdir())]
    volume = load(blobs)
    assert volume.hu.shape == (5, 16, 16)
    assert volume.keys == ("3353", "3023", "2693", "2392", "2062")  # z = -1.24 ... 8.76 mm
    assert volume.spacing_zyx_mm == pytest.approx((2.5, 0.488281, 0.488281))
    assert volume.to_patient((0, 0, 0)) == pytest.approx((-72.2, -143.0, -1.2375), abs=1e-4)
    for k, key in enumerate(volume.keys):
        np.testing.assert_array_equal(volume.hu[k], decode_object(key, (folder / key).read_bytes()).pixels[0])


def test_gap_in_real_files_is_rejected_under_any_policy() -> None:
    """CT2: one slice at z = -99.5 mm, then three at 103.0, 104.3, 105.5 mm: 200 mm are missing."""
    folder = Path(get_testdata_file("dicomdirtests/77654033/CT2/17106")).parent
    blobs = [(p.name, p.read_bytes()) for p in sorted(folder.iterdir())]
    for policy in IrregularSeries:
        with pytest.raises(VolumeError, match=r"irregular slice spacing: 202\.500 mm between 17106 and 17136"):
            load(blobs, policy)


def test_localizers_of_two_orientations_are_rejected() -> None:
    folder = Path(get_testdata_file("dicomdirtests/98892001/CT2N/6293")).parent
    blobs = [(p.name, p.read_bytes()) for p in sorted(folder.iterdir())]
    with pytest.raises(VolumeError, match=r"mixed orientations: 6924 has \[1\.0, 0\.0, 0\.0, 0\.0, 0\.0, -1\.0\]"):
        load(blobs, RESAMPLE)


def test_duplicate_position_is_rejected_naming_both_objects(series) -> None:
    _, blobs = series
    for policy in IrregularSeries:
        with pytest.raises(VolumeError, match=r"duplicate slice position .* mm: slice-3 and copy-of-slice-3"):
            load([*blobs, ("copy-of-slice-3", blobs[2][1])], policy)


def test_missing_slice_is_rejected_or_interpolated(series) -> None:
    hu, blobs = series
    gapped = blobs[:10] + blobs[11:]
    with pytest.raises(VolumeError, match=r"irregular slice spacing: 5\.000 mm between slice-10 and slice-12"):
        load(gapped)
    volume = load(gapped, RESAMPLE)
    assert volume.hu.shape == hu.shape and volume.spacing_zyx_mm == pytest.approx((2.5, 2.5, 2.5))
    expected = expected_hu(hu)
    np.testing.assert_allclose(volume.hu[10], (expected[9] + expected[11]) / 2, atol=0.51)
    assert np.abs(np.delete(volume.hu, 10, axis=0) - np.delete(expected, 10, axis=0)).max() <= 1.0
    assert volume.keys[9:12] == ("slice-10", "slice-10", "slice-12")  # the missing slice maps to a neighbour
    assert len(volume.corrections) == 1 and "resampled 23 slices to 24 at 2.500 mm" in volume.corrections[0]


def test_gap_of_three_missing_slices_is_not_bridged(series) -> None:
    _, blobs = series
    with pytest.raises(VolumeError, match="wider than 3 steps, not resampled"):
        load(blobs[:10] + blobs[13:], RESAMPLE)


def tilted(hu: np.ndarray, rows_per_slice: int) -> list[tuple[str, bytes]]:
    """``hu`` scanned with gantry tilt: slice k is shifted ``rows_per_slice`` * k rows (and mm) in y."""
    blobs = []
    for k in range(hu.shape[0]):
        shifted = np.full_like(hu[k : k + 1], -1024.0)
        s = rows_per_slice * k
        shifted[0, : hu.shape[1] - s] = hu[k, s:]
        origin = (ORIGIN[0], ORIGIN[1] + s * 2.5, ORIGIN[2] + 2.5 * k)
        ds = next(series_datasets(shifted, (2.5, 2.5, 2.5), HEADER, origin_xyz_mm=origin, uid_entropy=str(k)))
        blobs.append((f"tilt-{k}", dataset_to_bytes(ds)))
    return blobs


def test_gantry_tilt_is_rejected_or_resampled_onto_an_orthogonal_grid(series) -> None:
    hu, _ = series
    blobs = tilted(hu, rows_per_slice=1)
    with pytest.raises(VolumeError, match="gantry tilt"):
        load(blobs)
    volume = load(blobs, RESAMPLE)
    assert volume.hu.shape == hu.shape
    assert volume.to_patient((5, 3, 4)) == pytest.approx((ORIGIN[0] + 10.0, ORIGIN[1] + 7.5, ORIGIN[2] + 12.5))
    # whole-pixel shifts: every voxel the scanner saw is back where it was, exactly
    expected = expected_hu(hu)
    for k in range(hu.shape[0]):
        np.testing.assert_array_equal(volume.hu[k, k:], expected[k, k:])
    assert "gantry tilt" in volume.corrections[0] and "degrees" in volume.corrections[0]


@pytest.mark.parametrize(
    ("syntax", "storage", "intercept", "slope", "max_error_hu", "mean_error_hu"),
    [
        ("explicit-vr-little-endian", "unsigned", -1024, 1.0, 0.5, 0.5),
        ("implicit-vr-little-endian", "signed", -1000, 1.0, 0.5, 0.5),
        ("explicit-vr-big-endian", "signed", -1024, 1.0, 0.5, 0.5),
        ("deflated-explicit-vr-little-endian", "unsigned", -1024, 1.0, 0.5, 0.5),
        ("rle-lossless", "unsigned", -1024, 1.0, 0.5, 0.5),
        ("jpeg-lossless", "signed", -1024, 1.0, 0.5, 0.5),
        ("jpeg-lossless-sv1", "unsigned", -1024, 1.0, 0.5, 0.5),
        ("jpeg-ls-lossless", "signed", -8192, 1.0, 0.5, 0.5),
        ("jpeg-ls-near-lossless", "signed", -1024, 1.0, 2.5, 2.0),  # NEAR = 2 stored units
        ("jpeg2000-lossless", "signed", -1000, 1.0, 0.5, 0.5),
        ("jpeg2000", "signed", -1024, 1.0, 20.0, 2.0),  # irreversible wavelet at 100 dB PSNR
        ("jpeg-baseline", "unsigned-8", -1024, 16.1, 200.0, 25.0),  # 8 bits of 16.1 HU, then lossy JPEG
    ],
)
def test_phantom_round_trip_through_dicom(
    phantom, syntax: str, storage: str, intercept: float, slope: float, max_error_hu: float, mean_error_hu: float
) -> None:
    """phantom -> DICOM -> volume reproduces the phantom, and a nodule's world position finds its voxel."""
    geometry = SeriesGeometry(origin_xyz_mm=ORIGIN, spacing_zyx_mm=(2.5, 2.5, 2.5))
    options = EncodeOptions(
        transfer_syntax=syntax, pixel_representation=storage, rescale_intercept=intercept, rescale_slope=slope
    )
    blobs = encode(phantom.hu, options=options)
    random.Random(2).shuffle(blobs)
    volume = load(blobs, processes=2)
    error = np.abs(volume.hu - np.clip(phantom.hu, -1024, None))
    assert error.max() <= max_error_hu and error.mean() <= mean_error_hu, (error.max(), error.mean())
    nodule = phantom.nodules[0]
    world = geometry.voxel_to_patient_mm(nodule.center_zyx_vox)
    assert volume.to_voxel(world) == pytest.approx(nodule.center_zyx_vox, abs=1e-6)
    k, i, j = (round(c) for c in nodule.center_zyx_vox)
    assert volume.hu[k, i, j] > -400  # the nodule is there (lung parenchyma is about -850 HU)


def test_oblique_series_maps_voxels_to_the_world() -> None:
    """A coronal-ish oblique orientation: the affine follows the cosines, the normal and the spacing."""
    c, s = np.cos(np.radians(20)), np.sin(np.radians(20))
    orientation = (1.0, 0.0, 0.0, 0.0, c, -s)  # rows along x, columns tilted 20 degrees from y towards -z
    hu = np.random.default_rng(3).normal(-500, 100, (6, 16, 16))
    volume = load(encode(hu, orientation=orientation, spacing=(1.5, 0.8, 0.6)))
    geometry = SeriesGeometry(origin_xyz_mm=ORIGIN, spacing_zyx_mm=(1.5, 0.8, 0.6), orientation=orientation)
    for voxel in [(0, 0, 0), (5, 15, 15), (2.5, 7.25, 3.0)]:
        assert volume.to_patient(voxel) == pytest.approx(geometry.voxel_to_patient_mm(voxel), abs=1e-4)
    assert volume.spacing_zyx_mm == pytest.approx((1.5, 0.8, 0.6), abs=1e-4)


def test_build_volume_from_frames_needs_positions() -> None:
    cr = decode_object("cr", Path(get_testdata_file("dicomdirtests/77654033/CR1/6154")).read_bytes())
    with pytest.raises(VolumeError, match="cr: no ImagePositionPatient"):
        build_volume([cr.frames[0], cr.frames[0]], [cr.pixels[0], cr.pixels[0]])


def test_corrupt_object_fails_the_series_naming_it(series) -> None:
    _, blobs = series
    broken = [*blobs[:5], ("bad-slice", blobs[5][1][:2000]), *blobs[6:]]
    for processes in (1, 2):
        with pytest.raises(DecodeError, match="bad-slice"):
            load(broken, processes=processes)


def test_threads_submitting_at_once_start_one_decoder_pool(phantom, monkeypatch) -> None:
    from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

    import workers.series

    started: list[int] = []

    class Counting(ProcessPoolExecutor):
        def __init__(self, *args, **kwargs) -> None:
            started.append(1)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(workers.series, "ProcessPoolExecutor", Counting)
    blobs = encode(phantom.hu[:8], options=EncodeOptions(transfer_syntax="jpeg2000-lossless"))
    pool = DecodePool(2)
    try:
        with ThreadPoolExecutor(8) as threads:
            decoded = list(threads.map(lambda kb: pool.submit(*kb).result(), blobs))
    finally:
        pool.close()
    assert len(started) == 1 and len(decoded) == 8
