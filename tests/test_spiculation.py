"""The learned spiculation model: scale-normalised patches, the shipped weights, and the worker's findings."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest

from models.candidates import Candidate
from models.classifier import window
from models.measurement import SPICULATED_SCORE, measure_nodule
from models.metrics import roc_auc
from models.registry import WeightsIntegrityError, get_entry, load_spiculation, weights_path
from models.spiculation import (
    HANDMADE_FROM_MM,
    PatchGeometry,
    SpiculationModel,
    extract_nodule_patches,
    large_nodule_spiculation,
    several_spicules_score,
)
from nightscan.settings import Settings
from synth.nodules import NoduleKind
from synth.phantom import make_phantom
from workers.context import WorkerContext
from workers.findings import describe_candidates
from workers.volume import Volume

REF = "nodule-spiculation@0.2.0"
# Far from every seed train_spiculation uses (9_000_000 .. 9_600_000 + s) and from the other tests' (10_000_000..).
FRESH_SEED = 12_000_000
WINDOW_HU = (-1000.0, 400.0)


@pytest.fixture(scope="module")
def model() -> SpiculationModel:
    return load_spiculation(REF)


def _analytic_nodule(
    shape_zyx: tuple[int, int, int], spacing_zyx_mm: tuple[float, float, float], radius_mm: float
) -> tuple[np.ndarray, tuple[float, float, float]]:
    """A smooth nodule of `radius_mm` with two spicules (lengths in radii, so the scene scales with the radius)
    in lung (-850 HU), point-sampled on a grid of `shape_zyx` voxels of `spacing_zyx_mm` mm; and its centre
    (voxels, z, y, x)."""
    spacing = np.asarray(spacing_zyx_mm)
    centre_mm = (np.asarray(shape_zyx) - 1) / 2 * spacing + np.array([0.3, -0.4, 0.2])
    z, y, x = (np.arange(n) * s - c for n, s, c in zip(shape_zyx, spacing, centre_mm, strict=True))
    zz, yy, xx = np.meshgrid(z, y, x, indexing="ij")
    points = np.stack([zz, yy, xx], axis=-1)
    edge = 0.15 * radius_mm  # soft edges, so that thick slices sample the same function
    tissue = 0.5 * (1 - np.tanh((np.linalg.norm(points, axis=-1) - radius_mm) / edge))
    for direction in (np.array([0.3, 0.9, 0.3]), np.array([-0.2, -0.4, 0.9])):
        direction = direction / np.linalg.norm(direction)
        along = np.clip(points @ direction, 0, 2.0 * radius_mm)
        distance = np.linalg.norm(points - along[..., None] * direction, axis=-1)
        tissue = np.maximum(tissue, np.exp(-0.5 * (distance / (0.12 * radius_mm)) ** 2))
    hu = (-850.0 + 880.0 * tissue).astype(np.float32)
    return hu, tuple(float(v) for v in centre_mm / spacing)


def test_patches_are_scale_normalised() -> None:
    geometry = PatchGeometry()
    fine, centre_fine = _analytic_nodule((120, 160, 160), (0.5, 0.5, 0.5), 8.0)
    thick, centre_thick = _analytic_nodule((26, 58, 58), (2.5, 1.4, 1.4), 8.0)
    large, centre_large = _analytic_nodule((100, 120, 120), (1.0, 1.0, 1.0), 16.0)
    patches = [
        window(extract_nodule_patches(hu, spacing, [(centre, 2 * radius)], geometry), WINDOW_HU)[0].numpy()
        for hu, spacing, centre, radius in (
            (fine, (0.5, 0.5, 0.5), centre_fine, 8.0),
            (thick, (2.5, 1.4, 1.4), centre_thick, 8.0),
            (large, (1.0, 1.0, 1.0), centre_large, 16.0),
        )
    ]
    assert all(p.shape == (32, 32, 32) for p in patches)
    fine_patch, thick_patch, large_patch = patches
    # The same nodule on 0.5 mm and 2.5 x 1.4 mm voxels: nearly the same patch (voxel for voxel)...
    assert np.abs(fine_patch - thick_patch).mean() < 0.006
    assert np.corrcoef(fine_patch.ravel(), thick_patch.ravel())[0, 1] > 0.99
    # ...and the same scene at twice the size fills the patch the same way.
    assert np.abs(fine_patch - large_patch).mean() < 0.002
    # Not a trivial pass: the spicule is there, and a patch moved by 4 voxels is far from it.
    assert fine_patch.max() > 0.5 and fine_patch.min() < 0.15
    assert np.abs(fine_patch - np.roll(fine_patch, 4, axis=2)).mean() > 3 * np.abs(fine_patch - thick_patch).mean()


def test_patches_outside_the_volume_are_air() -> None:
    hu = np.zeros((10, 10, 10), dtype=np.float32)
    patch = extract_nodule_patches(hu, (1.0, 1.0, 1.0), [((500.0, 5.0, 5.0), 8.0)], PatchGeometry())
    assert patch.shape == (1, 32, 32, 32) and float(patch.max()) == -1000.0
    with pytest.raises(ValueError, match="diameter_mm"):
        extract_nodule_patches(hu, (1.0, 1.0, 1.0), [((5.0, 5.0, 5.0), 0.0)], PatchGeometry())


def test_the_registered_weights_are_checked(tmp_path: Path, model: SpiculationModel) -> None:
    entry = get_entry(REF)
    assert model.sha256 == entry.sha256 and model.threshold == SPICULATED_SCORE  # the workers' 4X threshold
    assert entry.architecture["builder"] == "spiculation_cnn_3d" and entry.categories == ["smooth", "spiculated"]
    assert weights_path(entry).stat().st_size < 500_000
    registry = tmp_path / "registry.json"
    shutil.copy(Path(weights_path(entry)).parents[1] / "registry.json", registry)
    copy = tmp_path / entry.weights
    copy.parent.mkdir(parents=True)
    data = bytearray(weights_path(entry).read_bytes())
    data[-1] ^= 0xFF
    copy.write_bytes(bytes(data))
    with pytest.raises(WeightsIntegrityError, match="sha256"):
        load_spiculation(REF, registry_path=registry)


def test_the_model_separates_spiculated_from_smooth_nodules_on_held_out_phantoms(model: SpiculationModel) -> None:
    """Solid and part-solid nodules of 6 mm and more on fresh phantoms at the longitudinal evaluation's voxel size,
    measured from a voxel off their centre as a detector would give it, until there are enough of both kinds."""
    spacing = (2.5, 1.4, 1.4)
    labels, probabilities = [], []
    for i in range(16):
        phantom = make_phantom(
            np.random.default_rng([FRESH_SEED, i]), shape_zyx=(64, 200, 200), spacing_zyx_mm=spacing, n_nodules=6
        )
        measured = []
        for truth in phantom.nodules:
            if truth.kind is NoduleKind.GROUND_GLASS or truth.diameter_mm < 6.0:
                continue
            try:
                m = measure_nodule(phantom.hu, spacing, tuple(c + 1.0 for c in truth.center_zyx_vox))
            except ValueError:
                continue
            measured.append((m.center_zyx_vox, m.mean_diameter_mm))
            labels.append(truth.spiculated)
        probabilities += model.predict(phantom.hu, spacing, measured)
        if sum(labels) >= 6 and len(labels) - sum(labels) >= 10:
            break
    labels_a, p = np.array(labels), np.array(probabilities)
    assert labels_a.sum() >= 4 and (~labels_a).sum() >= 8, "too few nodules of one kind: draw more phantoms"
    assert roc_auc(labels_a, p) >= 0.85  # the hand-made score: about 0.6 to 0.9 AUC by band on such phantoms
    called = p >= model.threshold
    majority = max(labels_a.mean(), 1 - labels_a.mean())  # calling every nodule smooth scores this much
    assert (called == labels_a).mean() >= max(0.85, majority + 0.05)
    assert called[labels_a].mean() >= 0.5 and (~called[~labels_a]).mean() >= 0.85  # sensitivity, specificity


def _volume(hu: np.ndarray, spacing_zyx_mm: tuple[float, float, float]) -> Volume:
    dz, dy, dx = spacing_zyx_mm
    affine = np.zeros((4, 4))  # voxel (k, i, j) -> patient (x, y, z) = (j dx, i dy, k dz)
    affine[0, 2], affine[1, 1], affine[2, 0], affine[3, 3] = dx, dy, dz, 1.0
    n = hu.shape[0]
    return Volume(
        hu=hu.astype(np.float32),
        spacing_zyx_mm=spacing_zyx_mm,
        affine=affine,
        sop_instance_uids=tuple(f"1.2.3.{k}" for k in range(n)),
        keys=tuple(f"slice-{k}" for k in range(n)),
        frame_numbers=(None,) * n,
    )


def test_worker_findings_carry_the_model_probability(model: SpiculationModel) -> None:
    phantom = make_phantom(np.random.default_rng([7, 1]), shape_zyx=(48, 96, 96), n_nodules=1)
    volume = _volume(phantom.hu, phantom.spacing_zyx_mm)
    near = tuple(c + 0.6 for c in phantom.nodules[0].center_zyx_vox)
    on_nodule = Candidate(center_zyx_vox=near, extent_zyx_mm=(9.0, 9.0, 9.0), diameter_mm=14.0, score=0.9)
    in_air = Candidate(center_zyx_vox=(2.0, 2.0, 2.0), extent_zyx_mm=(5.0, 5.0, 5.0), diameter_mm=5.0, score=0.2)
    stages: dict[str, float] = {}
    measured, unmeasured = describe_candidates(volume, [on_nodule, in_air], spiculation=model, stages_s=stages)
    m = measure_nodule(volume.hu, volume.spacing_zyx_mm, near, approx_diameter_mm=14.0)
    expected = model.predict(volume.hu, volume.spacing_zyx_mm, [(m.center_zyx_vox, m.mean_diameter_mm)])[0]
    assert measured.spiculation == round(large_nodule_spiculation(expected, m), 3) and stages["spiculation"] >= 0
    assert unmeasured.spiculation is None and unmeasured.long_axis_mm is None
    handmade, _ = describe_candidates(volume, [on_nodule, in_air])  # no model: the hand-made score
    assert handmade.spiculation == m.spiculation


def test_large_nodules_take_the_larger_of_the_model_and_the_second_spicule() -> None:
    phantom = make_phantom(np.random.default_rng([7, 1]), shape_zyx=(48, 96, 96), n_nodules=1)
    m = measure_nodule(phantom.hu, phantom.spacing_zyx_mm, phantom.nodules[0].center_zyx_vox)
    spiculated = (4.0, 3.0, 1.0)  # mm beyond the rim: the second, 3.0 mm, scores 3.0 / 3.2
    small = dataclasses.replace(m, mean_diameter_mm=HANDMADE_FROM_MM - 0.1, spicule_lengths_mm=spiculated)
    large = dataclasses.replace(m, mean_diameter_mm=HANDMADE_FROM_MM, spicule_lengths_mm=spiculated)
    assert large_nodule_spiculation(0.13, small) == 0.13  # below 15 mm: the model alone
    assert large_nodule_spiculation(0.13, large) == 0.938  # the model misses thin spicules of large nodules
    vessel = dataclasses.replace(large, spicule_lengths_mm=(9.0,), spiculation=1.0)  # one long appendage
    assert large_nodule_spiculation(0.2, vessel) == 0.2 and large_nodule_spiculation(0.99, vessel) == 0.99


def test_the_hand_made_score_of_a_large_nodule_is_its_second_spicule() -> None:
    assert several_spicules_score(()) == 0.0 and several_spicules_score((12.0,)) == 0.0
    assert several_spicules_score((0.8, 5.0)) == 0.25  # in any order: the second-longest
    assert several_spicules_score((6.0, 1.6)) == 0.5 == SPICULATED_SCORE  # spiculated from a 1.6 mm second
    assert several_spicules_score((9.0, 7.0, 4.0)) == 1.0


def test_the_spiculation_setting_and_the_model_loaded_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("NIGHTSCAN_SPICULATION", raising=False)
    assert Settings().spiculation == REF
    for off in ("", "none", " None "):
        monkeypatch.setenv("NIGHTSCAN_SPICULATION", off)
        assert Settings().spiculation is None, off
    ctx = WorkerContext(Settings(data_dir=tmp_path))
    loaded = ctx.spiculation(REF)
    assert loaded is ctx.spiculation(REF) and loaded.sha256 == get_entry(REF).sha256


def test_the_band_table_counts_each_reading_on_the_same_nodules() -> None:
    from models.evaluate_spiculation import band_table, calls
    from models.train_spiculation import NoduleSet

    # spiculated 20 mm seen by the hand-made score only; smooth 20 mm with one appendage (a vessel); 7 mm; ground glass
    n = 5
    data = NoduleSet(
        patches=np.zeros((n, 1, 1, 1), dtype=np.int16),
        spiculated=np.array([True, False, True, False, False]),
        kind=np.array([0, 0, 0, 2, 0]),
        diameter_mm=np.array([20.0, 20.0, 7.0, 20.0, 9.0]),
        measured_mm=np.array([19.5, 20.3, 7.2, 21.0, np.nan]),
        handmade=np.array([0.9, 0.8, 1.0, 1.0, np.nan]),
        phantom=np.zeros(n, dtype=np.int64),
        spacing_mm=np.ones((n, 3)),
        spicules_mm=np.array([[3.0, 2.9, 0.0], [2.6, 0.5, 0.0], [3.2, 3.2, 0.0], [3.2, 3.2, 3.2], [np.nan] * 3]),
    )
    called = calls(data, np.array([0.1, 0.2, 0.3, 0.0, 0.9]))
    assert called["workers"].tolist() == [True, False, False, True, True]  # the 7 mm nodule: the model alone
    assert called["handmade"].tolist() == [True, True, True, True, False]  # the longest spicule takes the vessel
    assert called["second_spicule"].tolist() == [True, False, True, True, False]
    rows = {(tuple(r["band_mm"]), r["reading"]): r for r in band_table(data, called)}
    large = rows[((15.0, 31.0), "workers")]
    counts = ("spiculated_found", "spiculated", "smooth_called_spiculated", "smooth")
    assert [large[k] for k in counts] == [1, 1, 0, 1]  # ground glass and unmeasured nodules are not counted
    assert rows[((15.0, 31.0), "handmade")]["smooth_called_spiculated"] == 1
    assert rows[((6.0, 8.0), "model")]["errors"] == 1 and rows[((6.0, 8.0), "handmade")]["errors"] == 0
