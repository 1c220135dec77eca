"""The synthetic archive: deterministic, patients over time, pixels that match the manifest, messy input."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.pixels import apply_modality_lut
from scipy import ndimage

from nightscan.runtime import session_factory
from nightscan.settings import Settings
from nightscan.storage import open_storage
from scheduler.scan import scan
from screening import LungRads
from synth.archive import ArchiveOptions, GroundTruth, generate_archive, read_ground_truth, write_ground_truth
from synth.layout import KeyLayout
from synth.messy import Mess
from synth.phantom import make_phantom
from tests.conftest import ROOT

OPTIONS = ArchiveOptions(shape_zyx=(64, 144, 144), spacing_zyx_mm=(4.0, 2.4, 2.4), studies_per_patient=(2, 3))


@pytest.fixture(scope="module")
def archive() -> tuple[dict[str, bytes], GroundTruth]:
    store: dict[str, bytes] = {}
    # Seed 42 holds solid, part-solid and ground-glass nodules of 9 mm and more, and growing ones.
    truth = generate_archive(store.__setitem__, n_patients=6, seed=42, options=OPTIONS)
    return store, truth


def _series_hu(store: dict[str, bytes], study) -> tuple[np.ndarray, list[pydicom.Dataset]]:
    """HU (z, y, x) of a study's CT series, sorted along the slice normal."""
    datasets = [pydicom.dcmread(io.BytesIO(store[o.key])) for o in study.objects if o.role == "image"]
    normal = np.cross(*np.reshape(np.asarray(datasets[0].ImageOrientationPatient, float), (2, 3)))
    datasets.sort(key=lambda ds: float(normal @ np.asarray(ds.ImagePositionPatient, float)))
    return np.stack([apply_modality_lut(ds.pixel_array, ds) for ds in datasets]).astype(np.float32), datasets


def test_same_seed_same_bytes_and_truth(archive) -> None:
    store, truth = archive
    again: dict[str, bytes] = {}
    first_two = generate_archive(again.__setitem__, n_patients=2, seed=42, options=OPTIONS)  # patients are independent
    assert first_two.studies == [s for s in truth.studies if s.patient_id in ("NS0001", "NS0002")]
    assert again == {o.key: store[o.key] for s in first_two.studies for o in s.objects}
    other: dict[str, bytes] = {}
    generate_archive(other.__setitem__, n_patients=1, seed=43, options=OPTIONS)
    assert not set(other.values()) & set(store.values())


def test_patients_are_followed_over_time(archive) -> None:
    _, truth = archive
    by_patient: dict[str, list] = {}
    for study in truth.studies:
        by_patient.setdefault(study.patient_id, []).append(study)
    assert len(by_patient) == 6
    for studies in by_patient.values():
        assert 2 <= len(studies) <= 3
        dates = [s.study_date for s in studies]
        assert dates == sorted(dates) and len(set(dates)) == len(dates)
        assert len({tuple(s.origin_xyz_mm) for s in studies} | {str(s.pose) for s in studies}) > 1
    growing = [t for t in truth.tracks if t.behaviour == "growing" and len(t.study_uids) >= 2]
    assert growing, "this seed should hold a growing nodule"
    for track in growing:
        first, last = (truth.study(uid) for uid in (track.study_uids[0], track.study_uids[-1]))
        v1, v2 = (next(n.volume_mm3 for n in s.nodules if n.nodule_id == track.track_id) for s in (first, last))
        days = (_date(last.study_date) - _date(first.study_date)).days
        assert v2 / v1 == pytest.approx(2 ** (days / track.vdt_days), rel=0.15)
    for track in truth.tracks:
        for uid in track.study_uids:
            assert any(n.nodule_id == track.track_id for n in truth.study(uid).nodules)


def _date(text: str):
    import datetime as dt

    return dt.date(int(text[:4]), int(text[4:6]), int(text[6:]))


def test_written_pixels_have_the_requested_densities(archive) -> None:
    store, truth = archive
    study = next(s for s in truth.studies if s.nodules)
    hu, _ = _series_hu(store, study)
    counts, edges = np.histogram(hu, bins=np.arange(-1024, 1100, 10))
    centres = (edges[:-1] + edges[1:]) / 2
    lung_peak = centres[np.argmax(np.where((centres > -950) & (centres < -700), counts, 0))]
    tissue_peak = centres[np.argmax(np.where((centres > -200) & (centres < 200), counts, 0))]
    assert -880 <= lung_peak <= -820
    assert 0 <= tissue_peak <= 70
    checked = set()
    for s in truth.studies:
        volume, _ = _series_hu(store, s)
        for n in s.nodules:
            if n.diameter_mm < 9 or n.juxtapleural:
                continue
            k, i, j = (round(c) for c in n.center_zyx_vox)
            patch = volume[k, i - 1 : i + 2, j - 1 : j + 2]
            if n.kind == "part_solid":  # a solid core inside ground glass
                assert patch.max() > -200 and patch.min() < -300, patch
            else:
                expected = {"solid": (-60, 90), "ground_glass": (-700, -480)}[n.kind]
                assert expected[0] <= patch.mean() <= expected[1], (n.kind, patch.mean())
            checked.add(n.kind)
    assert checked == {"solid", "part_solid", "ground_glass"}


def test_manifest_agrees_with_the_pixels(archive) -> None:
    store, truth = archive
    checked = 0
    for study in truth.studies:
        volume, datasets = _series_hu(store, study)
        ipp0 = np.asarray(datasets[0].ImagePositionPatient, float)
        dz = float(datasets[1].ImagePositionPatient[2]) - ipp0[2]
        dy, dx = (float(v) for v in datasets[0].PixelSpacing)
        for n in study.nodules:
            k, i, j = n.center_zyx_vox
            assert np.allclose(n.center_xyz_mm, ipp0 + np.array([j * dx, i * dy, k * dz]), atol=0.02)
            if n.diameter_mm < 10 or n.juxtapleural:
                continue
            threshold = -400.0 if n.kind == "solid" else -725.0  # halfway to the lung (-850 HU)
            measured = _blob_diameter_mm(volume[round(k)], (i, j), dx, threshold)
            assert measured == pytest.approx(n.diameter_mm, rel=0.3), (n, measured)
            checked += 1
    assert checked >= 3


def _blob_diameter_mm(image: np.ndarray, centre: tuple[float, float], pixel_mm: float, threshold_hu: float) -> float:
    """Twice the median distance (mm) from ``centre`` to the blob's edge along 16 rays of an axial slice.

    The median ignores the few rays that run into a vessel touching the nodule.
    """
    radii = []
    for angle in np.linspace(0, 2 * np.pi, 16, endpoint=False):
        step = np.array([np.sin(angle), np.cos(angle)]) * 0.25
        point = np.array(centre, dtype=float)
        while 0 <= point[0] < image.shape[0] - 1 and 0 <= point[1] < image.shape[1] - 1:
            if ndimage.map_coordinates(image, point[:, None], order=1)[0] < threshold_hu:
                break
            point += step
        radii.append(np.linalg.norm(point - centre) * pixel_mm)
    return 2 * float(np.median(radii))


def test_exam_category_is_the_most_suspicious_nodule(archive) -> None:
    _, truth = archive
    categories = {s.lung_rads for s in truth.studies}
    assert len(categories) >= 2
    for study in truth.studies:
        nodule_categories = [LungRads(n.lung_rads) for n in study.nodules]
        assert LungRads(study.lung_rads) == max(nodule_categories, default=LungRads("1"))
        for n in study.nodules:
            assert 0 < n.brock_probability < 1 and n.lobe in ("RUL", "RML", "RLL", "LUL", "LLL")
            assert n.diameter_mm == pytest.approx((n.long_axis_mm + n.short_axis_mm) / 2, abs=0.06)


def test_ground_truth_json_round_trip(archive, tmp_path: Path) -> None:
    _, truth = archive
    assert GroundTruth.from_json(truth.to_json()) == truth
    assert read_ground_truth(write_ground_truth(truth, tmp_path / "gt.json")) == truth


def test_messy_archive_is_fully_accounted_for_by_the_scanner(tmp_path: Path, sqlite_url: str) -> None:
    settings = Settings(data_dir=tmp_path, database_url=sqlite_url, series_quiet_s=0)
    storage = open_storage(settings.resolved_archive_url)
    options = ArchiveOptions(
        shape_zyx=(24, 64, 64), spacing_zyx_mm=(2.5, 5.0, 5.0), layout=KeyLayout.MIXED, mess=Mess.everything()
    )
    truth = generate_archive(storage.put, n_patients=3, seed=5, options=options)
    report = scan(settings.resolved_archive_url, settings, session_factory(settings), send=None)
    roles = [o.role for s in truth.studies for o in s.objects]
    assert report.listed == len(roles)
    assert report.status == {
        "indexed": roles.count("image") + roles.count("localizer"),
        "duplicate": roles.count("duplicate"),
        "rejected": roles.count("structured_report") + roles.count("truncated"),
    }
    assert report.planned == len(truth.studies)  # one CT series chosen per study, never the localizer


def test_phantom_is_deterministic_and_its_nodules_are_inside() -> None:
    a = make_phantom(np.random.default_rng(7), n_nodules=3)
    b = make_phantom(np.random.default_rng(7), n_nodules=3)
    assert np.array_equal(a.hu, b.hu) and a.nodules == b.nodules
    assert len(a.nodules) == 3
    for n in a.nodules:
        assert all(0 <= c < s for c, s in zip(n.center_zyx_vox, a.hu.shape, strict=True))
    with pytest.raises(ValueError, match="n_nodules"):
        make_phantom(np.random.default_rng(0), n_nodules=9)


def test_phantom_nodule_sizes_stay_within_the_asked_range() -> None:
    """Nodules are drawn between min_nodule_mm and max_nodule_mm (measured mean diameter, within a few %)."""
    sizes = [
        n.diameter_mm
        for i in range(6)
        for n in make_phantom(
            np.random.default_rng([7, i]), n_nodules=3, min_nodule_mm=24.0, max_nodule_mm=30.0
        ).nodules
    ]
    assert sizes and min(sizes) >= 0.9 * 24.0 and max(sizes) <= 1.1 * 30.0
    with pytest.raises(ValueError, match="max_nodule_mm"):
        make_phantom(np.random.default_rng(0), max_nodule_mm=31.0)
    with pytest.raises(ValueError, match="min_nodule_mm"):
        make_phantom(np.random.default_rng(0), min_nodule_mm=12.0, max_nodule_mm=10.0)


def test_cli_writes_archive_truth_and_preview(tmp_path: Path) -> None:
    out = tmp_path / "archive"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "nightscan.cli",
            "synth",
            out.as_uri(),
            "--patients",
            "2",
            "--studies",
            "1-2",
            "--shape",
            "40x96x96",
            "--spacing",
            "6x3.4x3.4",
            "--mess",
            "all",
            "--layout",
            "flat",
            "--truth",
            str(tmp_path / "truth.json"),
            "--preview",
            str(tmp_path / "preview.png"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    truth = read_ground_truth(tmp_path / "truth.json")
    keys = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert keys == {o.key for s in truth.studies for o in s.objects}
    assert not any(s.patient_id in key for s in truth.studies for key in keys)  # flat keys carry no PatientID
    with Image.open(tmp_path / "preview.png") as image:
        assert image.width > 300 and image.height > 200
