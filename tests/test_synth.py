"""Synthetic phantoms, their DICOM encoding and the archive's ground truth."""

from __future__ import annotations

import io
from collections import defaultdict

import numpy as np
import pydicom
import pytest
from pydicom.pixels import apply_modality_lut

from synth.archive import GroundTruth, generate_archive, read_ground_truth, write_ground_truth
from synth.dicom import CT_IMAGE_STORAGE, SeriesHeader, series_files
from synth.phantom import MAX_NODULE_DIAMETER_MM, MIN_NODULE_DIAMETER_MM, make_phantom

SHAPE = (16, 96, 96)
SPACING = (2.5, 3.2, 3.4)


def _volume_from_files(files: dict[str, bytes]) -> tuple[np.ndarray, list[pydicom.Dataset]]:
    """Decode a series into HU (z, y, x), sorted by position along the slice normal (not InstanceNumber)."""
    datasets = [pydicom.dcmread(io.BytesIO(data)) for data in files.values()]
    normal = np.cross(*np.reshape(np.asarray(datasets[0].ImageOrientationPatient, float), (2, 3)))
    datasets.sort(key=lambda ds: float(normal @ np.asarray(ds.ImagePositionPatient, float)))
    hu = np.stack([apply_modality_lut(ds.pixel_array, ds) for ds in datasets]).astype(np.float32)
    return hu, datasets


def test_phantom_is_deterministic_for_a_seed() -> None:
    a = make_phantom(np.random.default_rng(7), shape_zyx=SHAPE, spacing_zyx_mm=SPACING)
    b = make_phantom(np.random.default_rng(7), shape_zyx=SHAPE, spacing_zyx_mm=SPACING)
    c = make_phantom(np.random.default_rng(8), shape_zyx=SHAPE, spacing_zyx_mm=SPACING)
    assert np.array_equal(a.hu, b.hu)
    assert a.nodules == b.nodules
    assert not np.array_equal(a.hu, c.hu)


def test_phantom_anatomy_and_nodules() -> None:
    phantom = make_phantom(np.random.default_rng(3), n_nodules=4)
    hu = phantom.hu
    assert hu.dtype == np.float32
    assert hu.shape == (48, 128, 128)
    assert abs(float(np.median(hu[:, :4, :4])) + 1000) < 30  # air in the corner
    assert float(hu.max()) > 400  # spine
    lung_fraction = float(np.mean((hu > -950) & (hu < -750)))
    assert 0.1 < lung_fraction < 0.5
    assert 1 <= len(phantom.nodules) <= 4
    for nodule in phantom.nodules:
        assert MIN_NODULE_DIAMETER_MM <= nodule.diameter_mm <= MAX_NODULE_DIAMETER_MM
        k, i, j = np.rint(nodule.center_zyx_vox).astype(int)
        # Nodule-like density at the centre: the whole 3x3 in-plane patch for larger nodules.
        assert float(hu[k - 1 : k + 2, i - 1 : i + 2, j - 1 : j + 2].max()) > -300
        if nodule.diameter_mm >= 8:
            assert float(np.mean(hu[k, i - 1 : i + 2, j - 1 : j + 2])) > -300


def test_phantom_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="n_nodules"):
        make_phantom(np.random.default_rng(0), n_nodules=9)
    with pytest.raises(ValueError, match=r"\(2.5, -1.0, 2.5\)"):
        make_phantom(np.random.default_rng(0), spacing_zyx_mm=(2.5, -1.0, 2.5))


def test_series_round_trip_reproduces_hu_and_geometry() -> None:
    phantom = make_phantom(np.random.default_rng(1), shape_zyx=SHAPE, spacing_zyx_mm=SPACING)
    header = SeriesHeader(
        patient_id="NS9999",
        patient_name="DOE^JANE",
        patient_birth_date="19600101",
        patient_sex="F",
        study_uid="1.2.3.4",
        series_uid="1.2.3.4.5",
        frame_of_reference_uid="1.2.3.4.6",
        study_date="20240101",
        study_time="101010",
        accession_number="A1",
    )
    origin = (-163.2, -150.0, -301.25)
    files = {
        f"{n:04d}.dcm": data
        for n, data in series_files(phantom.hu, SPACING, header, origin_xyz_mm=origin, descending_instance_numbers=True)
    }
    assert sorted(files) == [f"{n:04d}.dcm" for n in range(1, SHAPE[0] + 1)]
    hu, datasets = _volume_from_files(files)
    assert np.max(np.abs(hu - phantom.hu)) <= 0.5 + 1e-3
    first = datasets[0]
    assert first.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert first.SOPClassUID == CT_IMAGE_STORAGE
    assert first.Modality == "CT"
    assert list(first.ImageType) == ["ORIGINAL", "PRIMARY", "AXIAL"]
    assert (first.Rows, first.Columns) == SHAPE[1:]
    assert [float(v) for v in first.PixelSpacing] == [SPACING[1], SPACING[2]]
    assert (first.RescaleIntercept, first.RescaleSlope, first.PixelRepresentation) == (-1024, 1, 1)
    assert first.InstanceNumber == SHAPE[0]  # head-first numbering: the lowest slice has the highest number
    for k, ds in enumerate(datasets):
        assert [float(v) for v in ds.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
        assert np.allclose(
            [float(v) for v in ds.ImagePositionPatient], [origin[0], origin[1], origin[2] + k * SPACING[0]]
        )


@pytest.fixture(scope="module")
def archive() -> tuple[dict[str, bytes], GroundTruth]:
    store: dict[str, bytes] = {}
    truth = generate_archive(
        store.__setitem__,
        n_patients=2,
        seed=11,
        studies_per_patient=2,
        shape_zyx=SHAPE,
        spacing_zyx_mm=SPACING,
    )
    return store, truth


def test_archive_is_deterministic(archive: tuple[dict[str, bytes], GroundTruth]) -> None:
    store, truth = archive
    again: dict[str, bytes] = {}
    truth_again = generate_archive(
        again.__setitem__,
        n_patients=2,
        seed=11,
        studies_per_patient=2,
        shape_zyx=SHAPE,
        spacing_zyx_mm=SPACING,
    )
    assert truth_again == truth
    assert again == store


def test_archive_keys_and_headers(archive: tuple[dict[str, bytes], GroundTruth]) -> None:
    store, truth = archive
    assert len(store) == 2 * 2 * SHAPE[0]
    assert [s.patient_id for s in truth.studies] == ["NS0001", "NS0001", "NS0002", "NS0002"]
    assert len({s.study_uid for s in truth.studies}) == 4
    for key, data in list(store.items())[:: SHAPE[0]]:
        patient_id, study_uid, series_uid, name = key.split("/")
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
        assert (ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID) == (
            patient_id,
            study_uid,
            series_uid,
        )
        assert name == f"{ds.InstanceNumber:04d}.dcm"
        assert ds.PatientName and len(ds.PatientBirthDate) == 8 and ds.PatientSex in ("M", "F")
    first, follow_up = truth.studies[0], truth.studies[1]
    assert follow_up.study_date > first.study_date
    assert [n.center_xyz_mm for n in follow_up.nodules] == [n.center_xyz_mm for n in first.nodules]


def test_ground_truth_matches_dicom_geometry(archive: tuple[dict[str, bytes], GroundTruth]) -> None:
    store, truth = archive
    series: dict[str, dict[str, bytes]] = defaultdict(dict)
    for key, data in store.items():
        series[key.rsplit("/", 1)[0]][key] = data
    checked = 0
    for study in truth.studies:
        hu, datasets = _volume_from_files(series[f"{study.patient_id}/{study.study_uid}/{study.series_uid}"])
        assert hu.shape == study.shape_zyx
        ipp0 = np.asarray(datasets[0].ImagePositionPatient, float)
        dy, dx = (float(v) for v in datasets[0].PixelSpacing)
        dz = float(datasets[1].ImagePositionPatient[2]) - ipp0[2]
        for nodule in study.nodules:
            k, i, j = nodule.center_zyx_vox
            expected = ipp0 + np.array([j * dx, i * dy, k * dz])
            assert np.allclose(nodule.center_xyz_mm, expected, atol=1e-2)
            ki, ii, ji = np.rint(nodule.center_zyx_vox).astype(int)
            assert float(hu[ki - 1 : ki + 2, ii - 1 : ii + 2, ji - 1 : ji + 2].max()) > -300
            checked += 1
    assert checked > 0


def test_ground_truth_json_round_trip(archive: tuple[dict[str, bytes], GroundTruth], tmp_path) -> None:
    _, truth = archive
    assert GroundTruth.from_json(truth.to_json()) == truth
    path = write_ground_truth(truth, tmp_path / "truth" / "gt.json")
    assert read_ground_truth(path) == truth
    assert truth.study(truth.studies[2].study_uid) == truth.studies[2]
