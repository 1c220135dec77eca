"""Render a model card (Markdown) from a registry entry, so the card's numbers are the measured ones."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from models.registry import ModelEntry, list_entries


def _pct(value: float) -> str:
    return f"{100 * value:.1f} %"


V1_TRAINING_DATA = (
    "`synth.phantom` volumes: 1..4 nodules of 4..25 mm in a random 120 mm of the lungs, voxel size varied "
    "(z 1.8..3.2 mm, in-plane 2.2..2.9 mm); whole 2.5-D slices, half through a nodule. Augmentation: flips on "
    "all axes, intensity jitter, extra noise"
)
"""How nodule-detector 0.1.0 was trained (its registry entry predates the `training_data` field)."""

TARGETS = (  # (label, where in archive_evaluation, goal, higher is better); the targets of issue 6
    ("CPM, nodules >= 4 mm", ("detection", "ge_4mm", "cpm"), 0.85, True),
    ("sensitivity at 1 FP/scan, nodules >= 6 mm", ("detection", "ge_6mm", "sensitivity_at_1fp"), 0.95, True),
    ("mean-diameter MAE, nodules >= 6 mm (mm)", ("diameter", "mae_mm_ge_6mm"), 1.0, False),
    ("nodule type accuracy of the findings (measured, else classified)", ("finding_type_accuracy",), 0.9, True),
    ("seconds per study on the CPU (load + detect)", ("timing", "load_detect_seconds_per_study"), 30.0, False),
)


def _dig(data: dict, path: tuple[str, ...]) -> object:
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def _archive_section(evaluations: dict) -> str:
    """The card's section on `nightscan models evaluate` runs on a held-out archive (one per ranking)."""
    if not evaluations:
        return "Not yet evaluated on an archive: run `nightscan models evaluate` (see the README)."
    parts = []
    for label, ev in evaluations.items():
        rows = []
        for name, path, goal, higher in TARGETS:
            value = _dig(ev, path)
            met = "n/a" if not isinstance(value, int | float) else ("yes" if (value >= goal) == higher else "**no**")
            shown = _num(value, 3 if goal < 2 else 1)
            rows.append(f"| {name} | {shown} | {'>=' if higher else '<='} {goal:g} | {met} |")
        by_size = _dig(ev, ("detection", "sensitivity_by_size_at_threshold")) or {}
        sizes = ", ".join(
            f"{band} {v.get('detected', '?')}/{v.get('n', '?')}" for band, v in by_size.items() if isinstance(v, dict)
        )
        parts.append(f"""### {label}

`{ev.get("command", "n/a")}`: {ev.get("dataset", "n/a")}.

| target | measured | goal | met |
|---|---|---|---|
{chr(10).join(rows)}

At the registered threshold: {_num(_dig(ev, ("detection", "fp_per_scan_at_threshold")), 2)} false positives per
scan; nodules found by size: {sizes or "n/a"}. The classifier's own type accuracy on the detected nodules:
{_num(ev.get("type_accuracy"))}.""")
    return "\n\n".join(parts)


def render_model_card(entry: ModelEntry) -> str:
    """Markdown model card of a detector (metrics as models.train and `models evaluate --record` store them)."""
    m = entry.metrics
    froc_4 = m.get("froc_ge_4mm", {})
    froc_6 = m.get("froc_ge_6mm", {})
    froc_rows = "\n".join(
        f"| {k.removeprefix('sens@').removesuffix('fp')} | {_pct_or_na(froc_4.get(k))} | {_pct_or_na(v)} |"
        for k, v in froc_6.items()
        if k.startswith("sens@")
    )
    history = m.get("history", [])
    prep = entry.preprocessing
    kwargs = entry.architecture.get("kwargs", {})
    status = "PROVISIONAL. " if entry.provisional else ""
    crop = (
        f" crop to the body (above {prep.body_threshold_hu:g} HU, {prep.margin_mm:g} mm margin),"
        if prep.crop_body
        else ""
    )
    pad = f", padded to a multiple of {prep.pad_multiple} pixels" if prep.pad_multiple > 1 else ""
    return f"""# Model card: {entry.name} {entry.version}

**{status}Trained on synthetic phantoms only. Not for clinical use.** It finds nodules in the project's
synthetic chest CT; a model trained on real, annotated CT (for example LIDC-IDRI / LUNA16) would replace it.

## What it does

Detects lung nodules (solid, part-solid and ground glass) in chest CT. Input: a volume in Hounsfield
units (z, y, x) with its voxel spacing in mm. Output: 3-D candidates (centre in the input's voxel
coordinates, extent in mm, diameter in mm, score 0..1), kept when the score is >= {entry.score_threshold:.3f}
(chosen on validation phantoms as the {m.get("validation", {}).get("threshold_rule", "n/a")}).

- Architecture: torchvision Faster R-CNN (region proposal network, ROI heads, non-maximum suppression) with a
  small 7-layer convolutional backbone (one feature map at stride 4), square anchors of
  {kwargs.get("anchor_sizes", [4, 8, 16])} working-grid pixels, 2.5-D input (slices k-1, k, k+1 as channels);
  builder `{entry.architecture["builder"]}` with {kwargs}. Random initialisation, no pretrained weights.
- Per-slice boxes are linked across adjacent slices (IoU > 0.3) into 3-D candidates; a candidate whose
  centre lies inside a better one is dropped (3-D non-maximum suppression).
- Candidate diameters come from box sizes and are coarse; findings are measured by `models.measurement`.
- Preprocessing `{prep.version}`: trilinear resampling to {prep.spacing_zyx_mm} mm (z, y, x),{crop}
  window {prep.window_hu[0]:g}..{prep.window_hu[1]:g} HU mapped to 0..1{pad}.
- Weights: `{entry.weights}` (state_dict), sha256 `{entry.sha256}`.

## Training data

{m.get("training_data", V1_TRAINING_DATA)}. Anatomy of `nightscan synth`: body, lungs with branching vessels
(the main false-positive source), heart, trachea, spine, ribs, sternum and table, in a random pose, with the
noise of a random dose; nodules solid, part-solid or ground glass, irregular, some juxtapleural, some spiculated.

## Measured performance

### Held-out synthetic archive (`nightscan models evaluate`)

The targets are those of the project's models issue; studies are read from DICOM objects in storage by the
production loader, and a candidate hits a nodule when its centre lies within the nodule's radius (LUNA16).

{_archive_section(m.get("archive_evaluation", {}))}

### Held-out phantoms (measured by the training command)

Test set: {m.get("dataset", "n/a")}; {m.get("n_test_nodules_ge_4mm", "n/a")} nodules >= 4 mm,
{m.get("n_test_nodules_ge_6mm", "n/a")} >= 6 mm. Hit rule: {m.get("hit_rule", "n/a")}.

| metric | value |
|---|---|
| sensitivity, nodules >= 6 mm, at threshold {entry.score_threshold:.3f} | {_pct_or_na(m.get("sensitivity_ge_6mm"))} |
| false positives per scan at the threshold | {_num(m.get("fp_per_scan"), 2)} |
| FROC CPM (mean sensitivity at 1/8..8 FP/scan), nodules >= 4 mm | {_pct_or_na(froc_4.get("cpm"))} |
| FROC CPM, nodules >= 6 mm | {_pct_or_na(froc_6.get("cpm"))} |
| detection time per test scan (CPU) | {m.get("detect_seconds_per_scan_cpu", "n/a")} s |
| training time ({m.get("device", "CPU, 2 threads")}, including evaluation) | {m.get("training_seconds", "n/a")} s |

| FP / scan | sensitivity >= 4 mm | sensitivity >= 6 mm |
|---|---|---|
{froc_rows}

Training curves: `weights/{entry.name}-{entry.version}-curves.png` ({len(history)} epochs).

## Reproduce

    {entry.training_command}

Trained at {entry.trained_at} on {m.get("device", "the CPU")} (torch {m.get("torch", _torch_version())}).
Deterministic for a seed on the same device and library versions; other hardware may give slightly different
weights and hence a different sha256.

## Limitations
{"".join(f"{chr(10)}- {note}" for note in m.get("notes", []))}
- Synthetic anatomy is far simpler than real chest CT: no airways below the main bronchi, no heart motion,
  emphysema, reconstruction kernels or scanner artefacts; nodules differ from their surroundings by clean HU levels.
- Numbers above say the pipeline works, not that the model would work on patients.
"""


def _largest_voxel_mm(kwargs: dict[str, Any]) -> float:
    """The spiculation patch's voxel (mm) for a nodule of 30 mm, from the architecture's patch geometry."""
    side = max(float(kwargs.get("min_side_mm", 24.0)), float(kwargs.get("side_radii", 5.0)) * 15.0)
    return side / int(kwargs.get("patch_size", 32))


def _torch_version() -> str:
    import torch

    return torch.__version__


def _num(value: object, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if isinstance(value, int | float) else "n/a"


def _pct_or_na(value: object) -> str:
    return _pct(value) if isinstance(value, int | float) else "n/a"


def _confusion_rows(matrix: list[list[int]], names: list[str]) -> str:
    header = "| true \\ predicted | " + " | ".join(names) + " |\n|---|" + "---|" * len(names)
    rows = [f"| {name} | " + " | ".join(str(v) for v in row) + " |" for name, row in zip(names, matrix, strict=True)]
    return "\n".join([header, *rows])


def _classifier_results(t: dict, names: list[str]) -> str:
    """The metric tables of one classifier test set (see models.train_classifier.evaluate_on_phantoms)."""
    every, det, large = t.get("all_candidates", {}), t.get("detector_candidates", {}), t.get("nodules_ge_6mm", {})
    fp = t.get("fp_reduction_at_detector_threshold", {})
    study = t.get("study_score", {})
    rows = "\n".join(
        f"| {label} | {_num(every.get(key))} | {_num(large.get(key))} | {_num(det.get(key))} |"
        for label, key in (
            ("ROC AUC", "roc_auc"),
            ("accuracy", "accuracy"),
            ("precision", "precision"),
            ("recall (sensitivity)", "recall"),
            ("specificity", "specificity"),
            ("F1", "f1"),
        )
    )
    sources = t.get("candidates_by_source", {})
    return f"""Candidates: {t.get("n_candidates", "n/a")} ({sources}) on {t.get("n_scans", "n/a")} scans; \
positives {every.get("n_positive", "n/a")}, negatives {every.get("n_negative", "n/a")} (all candidates), \
{det.get("n_positive", "n/a")} / {det.get("n_negative", "n/a")} among the detector's candidates.

| nodule or not, at the threshold | all candidates | without nodules < 6 mm | detector candidates only |
|---|---|---|---|
{rows}

Negatives kept as nodules, by source: {t.get("negatives_kept_by_source", "n/a")}; nodules missed, by type:
{t.get("nodules_missed_by_type", "n/a")}. Type accuracy on these {t.get("n_typed_nodules", "n/a")} true nodules:
{_pct_or_na(t.get("type_accuracy"))} (>= 6 mm: {_pct_or_na(t.get("type_accuracy_ge_6mm"))}).

False-positive reduction behind the detector (its threshold {_num(fp.get("detector_threshold"))}): false positives
per scan {_num(fp.get("fp_per_scan_before"), 2)} -> {_num(fp.get("fp_per_scan_after"), 2)}; sensitivity for the
{fp.get("n_nodules_ge_6mm", "n/a")} nodules >= 6 mm {_pct_or_na(fp.get("sensitivity_ge_6mm_before"))} ->
{_pct_or_na(fp.get("sensitivity_ge_6mm_after"))}.

Study-level abnormality score ({study.get("rule", "n/a")}): ROC AUC {_num(study.get("auc_any_nodule"))} for "holds a
nodule" ({study.get("n_abnormal", "n/a")} abnormal, {study.get("n_normal", "n/a")} normal studies),
{_num(study.get("auc_nodule_ge_6mm"))} for "holds a nodule >= 6 mm".
"""


def _types_section(types: dict, names: list[str]) -> str:
    if not types:
        return "n/a"
    bands = ", ".join(f"{band} {_pct_or_na(v['accuracy'])} (n = {v['n']})" for band, v in types["by_diameter"].items())
    accuracy = _pct_or_na(types.get("type_accuracy"))
    return f"""Type accuracy **{accuracy}** on {types.get("n_nodules", "n/a")} true nodules:
{types.get("dataset", "n/a")}. By mean diameter: {bands}.

{_confusion_rows(types.get("confusion", []), names) if types.get("confusion") else ""}"""


def render_classifier_card(entry: ModelEntry) -> str:
    """Markdown model card of a candidate classifier (metrics as models.train_classifier stores them)."""
    m = entry.metrics
    prep = entry.preprocessing
    kwargs = entry.architecture.get("kwargs", {})
    names = list(entry.categories[1:])
    status = "PROVISIONAL. " if entry.provisional else ""
    val = m.get("validation", {})
    val_large = val.get("nodules_ge_6mm", {})
    test_large = m.get("test", {}).get("nodules_ge_6mm", {})
    thin = m.get("test_thin_slices", {})
    thin_section = (
        f"""### Thin slices

{thin.get("dataset", "")}: the same tables on finer voxels than the main test set.

{_classifier_results(thin, names)}"""
        if thin
        else ""
    )
    history = m.get("history", [])
    kept_rule = m.get("kept_epoch_rule", "the best epoch by validation ROC AUC + type accuracy")
    start = f"initialised from {m['init_from']}" if m.get("init_from") else "random initialisation"
    return f"""# Model card: {entry.name} {entry.version}

**{status}Trained on synthetic phantoms only. Not for clinical use.** False-positive reduction and nodule
typing behind the detector, trained and measured on the project's synthetic anatomy.

## What it does

For each candidate centre (the input volume's voxel coordinates z, y, x, as the detector gives them), reads a
cube around it and returns the probability that it is a nodule (kept as a nodule when >= {entry.score_threshold:.3f},
chosen on validation phantoms as the {val.get("threshold_rule", "n/a")}) and the nodule's type
({", ".join(names)}; probabilities sum to 1, meaningful for nodules only). A study's abnormality score is the
highest nodule probability among its candidates: a noisy-OR (1 - prod(1 - p)) would grow with the number of
candidates, which depends on the detector's threshold and on how many vessels a scan shows.

- Architecture: 3-D CNN, builder `{entry.architecture["builder"]}` with {kwargs}: a stride-2 3x3x3 stem and
  three blocks of two 3x3x3 convolutions (BatchNorm, ReLU) with max pooling between them, global average and
  max pooling, then a nodule-or-not head and a type head; {m.get("n_parameters", "n/a")} parameters;
  {start}.
- Preprocessing `{prep.version}`: a cube of {kwargs.get("patch_size", "n/a")} voxels at {prep.spacing_zyx_mm} mm
  (z, y, x) sampled trilinearly from the input around the centre, air (-1000 HU) outside the volume, window
  {prep.window_hu[0]:g}..{prep.window_hu[1]:g} HU mapped to 0..1.
- Categories: {entry.categories} (the first means "not a nodule"; the others are the type head's order).
- Weights: `{entry.weights}` (state_dict), sha256 `{entry.sha256}`.

## Training data

{m.get("training_data", "n/a")}. Positives: the true nodules with their centre moved by up to 2 mm (three
views each) and the detector's hits; negatives: the detector's false positives (hard negatives; those within
radius + 3 mm of a nodule are left out as ambiguous), bright points inside the lungs (vessels), points near the
lung boundary (chest wall) and lung parenchyma. Batches are half positives (nodules < 10 mm drawn twice as
often: their type is the hard part); negatives are drawn 40 % detector
false positives, 30 % vessels, 15 % chest wall, 15 % parenchyma. Augmentation: flips on every axis, 90-degree
axial rotations, scaling 0.9..1.1, sub-voxel shifts, HU offset and contrast jitter, extra noise. Loss: binary
cross-entropy plus the type cross-entropy on positives only; AdamW with a one-cycle schedule; kept:
{kept_rule} (epoch {m.get("best_epoch", "n/a")} of {len(history)}).

## Measured performance (held-out synthetic phantoms)

Test set: {m.get("dataset", "n/a")}. Labels of detector candidates: {m.get("hit_rule", "n/a")}.
Threshold {_num(m.get("threshold"))}; on the validation candidates ({val.get("n_scans", "n/a")} scans, seeds
{val.get("seeds", "n/a")}) it gave sensitivity {_pct_or_na(val_large.get("recall"))} for the
{val_large.get("n_positive", "n/a")} nodules >= 6 mm ({_pct_or_na(val.get("recall"))} for all
{val.get("n_positive", "n/a")}), specificity {_pct_or_na(val.get("specificity"))}.

### Nodule type

{_types_section(m.get("types", {}), names)}

### Nodule or not

{_classifier_results(m.get("test", {}), names)}
{thin_section}
Time: {m.get("classify_seconds_per_scan_cpu_including_detection", "n/a")} s per test scan for detection (on the
training device) and classification (on the CPU) together; training {m.get("training_seconds", "n/a")} s
({m.get("device", "CPU, 2 threads")}, including building the patches ({m.get("data_seconds", "n/a")} s) and
evaluation). Training curves:
`weights/{entry.name}-{entry.version}-curves.png`.

## Reproduce

    {entry.training_command}

`--patch-cache FILE`, when given, reads the training patches from FILE if it exists (they are the ones the
command builds, so leaving it out gives the same patches) and writes them there otherwise; the time above then
leaves out building them. Trained at {entry.trained_at}. Deterministic for a seed on the same device and library
versions (torch {m.get("torch", _torch_version())}); other hardware may give slightly different weights and another
sha256.

## Limitations

- The threshold keeps {_pct_or_na(val_large.get("recall"))} of the {val_large.get("n_positive", "n/a")} validation
  nodules >= 6 mm but {_pct_or_na(test_large.get("recall"))} of the {test_large.get("n_positive", "n/a")} test
  ones: with so few validation nodules it is a coarse choice; lower it where sensitivity matters more than false
  positives.
- Synthetic anatomy and nodules only: the types differ by clean HU levels (solid about 0..50 HU, ground glass
  about -600 HU, part-solid a ground-glass shell around a solid core); real nodules, partial-volume effects of
  thick slices and reconstruction kernels are harder.
- Small nodules (4..6 mm) at 2.5 mm voxels span two or three voxels: their type, part-solid above all, is the
  least reliable.
- Negatives are this detector's false positives and random points; another detector's mistakes may differ.
- Numbers above say the pipeline works, not that the model would work on patients.{
        "".join(f"{chr(10)}- {note}" for note in m.get("notes", []))
    }
"""


_BAND_HEADER = (
    "| true mean diameter | spiculated / smooth | AUC model | AUC hand-made | accuracy model | accuracy hand-made "
    "| sens. / spec. model | sens. / spec. hand-made |\n|---|---|---|---|---|---|---|---|"
)


def _band_rows(bands: dict) -> str:
    """Model against hand-made score per size band (see models.train_spiculation.compare_by_band)."""
    rows = []
    for band, f in bands.items():
        mo, hm = f.get("model", {}), f.get("handmade", {})
        rows.append(
            f"| {band} | {mo.get('spiculated', 'n/a')} / {mo.get('smooth', 'n/a')} | {_num(mo.get('auc'))} | "
            f"{_num(hm.get('auc'))} | {_pct_or_na(mo.get('accuracy'))} | {_pct_or_na(hm.get('accuracy'))} | "
            f"{_pct_or_na(mo.get('sensitivity'))} / {_pct_or_na(mo.get('specificity'))} | "
            f"{_pct_or_na(hm.get('sensitivity'))} / {_pct_or_na(hm.get('specificity'))} |"
        )
    return "\n".join(rows)


def render_spiculation_card(entry: ModelEntry) -> str:
    """Markdown model card of the spiculation model (metrics as models.train_spiculation stores them)."""
    m = entry.metrics
    prep = entry.preprocessing
    kwargs = entry.architecture.get("kwargs", {})
    status = "PROVISIONAL. " if entry.provisional else ""
    val = m.get("validation", {})
    calibration = val.get("calibration", {})
    history = m.get("history", [])
    device = m.get("device", "CPU, 2 threads")
    return f"""# Model card: {entry.name} {entry.version}

**{status}Trained on synthetic phantoms only. Not for clinical use.** Whether a measured nodule is spiculated
(Lung-RADS 4X), in place of the hand-made score of `models.measurement`; the workers store its probability in
`findings.spiculation` (setting `NIGHTSCAN_SPICULATION`; empty: the hand-made score).

## What it does

For each measured nodule (its segmentation's centre in the input volume's voxels z, y, x and its mean diameter in
mm), reads a scale-normalised cube around it and returns the probability (0..1, calibrated) that it is
spiculated; spiculated from {entry.score_threshold:g} on ({m.get("threshold_rule", "n/a")}).

- Preprocessing `{prep.version}`: a cube of side max({kwargs.get("min_side_mm", "n/a")} mm,
  {kwargs.get("side_radii", "n/a")} x radius) (spicules reach about 2.1 radii from the centre), sampled
  trilinearly in world mm on {kwargs.get("supersample", "n/a")} x {kwargs.get("patch_size", "n/a")} points per
  axis and box-averaged to {kwargs.get("patch_size", "n/a")}^3 voxels (so {prep.spacing_zyx_mm[0]:g} mm voxels up
  to a diameter of {2 * kwargs.get("min_side_mm", 0) / max(kwargs.get("side_radii", 1), 1e-9):.1f} mm, coarser
  above), air (-1000 HU) outside the volume, window {prep.window_hu[0]:g}..{prep.window_hu[1]:g} HU mapped to 0..1.
- Architecture: 3-D CNN, builder `{entry.architecture["builder"]}` with {kwargs}: two full-resolution 3x3x3
  convolutions, three stages that halve the grid and double the width, global average and max pooling, one
  logit; {m.get("n_parameters", "n/a")} parameters; random initialisation.
- Categories: {entry.categories} (the probability is the second's).
- Weights: `{entry.weights}` (state_dict), sha256 `{entry.sha256}`.

## Training data

{m.get("training_data", "n/a")}. Label: the phantom's truth (`NoduleTruth.spiculated`; ground glass never).
Each nodule is measured by `models.measurement.measure_nodule` from its true centre moved by a voxel, and the
patch cut around the measured centre with the measured diameter, as the worker does. Batches are half spiculated.
Augmentation: flips on every axis, 90-degree axial rotations, scaling 0.9..1.1, shifts up to a voxel, HU offset,
contrast and noise. Binary cross-entropy, AdamW with a one-cycle schedule; the best epoch by validation ROC AUC
(solid and part-solid >= 6 mm) is kept (epoch {m.get("best_epoch", "n/a")} of {len(history)}), then calibrated on
the validation nodules ({val.get("n_scans", "n/a")} scans, seeds {val.get("seeds", "n/a")}; Platt slope
{_num(calibration.get("slope"))}, intercept {_num(calibration.get("intercept"))}, folded into the last layer). On
validation, 0.5 gave {val.get("errors_at_0.5", "n/a")} errors against {val.get("fewest_errors", "n/a")} at the best
threshold ({_num(val.get("fewest_errors_threshold"), 2)}), and the hand-made score
{val.get("handmade_ge_6mm", {}).get("errors", "n/a")}.

## Measured performance (held-out synthetic phantoms), against the hand-made score

Test set: {m.get("dataset", "n/a")}. The same nodules for both; the model at {entry.score_threshold:g}, the
hand-made score at `SPICULATED_SCORE` (0.5). Nodules >= 6 mm that measuring missed (no spiculation stored for
either): {m.get("test_not_measured", "n/a")}.

{_BAND_HEADER}
{_band_rows(m.get("test_by_band", {}))}

Inference: {m.get("predict_seconds_per_nodule_cpu", "n/a")} s per nodule on the CPU; the test figures come from the
cached patches, which `SpiculationModel.predict` reproduces on a phantom drawn again (largest difference
{_num(m.get("inference_path_max_difference"), 6)}). Training {m.get("training_seconds", "n/a")} s ({device},
including drawing and measuring the phantoms, {m.get("data_seconds", "n/a")} s). Training curves:
`weights/{entry.name}-{entry.version}-curves.png`.

## Reproduce

    {entry.training_command}

`--patch-cache FILE` reads the patches from FILE if it exists (built with the same seed and counts), and writes
them there otherwise. Trained at {entry.trained_at}; torch {m.get("torch") or _torch_version()}.

## Limitations

- Synthetic spicules only: straight tapering strands of solid density, 5 to 9 per nodule, 0.5 to 1.1 radii long;
  real spiculation, lobulation, pleural tags and scars look different.
- Large nodules are read on coarser patch voxels (the side over {kwargs.get("patch_size", 32)}: up to
  {_largest_voxel_mm(kwargs):.1f} mm at 30 mm), where thin spicules fade: see the 15-30 mm band above. Each band
  holds few test nodules.
- The probability is calibrated to the phantoms' prevalence (a quarter of solid and part-solid nodules
  spiculated); another prevalence shifts it.
- Numbers above say the pipeline works, not that the model would work on patients.
"""


RENDERERS: dict[str, Callable[[ModelEntry], str]] = {
    "candidate_cnn_3d": render_classifier_card,
    "spiculation_cnn_3d": render_spiculation_card,
}
"""Card renderers by architecture builder; other builders get the detector's card (:func:`render_model_card`)."""


def render_card(entry: ModelEntry) -> str:
    """The Markdown card of any registered model."""
    return RENDERERS.get(entry.architecture.get("builder", ""), render_model_card)(entry)


def write_model_card(entry: ModelEntry, path: Path, *, registry_path: Path | None = None) -> Path:
    """Write the model card file `path`: the card of every model in the registry (`registry_path`, default the
    registry.json beside `path`), in registry order, with `entry` in place of its registered version (or last
    when it is not registered). Returns the path."""
    registry_path = registry_path or path.with_name("registry.json")
    entries = [entry if e.ref == entry.ref else e for e in list_entries(registry_path)]
    if entry.ref not in {e.ref for e in entries}:
        entries.append(entry)
    path.write_text("\n".join(render_card(e) for e in entries), encoding="utf-8")
    return path


def archive_summary(report: dict[str, Any], command: str) -> dict[str, Any]:
    """The model card's figures from a `nightscan models evaluate` report (see models.evaluate), with its command."""
    truth, det = report["truth"], report["detection"]
    options = truth.get("options") or {}
    classification = report.get("classification") or {}
    kind = classification.get("type") or {}
    timing = report["timing"]
    return {
        "command": command,
        "dataset": (
            f"{truth['n_studies']} studies with {truth['n_nodules']} nodules ({truth['n_nodules_ge_4mm']} of 4 mm "
            f"and more, {truth['n_nodules_ge_6mm']} of 6 mm and more), archive seed {truth['seed']}, "
            f"shape {options.get('shape_zyx', 'n/a')} at {options.get('spacing_zyx_mm', 'n/a')} mm"
        ),
        "ranked_by": det.get("ranked_by", "detector"),
        "classifier": report.get("classifier"),
        "detection": {
            **{
                key: {name: det[key][name] for name in ("n_nodules", "cpm", "sensitivity_at_1fp", "froc")}
                for key in det
                if key.startswith("ge_")
            },
            "fp_per_scan_at_threshold": det["fp_per_scan_at_threshold"],
            "sensitivity_by_size_at_threshold": det["sensitivity_by_size_at_threshold"],
        },
        "diameter": {k: report["diameter"][k] for k in ("source", "n_detected", "mae_mm_ge_4mm", "mae_mm_ge_6mm")},
        "type_accuracy": kind.get("accuracy"),
        "finding_type_accuracy": (report.get("finding_type") or {}).get("accuracy"),
        "timing": {
            "seconds_per_study": timing["seconds_per_study"],
            "load_detect_seconds_per_study": timing["load_seconds_per_study"] + timing["detect_seconds_per_study"],
        },
    }


def record_archive_evaluation(
    ref: str, label: str, report: dict[str, Any], command: str, *, registry_path: Path | None = None
) -> ModelEntry:
    """Store `report`'s summary in `ref`'s registry entry under metrics.archive_evaluation[`label`] and rewrite the
    model card beside the registry. Returns the updated entry."""
    from models.registry import REGISTRY_PATH, get_entry, register

    registry_path = registry_path or REGISTRY_PATH
    entry = get_entry(ref, registry_path)
    evaluations = dict(entry.metrics.get("archive_evaluation", {}))
    evaluations[label] = archive_summary(report, command)
    entry = replace(entry, metrics={**entry.metrics, "archive_evaluation": evaluations})
    register(entry, registry_path)
    write_model_card(entry, registry_path.parent / "MODEL_CARD.md", registry_path=registry_path)
    return entry
