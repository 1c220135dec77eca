"""Turn detector candidates into findings: measured from a segmentation, scored by the classifier if any.

Each candidate's centre goes to patient coordinates (mm) through the volume's affine, and to the instance
(and frame) through it. :func:`models.measurement.measure_nodule` gives the Lung-RADS axes, the volume, the
type, the solid component and the spiculation score; where it finds no nodule at the centre, the finding keeps
the detector's box diameter and no measurements, and the reason is logged (without PHI).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from db.models import Finding
from models.candidates import Candidate
from models.measurement import NoduleMeasurement, measure_nodule
from workers.volume import Volume

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Classification:
    """What the candidate classifier says of one candidate: nodule probability (0 to 1) and type."""

    probability: float
    nodule_type: str


def describe_candidates(
    volume: Volume, candidates: Sequence[Candidate], classifications: Sequence[Classification] | None = None
) -> list[Finding]:
    """One :class:`Finding` per candidate, in the candidates' order, measured on ``volume``."""
    findings = []
    for n, candidate in enumerate(candidates):
        measurement = _measure(volume, candidate, n)
        classification = classifications[n] if classifications is not None else None
        findings.append(_finding(volume, candidate, measurement, classification))
    return findings


def _measure(volume: Volume, candidate: Candidate, n: int) -> NoduleMeasurement | None:
    try:
        return measure_nodule(
            volume.hu, volume.spacing_zyx_mm, candidate.center_zyx_vox, approx_diameter_mm=candidate.diameter_mm
        )
    except ValueError as exc:
        log.info("candidate %d not measured: %s", n, exc)
        return None


def _finding(
    volume: Volume,
    candidate: Candidate,
    measurement: NoduleMeasurement | None,
    classification: Classification | None,
) -> Finding:
    centre = measurement.center_zyx_vox if measurement is not None else candidate.center_zyx_vox
    x, y, z = volume.to_patient(centre)
    _, sop_instance_uid, frame_number = volume.source_of(centre[0])
    finding = Finding(
        label="nodule",
        score=float(candidate.score),
        center_x_mm=x,
        center_y_mm=y,
        center_z_mm=z,
        diameter_mm=round(float(candidate.diameter_mm), 1),
        extent_mm=[round(float(v), 1) for v in candidate.extent_zyx_mm],
        sop_instance_uid=sop_instance_uid,
        frame_number=frame_number,
    )
    if measurement is not None:
        finding.diameter_mm = measurement.mean_diameter_mm
        finding.long_axis_mm = measurement.long_axis_mm
        finding.short_axis_mm = measurement.short_axis_mm
        finding.volume_mm3 = round(measurement.volume_mm3, 1)
        finding.nodule_type = measurement.nodule_type.value
        finding.solid_component_mm = measurement.solid_component_mm
        finding.spiculation = measurement.spiculation
    if classification is not None:
        finding.probability = round(classification.probability, 4)
        finding.nodule_type = classification.nodule_type if measurement is None else finding.nodule_type
    return finding
