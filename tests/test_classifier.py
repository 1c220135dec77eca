"""The candidate classifier: patch extraction, training, registry integrity and the shipped weights."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from models.classifier import (
    CLASSIFIER_CATEGORIES,
    Classification,
    build_candidate_classifier,
    extract_patches,
    study_score,
)
from models.registry import (
    REGISTRY_PATH,
    WeightsIntegrityError,
    file_sha256,
    get_entry,
    load_classifier,
    weights_path,
)
from models.train_classifier import (
    ARCHIVE_SHAPE_ZYX,
    ARCHIVE_SPACING_ZYX_MM,
    SOURCES,
    TYPE_ACCURACY_TARGET,
    PatchPlan,
    PatchSet,
    PhantomRecipe,
    augment,
    batch_indices,
    binary_metrics,
    build_patches,
    center_view,
    choose_threshold,
    classification_loss,
    confusion_matrix,
    initial_classifier,
    label_candidates,
    mistake_weights,
    roc_auc,
    train_classifier,
    training_phantom,
)
from screening.types import NoduleType
from synth.nodules import NoduleKind
from synth.phantom import make_phantom

REF = "nodule-classifier@0.1.0"
# Far from every seed train_classifier uses (5_000_000 .. 8_000_000 + s) and from the detector's tests.
FRESH_SEED = 10_000_100


@pytest.fixture(scope="module")
def classifier():
    return load_classifier(REF)


def test_patch_centre_falls_on_the_given_voxel() -> None:
    hu = np.full((20, 30, 40), -800.0, dtype=np.float32)
    hu[10, 12, 7] = 1000.0
    # Anisotropic input (2 mm slices), odd patch: voxel 4 of 9 samples the centre itself.
    patch = extract_patches(hu, (2.0, 1.0, 1.0), [(10, 12, 7)], patch_size=9, patch_spacing_zyx_mm=(1.25, 1.25, 1.25))
    assert patch.shape == (1, 9, 9, 9)
    assert np.unravel_index(int(patch[0].argmax()), (9, 9, 9)) == (4, 4, 4)
    assert float(patch[0, 4, 4, 4]) == pytest.approx(1000.0)
    # Even patch at the input's own voxel size: the point is shared by the 2 x 2 x 2 voxels around the middle.
    even = extract_patches(hu, (1.0, 1.0, 1.0), [(10, 12, 7)], patch_size=8, patch_spacing_zyx_mm=(1.0, 1.0, 1.0))[0]
    middle = even[3:5, 3:5, 3:5]
    assert torch.allclose(middle, middle.flatten()[0].expand_as(middle))
    assert float(middle.max()) == pytest.approx(float(even.max()))
    assert float(middle[0, 0, 0]) == pytest.approx(-800.0 + 1800.0 / 8, abs=1e-3)


def test_patch_is_air_outside_the_volume() -> None:
    hu = np.full((10, 10, 10), -800.0, dtype=np.float32)
    patch = extract_patches(hu, (1.0, 1.0, 1.0), [(0, 0, 9)], patch_size=8, patch_spacing_zyx_mm=(1.0, 1.0, 1.0))[0]
    assert float(patch[0, 0, 7]) == pytest.approx(-1000.0)  # z = -3.5: far outside
    assert float(patch[7, 7, 0]) == pytest.approx(-800.0)  # (3.5, 3.5, 5.5): inside
    assert extract_patches(hu, (1.0, 1.0, 1.0), [], patch_size=8, patch_spacing_zyx_mm=(1.0,) * 3).shape == (0, 8, 8, 8)
    with pytest.raises(ValueError, match="spacing_zyx_mm"):
        extract_patches(hu, (1.0, 0.0, 1.0), [(0, 0, 0)], patch_size=8, patch_spacing_zyx_mm=(1.0,) * 3)


def _toy_patches(gen: torch.Generator, size: int = 14) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Lung (-850 HU) cubes: solid, ground-glass and part-solid balls at the centre, or a vessel-like tube."""
    grid = torch.stack(torch.meshgrid(*[torch.arange(size, dtype=torch.float32) - (size - 1) / 2] * 3, indexing="ij"))
    radius = grid.norm(dim=0)
    tube = grid[1:].norm(dim=0)  # along z through the middle
    patches, is_nodule, kind = [], [], []
    for i in range(12):
        patch = torch.full((size, size, size), -850.0) + torch.randn(size, size, size, generator=gen) * 20
        label = i % 4
        if label == 0:
            patch[radius < 3] = 20.0
        elif label == 1:
            patch[radius < 3] = -600.0
        elif label == 2:
            patch[radius < 3.5] = -600.0
            patch[radius < 1.5] = 20.0
        else:
            patch[tube < 1.2] = 30.0
        patches.append(patch)
        is_nodule.append(label < 3)
        kind.append(label if label < 3 else -1)
    return torch.stack(patches), torch.tensor(is_nodule), torch.tensor(kind)


def test_a_short_training_run_lowers_the_loss() -> None:
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    patches, is_nodule, kind = _toy_patches(gen)
    model = build_candidate_classifier(patch_size=12, width=4, dropout=0.0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)

    def eval_loss() -> float:  # with batch statistics: a few steps are too few for BatchNorm's running ones
        with torch.no_grad():
            return float(classification_loss(*model(center_view(patches, 12)), is_nodule, kind))

    before = eval_loss()
    model.train()
    for _ in range(15):
        loss = classification_loss(*model(augment(patches, gen, size=12)), is_nodule, kind)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = eval_loss()
    assert after < 0.6 * before, (before, after)


def test_augmentation_keeps_shape_and_range() -> None:
    gen = torch.Generator().manual_seed(1)
    patches, _, _ = _toy_patches(gen)
    views = augment(patches[:4], gen, size=12)
    assert views.shape == (4, 1, 12, 12, 12)
    assert float(views.min()) >= 0.0 and float(views.max()) <= 1.0


def test_metrics_on_hand_built_cases() -> None:
    labels = np.array([1, 1, 0, 0, 1, 0], dtype=bool)
    scores = np.array([0.9, 0.4, 0.4, 0.1, 0.7, 0.8])
    # Pairs (positive, negative): 9; positive above: 0.9 > all 3, 0.7 > 2, 0.4 > 0.1 and ties 0.4 -> 1.5.
    assert roc_auc(labels, scores) == pytest.approx((3 + 2 + 1.5) / 9)
    assert np.isnan(roc_auc(np.ones(3, dtype=bool), np.ones(3)))
    m = binary_metrics(labels, scores, 0.5)
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (2, 1, 2, 1)
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 3)
    assert m["specificity"] == pytest.approx(2 / 3) and m["f1"] == pytest.approx(2 / 3)
    assert m["accuracy"] == pytest.approx(4 / 6)
    # Keeping >= 2/3 of the three positives allows one miss: the threshold is the second-lowest positive.
    assert choose_threshold(labels, scores, min_sensitivity=2 / 3) == pytest.approx(0.7)
    assert choose_threshold(labels, scores, min_sensitivity=1.0) == pytest.approx(0.4)
    assert confusion_matrix(np.array([0, 0, 1, 2]), np.array([0, 1, 1, 0]), 3) == [[1, 1, 0], [0, 1, 0], [1, 0, 0]]


def test_study_score_is_the_highest_nodule_probability() -> None:
    def reading(p: float) -> Classification:
        return Classification((0.0, 0.0, 0.0), p, p >= 0.5, NoduleType.SOLID, {NoduleType.SOLID: 1.0})

    assert study_score([]) == 0.0
    assert study_score([reading(0.1), reading(0.7), reading(0.3)]) == pytest.approx(0.7)
    assert study_score([reading(0.1)] * 10) == pytest.approx(0.1)  # many weak candidates do not add up


def test_shipped_classifier_is_registered_with_its_hash_and_measured_metrics(classifier) -> None:
    entry = get_entry(REF)
    path = weights_path(entry)
    assert path == REGISTRY_PATH.parent / "weights" / "nodule-classifier-0.1.0.pt"
    assert file_sha256(path) == entry.sha256 == classifier.sha256
    assert path.stat().st_size < 5 * 1024 * 1024
    assert tuple(entry.categories) == CLASSIFIER_CATEGORIES
    assert 0.0 < entry.score_threshold < 1.0
    assert classifier.preprocessing_version == entry.preprocessing.version
    test = entry.metrics["test"]
    assert 0.5 < test["all_candidates"]["roc_auc"] <= 1.0
    assert entry.provisional == (entry.metrics["type_accuracy"] < TYPE_ACCURACY_TARGET)
    assert entry.metrics["types"]["n_nodules"] >= 100
    assert get_entry("nodule-detector@0.1.0").architecture["builder"] == "small_faster_rcnn_2p5d"  # untouched


def test_a_mismatched_weights_file_is_refused(tmp_path: Path) -> None:
    registry = json.loads(REGISTRY_PATH.read_text())
    entry = next(m for m in registry["models"] if f"{m['name']}@{m['version']}" == REF)
    (tmp_path / "registry.json").write_text(json.dumps(registry))
    target = tmp_path / entry["weights"]
    target.parent.mkdir(parents=True)
    shutil.copy(REGISTRY_PATH.parent / entry["weights"], target)
    assert load_classifier(REF, registry_path=tmp_path / "registry.json").sha256 == entry["sha256"]
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one corrupted byte
    target.write_bytes(bytes(data))
    with pytest.raises(WeightsIntegrityError) as raised:
        load_classifier(REF, registry_path=tmp_path / "registry.json")
    assert entry["sha256"] in str(raised.value) and str(target) in str(raised.value)
    target.unlink()
    with pytest.raises(FileNotFoundError, match=r"nodule-classifier@0\.1\.0"):
        load_classifier(REF, registry_path=tmp_path / "registry.json")


def test_fine_tuning_starts_from_the_registered_classifier(tmp_path: Path) -> None:
    architecture, state = initial_classifier(REF)
    shipped = load_classifier(REF).model.state_dict()
    assert architecture == get_entry(REF).architecture  # its own width, whatever --width says
    assert state.keys() == shipped.keys() and all(torch.equal(state[k], shipped[k]) for k in shipped)
    with pytest.raises(ValueError, match="small_faster_rcnn_2p5d"):
        initial_classifier("nodule-detector@0.3.0")
    registry = json.loads(REGISTRY_PATH.read_text())
    entry = next(m for m in registry["models"] if f"{m['name']}@{m['version']}" == REF)
    entry["preprocessing"] = {**entry["preprocessing"], "spacing_zyx_mm": [1.0, 1.0, 1.0], "version": "patch-1mm"}
    (tmp_path / "registry.json").write_text(json.dumps(registry))
    (tmp_path / entry["weights"]).parent.mkdir(parents=True)
    shutil.copy(REGISTRY_PATH.parent / entry["weights"], tmp_path / entry["weights"])
    with pytest.raises(ValueError, match=r"nodule-classifier@0\.1\.0 reads patches 'patch-1mm'"):
        initial_classifier(REF, tmp_path / "registry.json")  # the recipe's patches would not fit it


class _MeanHu(torch.nn.Module):
    """Nodule logit = the patch's mean input (0..1 window) x 40 - 20: bright patches read as nodules."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x.mean(dim=(1, 2, 3, 4)) * 40 - 20, torch.zeros(len(x), 3)


def test_fine_tuning_draws_the_starting_models_mistakes_more_often() -> None:
    bright, dark = np.full((36, 36, 36), 300, np.int16), np.full((36, 36, 36), -1000, np.int16)
    # Rows: a bright nodule (right), a dark nodule (wrong), a dark negative (right), a bright negative (wrong).
    data = PatchSet(
        patches=np.stack([bright, dark, dark, bright]),
        is_nodule=np.array([True, True, False, False]),
        kind=np.array([0, 0, -1, -1]),
        source=np.array([SOURCES.index("nodule")] * 2 + [SOURCES.index("detector")] * 2),
        diameter_mm=np.array([12.0, 12.0, np.nan, np.nan]),
    )
    weight = mistake_weights(_MeanHu(), data, 9.0)
    assert weight.tolist() == [1.0, 9.0, 1.0, 9.0]
    rng = np.random.default_rng(0)
    drawn = np.concatenate([batch_indices(data, 8, rng, weight) for _ in range(500)])
    counts = np.bincount(drawn, minlength=4)
    assert counts[0] + counts[1] == counts[2] + counts[3] == 2000  # half positives, half negatives
    assert 0.85 < counts[1] / 2000 < 0.95 and 0.85 < counts[3] / 2000 < 0.95  # 9 of 10 draws
    with pytest.raises(ValueError, match=r"must be >= 1, got 0\.5"):
        mistake_weights(_MeanHu(), data, 0.5)
    with pytest.raises(ValueError, match="keep must be 'best' or 'last', got 'worst'"):
        train_classifier(Path("/nonexistent"), keep="worst")  # refused before any work
    with pytest.raises(ValueError, match="mistake_weight 4 needs a model to fine-tune"):
        train_classifier(Path("/nonexistent"), mistake_weight=4.0)  # no starting model to make mistakes


def test_shipped_classifier_tells_a_solid_nodule_from_lung(classifier) -> None:
    for i in range(50):  # the first fresh phantom with a solid nodule of 8 mm or more
        phantom = make_phantom(np.random.default_rng([FRESH_SEED, i]), n_nodules=1)
        if phantom.nodules and phantom.nodules[0].kind == NoduleKind.SOLID and phantom.nodules[0].diameter_mm >= 8:
            break
    else:
        pytest.fail("no phantom with a solid nodule >= 8 mm")
    lung = label_candidates(
        phantom, None, np.random.default_rng(0), jitters=0, n_vessel=0, n_wall=0, n_lung=4, for_training=False
    )
    centres = [phantom.nodules[0].center_zyx_vox, *(c.center_zyx_vox for c in lung)]
    results = classifier.classify(phantom.hu, phantom.spacing_zyx_mm, centres)
    assert len(results) == 5 and len(lung) == 4
    nodule, rest = results[0], results[1:]
    assert nodule.nodule_probability > max(r.nodule_probability for r in rest)
    assert nodule.is_nodule and not any(r.is_nodule for r in rest)
    assert nodule.nodule_type is NoduleType.SOLID
    assert sum(nodule.type_probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    assert study_score(results) == pytest.approx(nodule.nodule_probability)


def test_the_default_recipe_draws_the_first_classifiers_phantoms_and_archive_share_moves_them() -> None:
    """PhantomRecipe() keeps nodule-classifier 0.1.0's phantoms (no extra random draw); a share of 1 puts every
    training phantom on the longitudinal archive's grid, with nodules from the recipe's smallest size."""
    seed = [FRESH_SEED, 7]
    old = training_phantom(np.random.default_rng(seed))
    same = training_phantom(np.random.default_rng(seed), PhantomRecipe())
    assert old.spacing_zyx_mm == same.spacing_zyx_mm and np.array_equal(old.hu, same.hu)
    small = [training_phantom(np.random.default_rng([FRESH_SEED, i]), PhantomRecipe(3.0, 1.0)) for i in range(6)]
    assert all(p.hu.shape == ARCHIVE_SHAPE_ZYX and p.spacing_zyx_mm == ARCHIVE_SPACING_ZYX_MM for p in small)
    diameters = [n.diameter_mm for p in small for n in p.nodules]
    assert diameters and min(diameters) >= 3.0
    with pytest.raises(ValueError, match="eval_grid"):
        PhantomRecipe(eval_grid="huge")


def test_patches_built_in_worker_processes_equal_the_serial_ones() -> None:
    """Two spawned workers, each with its own detector, cut the same patches in the same order as one process
    (to the HU: the detector's one thread there rounds differently from two threads here)."""
    from models.registry import load_detector

    detector = load_detector("nodule-detector@0.3.0")
    plan = PatchPlan(FRESH_SEED + 1, 1, 1, 2, 1, 1, for_training=False, recipe=PhantomRecipe(3.0, eval_grid="small"))
    serial = build_patches(detector, plan, count=2, description="serial")
    parallel = build_patches(detector, plan, count=2, description="parallel", workers=2)
    assert (serial.source == 1).any()  # the detector's candidates on the first phantom
    for field in ("is_nodule", "kind", "source"):
        assert np.array_equal(getattr(serial, field), getattr(parallel, field)), field
    assert np.abs(serial.patches.astype(np.int32) - parallel.patches.astype(np.int32)).max() <= 1
