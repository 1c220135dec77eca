"""The CUDA path: the shipped models on a GPU, under autocast and in the GPU worker's batches, give what they give on
the CPU. Skipped where no CUDA device is present (CI has none); run on a GPU machine with
``pytest --noconftest tests/test_cuda.py`` (it needs torch, torchvision, numpy, scipy and pydicom, no services)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.registry import load_classifier, load_detector, load_spiculation
from synth.phantom import make_phantom

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

DETECTOR = "nodule-detector@0.3.0"
CLASSIFIER = "nodule-classifier@0.4.0"
SPICULATION = "nodule-spiculation@0.2.0"
SPACING_ZYX_MM = (2.5, 1.4, 1.4)
SCORE_FLOOR = 0.05
"""The findings' floor (``Settings.finding_min_score``): candidates from here on are compared."""
SURE_SCORE = 0.2
"""CPU candidates at least this sure must be found on CUDA too (nearer the floor fp16 may drop one under it)."""


@pytest.fixture(scope="module")
def phantom_hu() -> np.ndarray:
    """One synthetic chest of the evaluation archives' grid with four nodules (HU, z y x)."""
    phantom = make_phantom(
        np.random.default_rng([4343, 1]), shape_zyx=(100, 256, 256), spacing_zyx_mm=SPACING_ZYX_MM, n_nodules=4
    )
    return phantom.hu


def test_detector_on_cuda_finds_the_cpu_candidates(phantom_hu: np.ndarray) -> None:
    on_cpu = load_detector(DETECTOR, "cpu").detect(phantom_hu, SPACING_ZYX_MM, score_threshold=SCORE_FLOOR)
    on_gpu = load_detector(DETECTOR, "cuda").detect(
        phantom_hu, SPACING_ZYX_MM, score_threshold=SCORE_FLOOR, batch_size=64
    )
    sure = [c for c in on_cpu if c.score >= SURE_SCORE]
    assert sure, "the phantom should give the detector something to find"
    for cpu in sure:
        nearest = min(on_gpu, key=lambda g: np.linalg.norm(np.subtract(g.center_zyx_vox, cpu.center_zyx_vox)))
        offset = np.linalg.norm(np.subtract(nearest.center_zyx_vox, cpu.center_zyx_vox))
        assert offset < 0.5, f"CPU candidate at {cpu.center_zyx_vox} moved {offset:.2f} voxels on CUDA"
        assert nearest.score == pytest.approx(cpu.score, abs=0.02)


def test_classifier_and_spiculation_on_cuda_agree_with_the_cpu(phantom_hu: np.ndarray) -> None:
    centres = [c.center_zyx_vox for c in load_detector(DETECTOR, "cpu").detect(phantom_hu, SPACING_ZYX_MM)]
    assert centres
    cpu = load_classifier(CLASSIFIER, "cpu").classify(phantom_hu, SPACING_ZYX_MM, centres)
    gpu = load_classifier(CLASSIFIER, "cuda").classify(phantom_hu, SPACING_ZYX_MM, centres)
    for a, b in zip(cpu, gpu, strict=True):
        assert b.nodule_probability == pytest.approx(a.nodule_probability, abs=0.01)
        assert b.nodule_type == a.nodule_type
    nodules = [(centre, 10.0) for centre in centres]
    spiculation_cpu = load_spiculation(SPICULATION, "cpu").predict(phantom_hu, SPACING_ZYX_MM, nodules)
    spiculation_gpu = load_spiculation(SPICULATION, "cuda").predict(phantom_hu, SPACING_ZYX_MM, nodules)
    assert spiculation_gpu == pytest.approx(spiculation_cpu, abs=0.01)
