"""Turn detector candidates into findings: measured from a segmentation, scored by the classifier if any.

Each candidate's centre goes to patient coordinates (mm) through the volume's affine, and to the instance
(and frame) through it. :func:`models.measurement.measure_nodule` gives the Lung-RADS axes, the volume, the
type and the solid component; where it finds no nodule at the centre, the finding keeps the detector's box
diameter and no measurements, and the reason is logged (without PHI). The spiculation of a measured finding
(0..1, spiculated from :data:`models.measurement.SPICULATED_SCORE`) is the spiculation model's probability
(:class:`models.spiculation.SpiculationModel`, at the measured centre and mean diameter) when one is given,
raised to the hand-made score of the second-longest spicule for nodules of 15 mm and more
(:func:`models.spiculation.large_nodule_spiculation`), else the measurement's hand-made score; an unmeasured
finding has none.

The measurement types a nodule from the HU of its voxels, which a small nodule has few of: partial volume at the
edge of a small solid nodule can pass for a ground-glass shell, and measured part-solid its boundary moves out to
the ground-glass level (on the evaluation archives, solid nodules of 3.5 to 6.8 mm measured part-solid at 4.7 to
8.6 mm). A nodule measured part-solid under :data:`AS_SOLID_BELOW_MM` that the candidate classifier types solid
with at least :data:`AS_SOLID_PROBABILITY` is measured again as solid.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from db.models import Finding
from models.candidates import Candidate
from models.measurement import NoduleMeasurement, measure_nodule
from models.spiculation import large_nodule_spiculation
from screening.types import NoduleType
from workers.volume import Volume

if TYPE_CHECKING:
    from models.spiculation import SpiculationModel

log = logging.getLogger(__name__)


AS_SOLID_PROBABILITY = 0.95
"""The classifier's probability (0 to 1) of the solid type from which a small nodule measured part-solid is measured
as solid. On 240 phantoms at the archives' grid (seeds [9100000, i], a third of the nodules of each type), of the
nodules measured part-solid under 10 mm it took all 20 solid ones and 13 of 92 part-solid or ground-glass ones;
screening nodules are mostly solid (about four in five on the evaluation archives)."""
AS_SOLID_BELOW_MM = 10.0
"""Mean diameter (mm) under which a nodule measured part-solid may be measured again as solid (see above)."""


@dataclass(frozen=True, slots=True)
class Classification:
    """What the candidate classifier says of one candidate: nodule probability (0 to 1), type, and the probability
    of the solid type (0 to 1; None: not given)."""

    probability: float
    nodule_type: str
    solid_probability: float | None = None


def describe_candidates(
    volume: Volume,
    candidates: Sequence[Candidate],
    classifications: Sequence[Classification] | None = None,
    *,
    spiculation: SpiculationModel | None = None,
    stages_s: dict[str, float] | None = None,
) -> list[Finding]:
    """One :class:`Finding` per candidate, in the candidates' order, measured on ``volume``.

    ``spiculation``: the model whose probability (rounded to 3 decimals; from 15 mm on at least the hand-made
    score of the second-longest spicule) becomes each measured finding's spiculation; None: the measurement's
    hand-made score. ``stages_s``, when given, receives the seconds the model took under "spiculation".
    """
    measurements = [
        _measure(volume, candidate, n, classifications[n] if classifications is not None else None)
        for n, candidate in enumerate(candidates)
    ]
    scores = [m.spiculation if m is not None else None for m in measurements]
    if spiculation is not None:
        start = time.perf_counter()
        measured = [(n, m) for n, m in enumerate(measurements) if m is not None]
        probabilities = spiculation.predict(
            volume.hu, volume.spacing_zyx_mm, [(m.center_zyx_vox, m.mean_diameter_mm) for _, m in measured]
        )
        for (n, measurement), probability in zip(measured, probabilities, strict=True):
            scores[n] = round(large_nodule_spiculation(probability, measurement), 3)
        if stages_s is not None:
            stages_s["spiculation"] = time.perf_counter() - start
    findings = []
    for n, (candidate, measurement) in enumerate(zip(candidates, measurements, strict=True)):
        classification = classifications[n] if classifications is not None else None
        findings.append(_finding(volume, candidate, measurement, classification, scores[n]))
    return findings


def _measure(
    volume: Volume, candidate: Candidate, n: int, classification: Classification | None
) -> NoduleMeasurement | None:
    """The candidate's measurement (None: no nodule there, logged), measured as solid where the classifier's type
    outweighs the measurement's (see the module docstring)."""

    def measure(as_solid: bool) -> NoduleMeasurement:
        return measure_nodule(
            volume.hu,
            volume.spacing_zyx_mm,
            candidate.center_zyx_vox,
            approx_diameter_mm=candidate.diameter_mm,
            as_solid=as_solid,
        )

    try:
        measured = measure(as_solid=False)
    except ValueError as exc:
        log.info("candidate %d not measured: %s", n, exc)
        return None
    if not _measure_as_solid(measured, classification):
        return measured
    try:
        return measure(as_solid=True)
    except ValueError as exc:
        log.info("candidate %d not measured as solid, kept as part-solid: %s", n, exc)
        return measured


def _measure_as_solid(measured: NoduleMeasurement, classification: Classification | None) -> bool:
    """True for a nodule measured part-solid under AS_SOLID_BELOW_MM that the classifier types solid with at least
    AS_SOLID_PROBABILITY."""
    return (
        measured.nodule_type is NoduleType.PART_SOLID
        and measured.mean_diameter_mm < AS_SOLID_BELOW_MM
        and classification is not None
        and classification.solid_probability is not None
        and classification.solid_probability >= AS_SOLID_PROBABILITY
    )


def _finding(
    volume: Volume,
    candidate: Candidate,
    measurement: NoduleMeasurement | None,
    classification: Classification | None,
    spiculation: float | None,
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
        finding.spiculation = spiculation
    if classification is not None:
        finding.probability = round(classification.probability, 4)
        finding.nodule_type = classification.nodule_type if measurement is None else finding.nodule_type
    return finding
