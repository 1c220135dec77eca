"""Detector training: crops and augmentation keep boxes on their nodules, and a short run lowers the loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.detector import build_from_architecture
from models.train import ARCHITECTURE, CROP_PX, CropSampler, augment, slice_boxes, to_training_volume, train_step
from synth.phantom import make_phantom

FRESH_SEED = 10_000_001


def _bright_square(size: int, box: tuple[int, int, int, int]) -> torch.Tensor:
    image = torch.zeros(3, size, size)
    x1, y1, x2, y2 = box
    image[:, y1:y2, x1:x2] = 1.0
    image[0, y1:y2, x1:x2] = 0.5  # the channels (slices) differ, so a slice-order flip shows
    return image


@pytest.mark.parametrize("seed", range(8))
def test_augmentation_moves_boxes_with_the_image(seed: int) -> None:
    image = _bright_square(64, (10, 20, 18, 40))
    out, boxes = augment(image, torch.tensor([[10.0, 20.0, 18.0, 40.0]]), np.random.default_rng(seed))
    x1, y1, x2, y2 = (round(float(v)) for v in boxes[0])
    bright = out[1] > 0.5  # the middle slice; jitter and noise are small against the square's contrast
    inside = bright[y1:y2, x1:x2].float().mean()
    assert float(inside) > 0.95, f"box {boxes[0].tolist()} missed the square"
    assert int(bright.sum()) - int(bright[y1:y2, x1:x2].sum()) < 10


def test_slice_boxes_skip_slices_that_graze_a_nodule() -> None:
    nodules = [((10.0, 50.0, 60.0), 10.0)]  # 5 mm radius; slices 2.5 mm apart
    assert slice_boxes(nodules, 10, (2.5, 1.25, 1.25)).shape == (1, 4)
    assert slice_boxes(nodules, 12, (2.5, 1.25, 1.25)) is None  # 5 mm from the centre: the cap
    assert slice_boxes(nodules, 14, (2.5, 1.25, 1.25)).shape == (0, 4)
    x1, y1, x2, y2 = slice_boxes(nodules, 10, (2.5, 1.25, 1.25))[0]
    assert (x2 - x1, y2 - y1) == pytest.approx((9.0, 9.0))
    assert ((x1 + x2) / 2, (y1 + y2) / 2) == pytest.approx((60.5, 50.5))


@pytest.fixture(scope="module")
def sampler() -> CropSampler:
    phantoms = [
        make_phantom(np.random.default_rng([FRESH_SEED, i]), shape_zyx=(40, 128, 128), n_nodules=3) for i in range(2)
    ]
    return CropSampler([to_training_volume(p) for p in phantoms], np.random.default_rng(0))


def test_positive_crops_hold_a_nodule_box_inside_the_crop(sampler: CropSampler) -> None:
    for _ in range(10):
        image, boxes = sampler.positive()
        assert tuple(image.shape) == (3, CROP_PX, CROP_PX) and image.dtype == torch.float32
        assert len(boxes) >= 1
        assert float(boxes.min()) >= 0.0 and float(boxes.max()) <= CROP_PX
        assert bool((boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all())


def test_a_short_training_run_lowers_the_loss(sampler: CropSampler) -> None:
    torch.manual_seed(0)
    model = build_from_architecture({**ARCHITECTURE, "kwargs": {**ARCHITECTURE["kwargs"], "width": 8}})
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    batch = [sampler.positive() for _ in range(2)] + [sampler.negative() for _ in range(2)]

    def loss() -> float:
        torch.manual_seed(1)  # the same proposal sampling each time
        model.train()
        with torch.no_grad():
            images = [image for image, _ in batch]
            targets = [{"boxes": b, "labels": torch.ones(len(b), dtype=torch.int64)} for _, b in batch]
            return float(sum(model(images, targets).values()))

    before = loss()
    for _ in range(15):
        train_step(model, optimizer, batch, "cpu")
    after = loss()
    assert after < 0.6 * before, f"loss {before:.3f} -> {after:.3f}"


def _tiny_recipe(monkeypatch) -> dict:
    """Make models.train's recipe tiny (width 8, small phantoms) for a whole run in seconds; the architecture."""
    from models import train

    small = {**ARCHITECTURE, "kwargs": {**ARCHITECTURE["kwargs"], "width": 8}}
    monkeypatch.setattr(train, "ARCHITECTURE", small)
    monkeypatch.setattr(train, "EVAL_SHAPE_ZYX", (24, 96, 96))
    monkeypatch.setattr(train, "EVAL_SPACING_ZYX_MM", (5.0, 3.5, 3.5))
    monkeypatch.setattr(
        train,
        "training_phantom",
        lambda rng, *_: make_phantom(rng, shape_zyx=(24, 96, 96), spacing_zyx_mm=(2.5, 3.0, 3.0)),
    )
    return small


def test_resuming_from_a_checkpoint_gives_the_uninterrupted_result(tmp_path, monkeypatch) -> None:
    """Two epochs in one go, and one epoch then a resume from its checkpoint: the same weights."""
    from models import train

    _tiny_recipe(monkeypatch)
    run = {"seed": 3, "n_train_volumes": 2, "n_val_volumes": 1, "n_test_volumes": 1, "epochs": 2}
    run |= {"steps_per_epoch": 2, "batch_size": 2, "version": "0.0.1", "num_threads": 1}
    threads = torch.get_num_threads()
    try:
        whole = tmp_path / "whole"
        train.train_detector(whole, registry_path=tmp_path / "whole.json", **run)
        checkpoint = whole / "checkpoints" / "nodule-detector-0.0.1-epoch01.pt"
        assert checkpoint.exists() and (whole / "checkpoints" / "nodule-detector-0.0.1-epoch02.pt").exists()
        resumed = tmp_path / "resumed"
        train.train_detector(resumed, registry_path=tmp_path / "resumed.json", resume=checkpoint, **run)
        with pytest.raises(ValueError, match="belongs to run"):
            train.train_detector(tmp_path / "other", resume=checkpoint, **{**run, "seed": 4})
    finally:
        torch.set_num_threads(threads)
    a = torch.load(whole / "nodule-detector-0.0.1.pt", weights_only=True)
    b = torch.load(resumed / "nodule-detector-0.0.1.pt", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_training_volumes_are_the_same_for_any_number_of_processes(monkeypatch) -> None:
    from models import train

    monkeypatch.setattr(  # inherited by the forked worker processes
        train,
        "training_phantom",
        lambda rng, *_: make_phantom(rng, shape_zyx=(16, 64, 64), spacing_zyx_mm=(2.5, 3.0, 3.0)),
    )
    serial = train.training_volumes(5, 3, workers=1)
    parallel = train.training_volumes(5, 3, workers=2)
    assert [v.nodules for v in serial] == [v.nodules for v in parallel]
    assert all(torch.equal(a.volume, b.volume) for a, b in zip(serial, parallel, strict=True))


def test_small_share_draws_that_share_of_positive_crops_through_small_nodules() -> None:
    from models.train import SMALL_NODULE_MM, TrainingVolume

    volume = torch.zeros(8, 64, 64, dtype=torch.float16)
    nodules = [((4.0, 20.0, 20.0), 4.0), ((4.0, 40.0, 40.0), 12.0), ((4.0, 20.0, 44.0), 16.0)]
    tv = TrainingVolume(volume, nodules)
    for share, expected in ((None, 1 / 3), (0.5, 0.5), (0.9, 0.9)):
        sampler = CropSampler([tv], np.random.default_rng(0), small_share=share)
        picks = [sampler._pick() for _ in range(4000)]
        small = np.mean([tv.nodules[n][1] < SMALL_NODULE_MM for _, n in picks])
        assert small == pytest.approx(expected, abs=0.03), (share, small)
    with pytest.raises(ValueError, match=r"small_share must be 0 to 1, got 1\.5"):
        CropSampler([tv], np.random.default_rng(0), small_share=1.5)


def test_fine_tuning_starts_from_the_registered_weights(tmp_path, monkeypatch) -> None:
    """A run with init_from and a zero learning rate keeps the registered detector's weights and architecture
    (not the recipe's); a detector of another builder is refused, naming the model."""
    from models import train

    small = _tiny_recipe(monkeypatch)
    registry = tmp_path / "registry.json"
    run = {"n_train_volumes": 2, "n_val_volumes": 1, "n_test_volumes": 1, "epochs": 1, "steps_per_epoch": 1}
    run |= {"batch_size": 2, "num_threads": 1, "registry_path": registry}
    threads = torch.get_num_threads()
    try:
        train.train_detector(tmp_path / "a", seed=3, version="0.0.1", **run)
        wider = {**small, "kwargs": {**small["kwargs"], "anchor_sizes": [3, 5, 8]}}
        monkeypatch.setattr(train, "ARCHITECTURE", wider)  # the recipe moved on; the fine-tune keeps 0.0.1's
        train.train_detector(
            tmp_path / "b", seed=4, version="0.0.2", init_from="nodule-detector@0.0.1", learning_rate=0.0, **run
        )
        monkeypatch.setattr(train, "ARCHITECTURE", {**small, "builder": "another"})
        with pytest.raises(ValueError, match=r"nodule-detector@0\.0\.1 is built by 'small_faster_rcnn_2p5d'"):
            train.initial_network("nodule-detector@0.0.1", registry)
    finally:
        torch.set_num_threads(threads)
    a = torch.load(tmp_path / "a" / "nodule-detector-0.0.1.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "nodule-detector-0.0.2.pt", weights_only=True)
    floats = [k for k in a if a[k].is_floating_point() and "running" not in k]
    assert floats and all(torch.allclose(a[k], b[k]) for k in floats)
    from models.registry import get_entry

    assert get_entry("nodule-detector@0.0.2", registry).architecture == small
