"""Where the lungs are: the centroid of the air inside the body, a landmark to align a patient's studies.

Patients lie differently at each study: on the synthetic archives up to 24 mm apart across the table and 40 mm
along it. The nodules alone cannot align a study that has none (or only candidates below the nodule criteria),
and the scan range gives the shift along the table only. The lungs' centroid moves with the patient: on the 41
nodule pairs of the first 45 studies of seed 2029, centroid differences predicted the nodules' displacement to
2.7 mm (median; 6.3 mm at most) where the scan range's centre left 12.4 mm (21.4 mm at most), the matching gate
being 10 mm (a one-off check, not kept). :func:`screening.longitudinal.follow_patient` starts its alignment there.
"""

from __future__ import annotations

import logging

import numpy as np
from scipy import ndimage

from workers.volume import Volume

log = logging.getLogger(__name__)

AIR_HU = -400.0
"""Voxels below this (HU) are air: lung parenchyma (about -850 HU) and the air around the body."""

MIN_LUNG_ML = 50.0
"""Air components smaller than this (ml) are not lung: bowel gas, the trachea cut by the scan's edge, noise."""

IN_PLANE_STEP = 2
"""Every this many pixels along y and x are looked at (a quarter of the voxels at 2): the centroid of some three
litres of lung moves by well under a millimetre, and the labelling takes a quarter of the time."""


def lung_centroid_mm(volume: Volume) -> tuple[float, float, float] | None:
    """The centroid (x, y, z; mm, patient coordinates) of the air inside the body: every connected component below
    :data:`AIR_HU` of at least :data:`MIN_LUNG_ML` that does not reach a corner of the slices (the air around the
    body does), on every :data:`IN_PLANE_STEP`-th pixel. None when there is none (a volume that shows no lungs), or
    when one reaches the edge of the slices (lungs cut by a small field of view: the centroid of what is left would
    move with the cut, not with the patient). About 0.025 s for 100 x 256 x 256 voxels on this 2-core machine."""
    step = IN_PLANE_STEP
    air = volume.hu[:, ::step, ::step] < AIR_HU
    labels, count = ndimage.label(air)
    if count == 0:
        return None
    corners = np.concatenate([labels[:, 0, 0], labels[:, 0, -1], labels[:, -1, 0], labels[:, -1, -1]])
    outside = set(np.unique(corners).tolist()) - {0}
    edges = np.concatenate(
        [labels[:, 0, :].ravel(), labels[:, -1, :].ravel(), labels[:, :, 0].ravel(), labels[:, :, -1].ravel()]
    )
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    voxel_ml = float(np.prod(volume.spacing_zyx_mm)) * step * step / 1000.0
    lungs = [label for label in range(1, count + 1) if label not in outside and sizes[label] * voxel_ml >= MIN_LUNG_ML]
    if not lungs:
        log.info("no air inside the body of %s ml or more: no lung centroid", MIN_LUNG_ML)
        return None
    if set(lungs) & set(np.unique(edges).tolist()):
        log.info("the lungs reach the edge of the field of view: no lung centroid (what is cut off would move it)")
        return None
    mask = np.isin(labels, lungs)
    k, i, j = (float(v) for v in ndimage.center_of_mass(mask))
    x, y, z = volume.to_patient((k, i * step, j * step))
    return round(x, 1), round(y, 1), round(z, 1)
