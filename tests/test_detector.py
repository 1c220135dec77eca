"""The shipped provisional nodule detector: registry integrity, preprocessing, merging and real detection."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from models.candidates import Candidate, SliceDetections, merge_slice_detections
from models.evaluation import operating_point, score_scan
from models.preprocessing import GridMap, Preprocessing, grid_to_input_vox, input_to_grid_vox
from models.registry import (
    REGISTRY_PATH,
    WeightsIntegrityError,
    file_sha256,
    get_entry,
    list_entries,
    load_detector,
    weights_path,
)
from nightscan.settings import Settings
from synth.phantom import make_phantom

REF = "nodule-detector@0.3.0"  # the workers' default detector
# Far from every seed train_detector uses (training [s, i], validation 1_000_000 + s, test 2_000_000 + s).
FRESH_SEED = 10_000_000


@pytest.fixture(scope="module")
def detector():
    return load_detector(REF)


def test_shipped_weights_match_the_registry() -> None:
    entry = get_entry(REF)
    assert not entry.provisional and get_entry("nodule-detector@0.1.0").provisional
    assert Settings().detector == REF
    assert entry.ref in [e.ref for e in list_entries()]
    path = weights_path(entry)
    assert path == REGISTRY_PATH.parent / "weights" / "nodule-detector-0.3.0.pt"
    assert file_sha256(path) == entry.sha256
    assert path.stat().st_size < 5 * 1024 * 1024
    assert 0.0 < entry.score_threshold < 1.0
    assert get_entry("nodule-detector").version == entry.version


def test_tampered_hash_is_refused(tmp_path: Path) -> None:
    registry = json.loads(REGISTRY_PATH.read_text())
    entry = next(m for m in registry["models"] if f"{m['name']}@{m['version']}" == REF)
    real_hash = entry["sha256"]
    entry["sha256"] = "0" * 64
    (tmp_path / "registry.json").write_text(json.dumps(registry))
    target = tmp_path / entry["weights"]
    target.parent.mkdir(parents=True)
    shutil.copy(REGISTRY_PATH.parent / entry["weights"], target)
    with pytest.raises(WeightsIntegrityError) as raised:
        load_detector(REF, registry_path=tmp_path / "registry.json")
    message = str(raised.value)
    assert "0" * 64 in message and real_hash in message and str(target) in message


def test_unknown_model_is_a_clear_error() -> None:
    with pytest.raises(KeyError, match=r"nodule-detector@9\.9\.9"):
        get_entry("nodule-detector@9.9.9")


def test_preprocessing_crops_to_the_body_and_pads_and_maps_back() -> None:
    prep = Preprocessing(
        spacing_zyx_mm=(2.0, 2.0, 2.0), window_hu=(-1000.0, 400.0), version="t", crop_body=True, pad_multiple=16
    )
    assert Preprocessing.from_dict(prep.to_dict()) == prep
    hu = np.full((10, 200, 200), -1000.0, dtype=np.float32)  # 1 mm in-plane: 100 x 100 on the grid
    hu[:, 60:140, 50:170] = 0.0  # the body: 80 x 120 mm
    hu[4:6, 99:101, 119:121] = 400.0  # a bright 2 x 2 x 2 mm point at voxel (4.5, 99.5, 119.5)
    volume, grid = prep.to_model_grid(hu, (2.0, 1.0, 1.0))
    assert tuple(volume.shape) == (10, 64, 80)  # 40 + 2 x 5 margin = 50 -> 64; 60 + 10 = 70 -> 80
    peak = np.unravel_index(int(volume.argmax()), tuple(volume.shape))
    assert np.allclose(grid.to_input(tuple(float(c) for c in peak)), (4.5, 99.5, 119.5), atol=1.0)
    assert grid.to_grid((4.5, 99.5, 119.5)) == pytest.approx(peak, abs=0.5)
    assert float(volume[0, 0, 0]) == 0.0  # padding and air outside the window's low end are 0


def test_preprocessing_resamples_and_windows() -> None:
    prep = Preprocessing(spacing_zyx_mm=(2.5, 2.5, 2.5), window_hu=(-1000.0, 400.0), version="t")
    assert Preprocessing.from_dict(prep.to_dict()) == prep
    hu = np.full((20, 64, 80), -1000.0, dtype=np.float32)
    hu[10, 32, 40] = 400.0
    volume, grid = prep.to_model_grid(hu, (1.25, 0.8, 0.8))
    assert volume.dtype == torch.float32 and tuple(volume.shape) == (10, 20, 26)
    assert float(volume.min()) >= 0.0 and float(volume.max()) <= 1.0
    point = (10.0, 32.0, 40.0)
    assert np.allclose(grid_to_input_vox(input_to_grid_vox(point, grid.scale_zyx), grid.scale_zyx), point)
    assert np.allclose(grid.to_input(grid.to_grid(point)), point)
    with pytest.raises(ValueError, match=r"\(4, 4\)"):
        prep.to_model_grid(np.zeros((4, 4)), (1.0, 1.0, 1.0))


def test_merge_links_overlapping_boxes_on_adjacent_slices() -> None:
    box = torch.tensor([[10.0, 20.0, 18.0, 28.0]])
    detections = [
        SliceDetections(3, box, torch.tensor([0.5])),
        SliceDetections(4, box + 1, torch.tensor([0.9])),
        SliceDetections(5, box, torch.tensor([0.5])),
        SliceDetections(5, torch.tensor([[60.0, 60.0, 64.0, 64.0]]), torch.tensor([0.3])),
    ]
    merged = merge_slice_detections(detections, grid_spacing_zyx_mm=(2.5, 2.5, 2.5), grid=GridMap((1.0, 1.0, 1.0)))
    assert [round(c.score, 3) for c in merged] == [0.9, 0.3]
    first = merged[0]
    assert first.center_zyx_vox[0] == pytest.approx(4.0)
    assert first.extent_zyx_mm == pytest.approx((7.5, 20.0, 20.0))
    assert first.diameter_mm == pytest.approx(20.0)


def test_hit_test_uses_the_nodule_radius() -> None:
    nodules = [((10.0, 50.0, 50.0), 10.0), ((30.0, 80.0, 80.0), 4.0)]
    candidates = [
        Candidate((10.0, 51.5, 50.0), (10, 10, 10), 10.0, 0.9),  # 3.75 mm away: hit
        Candidate((10.0, 53.0, 50.0), (10, 10, 10), 10.0, 0.8),  # 7.5 mm away: false positive
        Candidate((30.0, 80.0, 80.0), (4, 4, 4), 4.0, 0.7),  # hits a nodule below the size of interest: ignored
    ]
    scan = score_scan(candidates, nodules, (2.5, 2.5, 2.5), min_diameter_mm=6.0)
    assert scan.nodule_scores == [0.9]
    assert scan.false_positive_scores == [0.8]
    assert operating_point([scan], 0.85) == (1.0, 0.0)


def test_detector_finds_nodules_on_fresh_phantoms(detector) -> None:
    assert (detector.name, detector.version) == ("nodule-detector", "0.3.0")
    assert detector.sha256 == get_entry(REF).sha256 and detector.preprocessing_version
    found, total, false_positives = 0, 0, 0
    n_scans = 6
    for i in range(n_scans):
        rng = np.random.default_rng([FRESH_SEED, i])  # a chest CT's voxel size: 120 x 358 x 358 mm
        phantom = make_phantom(rng, shape_zyx=(48, 256, 256), spacing_zyx_mm=(2.5, 1.4, 1.4), n_nodules=3)
        candidates = detector.detect(phantom.hu, phantom.spacing_zyx_mm)
        assert all(detector.score_threshold <= c.score <= 1.0 and c.diameter_mm > 0 for c in candidates)
        truth = [(n.center_zyx_vox, n.diameter_mm) for n in phantom.nodules]
        scan = score_scan(candidates, truth, phantom.spacing_zyx_mm, min_diameter_mm=8.0)
        found += sum(s >= detector.score_threshold for s in scan.nodule_scores)
        total += len(scan.nodule_scores)
        false_positives += len(scan.false_positive_scores)
    assert total >= 8
    assert found / total >= 0.7, f"recall {found}/{total} for nodules >= 8 mm"
    assert false_positives / n_scans <= 3.0, f"{false_positives} false positives on {n_scans} scans"


def test_detection_maps_back_through_resampling(detector) -> None:
    """A finer input grid is resampled; candidate centres come back in the input's voxel coordinates."""
    phantom = make_phantom(
        np.random.default_rng([FRESH_SEED, 99]),
        shape_zyx=(60, 160, 160),
        spacing_zyx_mm=(2.0, 2.0, 2.0),
        n_nodules=2,
    )
    candidates = detector.detect(phantom.hu, phantom.spacing_zyx_mm)
    spacing = np.array(phantom.spacing_zyx_mm)
    large = [n for n in phantom.nodules if n.diameter_mm >= 8.0]
    assert large, "the chosen seed must hold a nodule >= 8 mm"
    for nodule in large:
        distances = [np.linalg.norm((np.array(c.center_zyx_vox) - nodule.center_zyx_vox) * spacing) for c in candidates]
        assert distances and min(distances) <= nodule.diameter_mm / 2


def test_merge_keeps_one_candidate_per_place() -> None:
    # Two chains at one place whose boxes overlap too little to link: the weaker is a duplicate, not a nodule.
    big, small = torch.tensor([[10.0, 10.0, 22.0, 22.0]]), torch.tensor([[14.0, 14.0, 18.0, 18.0]])
    detections = [
        SliceDetections(3, big, torch.tensor([0.9])),
        SliceDetections(4, big, torch.tensor([0.8])),
        SliceDetections(4, small, torch.tensor([0.6])),
        SliceDetections(5, small, torch.tensor([0.6])),
    ]
    merged = merge_slice_detections(detections, grid_spacing_zyx_mm=(2.5, 2.5, 2.5), grid=GridMap((1.0, 1.0, 1.0)))
    assert [round(c.score, 2) for c in merged] == [0.9]
