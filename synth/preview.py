"""``nightscan synth --preview``: a PNG montage of written studies with the true nodules outlined.

For each study shown: the axial slice through each nodule (lung window) with the nodule's outline
and its track, type, size and Lung-RADS category, plus a coronal view of the whole scan. It reads
the DICOM objects back from the archive, so what it shows is what was written.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pydicom
from matplotlib.patches import Circle
from pydicom.pixels import apply_modality_lut

from synth.manifest import GroundTruth, StudyTruth

LUNG_WINDOW_HU = (-1200.0, 300.0)


def read_series(get: Callable[[str], bytes], study: StudyTruth) -> np.ndarray:
    """The study's CT series as HU (z, y, x), from its image objects sorted along the slice normal."""
    datasets = [pydicom.dcmread(io.BytesIO(get(o.key))) for o in study.objects if o.role == "image"]
    normal = np.cross(*np.reshape(np.asarray(datasets[0].ImageOrientationPatient, float), (2, 3)))
    datasets.sort(key=lambda ds: float(normal @ np.asarray(ds.ImagePositionPatient, float)))
    return np.stack([apply_modality_lut(ds.pixel_array, ds) for ds in datasets]).astype(np.float32)


def write_preview(get: Callable[[str], bytes], truth: GroundTruth, path: str | Path, *, max_studies: int = 4) -> Path:
    """Write the montage of up to ``max_studies`` studies (those with nodules first) to ``path``."""
    studies = sorted(truth.studies, key=lambda s: -len(s.nodules))[:max_studies]
    columns = 1 + max([len(s.nodules) for s in studies] + [1])
    fig, axes = plt.subplots(len(studies), columns, figsize=(3.2 * columns, 3.4 * len(studies)), squeeze=False)
    for row, study in zip(axes, studies, strict=True):
        hu = read_series(get, study)
        dz, dy, _ = study.spacing_zyx_mm
        coronal = hu[:, hu.shape[1] // 2, :][::-1]  # head up
        row[0].imshow(coronal, cmap="gray", vmin=LUNG_WINDOW_HU[0], vmax=LUNG_WINDOW_HU[1], aspect=dz / dy)
        row[0].set_title(f"{study.patient_id} {study.study_date}\ncoronal, Lung-RADS {study.lung_rads}", fontsize=8)
        for ax, nodule in zip(row[1:], study.nodules, strict=False):
            k, i, j = nodule.center_zyx_vox
            ax.imshow(hu[round(k)], cmap="gray", vmin=LUNG_WINDOW_HU[0], vmax=LUNG_WINDOW_HU[1])
            radius_px = nodule.diameter_mm / 2 / study.spacing_zyx_mm[2]
            ax.add_patch(Circle((j, i), radius_px + 2, fill=False, color="red", linewidth=1))
            label = f"{nodule.nodule_id} {nodule.kind} {nodule.lobe}"
            ax.set_title(f"{label}\n{nodule.diameter_mm} mm, Lung-RADS {nodule.lung_rads}", fontsize=8)
        for ax in row:
            ax.axis("off")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
