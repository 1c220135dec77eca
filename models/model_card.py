"""Render a model card (Markdown) from a registry entry, so the card's numbers are the measured ones."""

from __future__ import annotations

from pathlib import Path

from models.registry import ModelEntry


def _pct(value: float) -> str:
    return f"{100 * value:.1f} %"


def render_model_card(entry: ModelEntry) -> str:
    """Markdown model card of `entry` (metrics as stored in the registry)."""
    m = entry.metrics
    froc = m.get("froc_ge_6mm", {})
    froc_rows = "\n".join(
        f"| {k.removeprefix('sens@').removesuffix('fp')} | {_pct(v)} |"
        for k, v in froc.items()
        if k.startswith("sens@")
    )
    history = m.get("history", [])
    prep = entry.preprocessing
    status = "PROVISIONAL. " if entry.provisional else ""
    return f"""# Model card: {entry.name} {entry.version}

**{status}Trained on synthetic phantoms only. Not for clinical use.** It exists so the screening pipeline
(fetch, decode, resample, detect, store findings with provenance) runs end to end on real code paths
before a model trained on real, annotated CT (for example LIDC-IDRI / LUNA16) replaces it.

## What it does

Detects lung nodules (solid, part-solid and ground glass) in chest CT. Input: a volume in Hounsfield
units (z, y, x) with its voxel spacing in mm. Output: 3-D candidates (centre in the input's voxel
coordinates, extent in mm, diameter in mm, score 0..1), kept when the score is >= {entry.score_threshold:.3f}
(chosen on validation phantoms as {m.get("validation", {}).get("threshold_rule", "n/a")}).

- Architecture: torchvision Faster R-CNN with a small 7-layer convolutional backbone (one feature map at
  stride 4), square anchors of {entry.architecture.get("kwargs", {}).get("anchor_sizes", "4, 8, 16")} px,
  2.5-D input (slices k-1, k, k+1 as channels); builder `{entry.architecture["builder"]}`
  with {entry.architecture.get("kwargs", {})}. Random initialisation, no pretrained weights.
- Per-slice boxes are linked across adjacent slices (IoU > 0.3) into 3-D candidates; a candidate whose
  centre lies inside a better one is dropped (3-D non-maximum suppression).
- Candidate diameters come from box sizes and are coarse; true measurement is a separate step.
- Preprocessing `{prep.version}`: trilinear resampling to {prep.spacing_zyx_mm} mm (z, y, x), window
  {prep.window_hu[0]:g}..{prep.window_hu[1]:g} HU mapped to 0..1.
- Weights: `{entry.weights}` (state_dict), sha256 `{entry.sha256}`.

## Training data

`synth.phantom` volumes (the anatomy of `nightscan synth`): body with fat and soft tissue, lungs with
branching vessels (the main false-positive source), heart, trachea, spine, ribs, sternum and table, in a
random pose, with noise of a random dose (about 20 to 36 HU); 1..4 nodules of 4..25 mm, solid,
part-solid or ground glass, irregular, some juxtapleural, some spiculated. Each volume covers a random
120 mm of the lungs. Voxel size varied (z 1.8..3.2 mm, in-plane 2.2..2.9 mm) so resampling is part of
training. Augmentation: flips on all axes, intensity jitter, extra noise.

## Measured performance (held-out synthetic phantoms)

Test set: {m.get("dataset", "n/a")}; {m.get("n_test_nodules_ge_6mm", "n/a")} nodules >= 6 mm.
Hit rule: {m.get("hit_rule", "n/a")}.

| metric | value |
|---|---|
| sensitivity, nodules >= 6 mm, at threshold {entry.score_threshold:.3f} | {_pct(m["sensitivity_ge_6mm"])} |
| sensitivity, nodules >= 8 mm | {_pct(m["sensitivity_ge_8mm"])} |
| false positives per scan | {m["fp_per_scan"]:.2f} |
| FROC CPM (mean sensitivity at 1/8..8 FP/scan, >= 6 mm) | {_pct(froc.get("cpm", float("nan")))} |
| detection time per 48 x 128 x 128 scan (CPU) | {m.get("detect_seconds_per_scan_cpu", "n/a")} s |
| training time (CPU, 2 threads, including evaluation) | {m.get("training_seconds", "n/a")} s |

FROC (nodules >= 6 mm):

| FP / scan | sensitivity |
|---|---|
{froc_rows}

Training curves: `weights/{entry.name}-{entry.version}-curves.png` ({len(history)} epochs).

## Reproduce

    {entry.training_command}

Trained at {entry.trained_at}. Deterministic for a seed on the same CPU and library versions (torch
{_torch_version()}); different hardware may give slightly different weights and hence a different sha256.

## Limitations

- Synthetic anatomy is far simpler than real chest CT: no ribs, airways, heart motion, emphysema,
  juxtapleural or part-solid / ground-glass nodules, no reconstruction kernels or slice thickness effects.
- Numbers above say the pipeline works, not that the model would work on patients.
"""


def _torch_version() -> str:
    import torch

    return torch.__version__


def write_model_card(entry: ModelEntry, path: Path) -> Path:
    """Write the card of `entry` to `path`; returns the path."""
    path.write_text(render_model_card(entry), encoding="utf-8")
    return path
