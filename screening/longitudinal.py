"""One patient over time, as pure functions: which candidates are nodules, lesions tracked across studies,
Lung-RADS per study, Brock per nodule, VDT per lesion, and the patient's summary.

Sources: REFERENCE.md sections 1 to 3. Centres are world (patient) coordinates in mm (x, y, z; DICOM LPS,
z towards the head); sizes in mm, volumes in mm3, intervals in days, probabilities 0 to 1.

Tracking, study by study in date order (:func:`follow_patient`):

- the first study's frame is the reference frame; every lesion keeps its last seen centre in that frame;
- each later study is aligned with the lesions seen so far (:func:`screening.alignment.align_studies`,
  starting from the difference of the lungs' centroids, :mod:`workers.lungs`, else of the scans' centres along
  the table), and its nodules are matched to them
  (Hungarian assignment within the size-scaled gate, :func:`screening.matching.match_nodules`);
- a matched nodule continues its lesion: a lesion missed in one study and seen again later keeps its
  identity, and its prior is its last observation; a lesion not seen in the latest study is ``resolved``;
- a known lesion that no nodule of the study matched is looked for among the study's candidates below the
  criteria, matched the same way: found there, that candidate is the lesion seen again and counts as a nodule
  (a reader looks where the prior CT showed a nodule; see :func:`_at_known_lesions`);
- an unmatched nodule is looked for in retrospect among the previous study's candidates that did not count
  as nodules (below the criteria, :class:`NoduleCriteria`), as a reader looks back at the prior CT: found
  there, it is not new, that candidate is its prior (with no prior category) and joins its lesion; otherwise
  it is new and starts a lesion;
- lesions are numbered 0, 1, ... in order of first sighting (the caller shows them as L1, L2, ...).

Lung-RADS per nodule: baseline at the first study, ``new`` for a new lesion at a follow-up, else follow-up
against its last observation (growth, size bands, stepping down from its last category); the exam takes its
most suspicious nodule (:func:`screening.lungrads.exam_category`).

Spiculation, where the finding gives it (:func:`measurement_from_finding`), makes a category 3 or 4 nodule 4X
and enters Brock. Spicules do not come and go, so a tracked lesion's spiculation is read from all its looks: the
mean log-odds of the spiculation probabilities of its observations so far, the current one included
(:func:`pooled_spiculated`), as a reader who saw spicules on the prior CT reads them into a blurred follow-up, and
one noisy look of a smooth lesion does not make it 4X. For the same reason a stable lesion keeps its last category
without the 4X when its looks together no longer read it spiculated (:func:`_carried_category`): the 4X came from
a reading that the looks so far outvote, and carrying it would keep one noisy look's 4X for good.

Inputs the findings cannot give are defaulted and listed in the study's ``assumptions``: spiculation where not
measured (0, so no 4X), family history and emphysema (Brock: 0), a missing type (solid), a missing solid component
of a part-solid nodule (its whole diameter), an unknown age (62 years, the model's centre) or sex (male), the lobe
(upper lobe from the position along the scan, see :func:`is_upper_lobe`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from screening._checks import boolean, positive
from screening.alignment import align_studies
from screening.brock import AGE_CENTRE_YEARS, AGE_RANGE_YEARS, brock_probability
from screening.growth import sphere_volume_mm3, vdt_range_days, volume_doubling_time_days
from screening.lungrads import NoduleHistory, exam_category, nodule_category
from screening.matching import LocatedNodule, Vector, match_nodules
from screening.types import LungRads, Measurement, NoduleType, round_mm

FOLLOW_UP_DAYS: dict[LungRads, int] = {
    LungRads.CAT1: 365,
    LungRads.CAT2: 365,
    LungRads.CAT3: 182,
    LungRads.CAT4A: 91,
    LungRads.CAT4B: 0,
    LungRads.CAT4X: 0,
}
"""Days from the study to the next step its category calls for: 12 months of annual screening (1, 2), an LDCT
in 6 months (3) or 3 months (4A); 4B and 4X call for a diagnostic work-up now (due on the study date)."""

UPPER_LOBE_FRACTION = 0.5
"""A nodule in the upper part of the scan range above this fraction (0 = lowest slice, 1 = top) counts as upper
lobe for Brock. The scan range is planned on the lungs, apex to bases, and the oblique fissures run from high
at the back to low at the front: on average the upper lobes fill the upper half of the lungs."""


SPICULATION_NOT_MEASURED = "spiculation not measured: not spiculated"
"""The entry of an observation's ``assumed`` when its finding carries no spiculation."""

SOLID_COMPONENT_FLOOR_MM = 3.0
"""A part-solid finding's solid component smaller than this (mm) is not trusted: the nodule counts as ground glass.
A core this small spans about two in-plane pixels (1.4 mm) and one or two 2.5 mm slices: its measured size says
little of the true one, and whether it is seen at all changes from one look to the next, which taken at face value
makes a lesion 4A ("new solid component < 4 mm") on a follow-up where only the reading changed. On 60 held-out
phantoms at the archives' grid (seeds [9400000, i], 6 nodules each, measured from their true centres moved by a
voxel), part-solid nodules with true cores of 2 to 3.5 mm measured part-solid gave components of 1.3 to 4.1 mm,
and ground-glass nodules gave false cores of 2.0 to 3.7 mm. The floor was 2.5 mm (the slice spacing) until
2026-11-27; on the seven evaluation archives (seeds 2027 to 2033) 2.75, 3.0 and 3.25 mm each agree with the truth on
3 more studies (2 on seed 2032, 1 on 2033, none lost), 3.5 mm loses 5 (seeds 2029 and 2031; see README)."""


SPICULATION_POOL_CLIP = 0.01
"""Spiculation probabilities are clipped to [0.01, 0.99] before their log-odds are pooled over a lesion's looks (at
most 4.6 each), so that no single confident reading outvotes the others."""

LOGIT_CLIP = 1e-6
"""Probabilities are clipped to [LOGIT_CLIP, 1 - LOGIT_CLIP] before their log-odds are taken (at most 13.8)."""


def log_odds(probability: float) -> float:
    """ln(p / (1 - p)) of ``probability`` (0 to 1), clipped to +-13.8."""
    p = min(max(probability, LOGIT_CLIP), 1.0 - LOGIT_CLIP)
    return math.log(p / (1.0 - p))


@dataclass(frozen=True)
class NoduleCriteria:
    """Which detector findings count as nodules: detector score (0 to 1), classifier probability (0 to 1) and
    mean diameter (mm) at least these, and the two models' evidence together, the sum of their log-odds, at least
    ``min_log_odds`` (None: not used). A finding with no probability (no classifier ran) or no score passes on the
    others (its sum counts the model that ran).

    The sum lets a strong classifier vouch for a detector score just under the bar, and the other way round: the
    detector's scores of small nodules sit lower than those of large ones."""

    min_probability: float = 0.5
    min_diameter_mm: float = 4.0
    min_score: float = 0.0
    min_log_odds: float | None = None

    def accepts(self, probability: float | None, diameter_mm: float, score: float | None = None) -> bool:
        """True when a finding of this classifier ``probability``, mean ``diameter_mm`` (mm) and detector
        ``score`` is a nodule."""
        if probability is not None and probability < self.min_probability:
            return False
        if score is not None and score < self.min_score:
            return False
        if self.min_log_odds is not None:
            evidence = sum(log_odds(p) for p in (probability, score) if p is not None)
            if evidence < self.min_log_odds:
                return False
        return diameter_mm >= self.min_diameter_mm


@dataclass(frozen=True, kw_only=True)
class Observation:
    """One nodule of one study as measured: ``key`` names it to the caller (a finding ID), ``centre_mm`` (x, y, z)
    in world coordinates, its Lung-RADS ``measurement``, its measured volume (mm3, None: use the sphere of its
    mean diameter), the defaults its measurement needed (``assumed``) and its ``spiculation`` probability (0 to 1;
    None: not measured), of which ``measurement.spiculated`` is the reading at 0.5 on this look alone."""

    key: int
    centre_mm: Vector
    measurement: Measurement
    volume_mm3: float | None = None
    assumed: tuple[str, ...] = ()
    spiculation: float | None = None


@dataclass(frozen=True, kw_only=True)
class StudyInput:
    """One study of the patient: ``key`` names it to the caller (an analysis ID), its date, its nodules, the
    patient's age (years) and sex then, the scan range along the table (z, mm, low and high; None unknown), and
    the ``candidates`` that did not count as nodules (looked at in retrospect by the next study), and the centroid of
    the lungs (x, y, z, mm; None unknown), where alignment starts."""

    key: int
    study_date: dt.date
    nodules: tuple[Observation, ...]
    age_years: float | None = None
    female: bool | None = None
    scan_range_z_mm: tuple[float, float] | None = None
    candidates: tuple[Observation, ...] = ()
    lung_centroid_mm: Vector | None = None


@dataclass(frozen=True)
class NoduleResult:
    """One nodule of one study: its lesion (index), Lung-RADS category and reason, Brock probability (None for
    benign-pattern nodules), VDT in days over the lesion's history up to this observation (from its first, or its
    first nodule look when a candidate seen in retrospect came before; None: first observation, or no finite VDT),
    whether the lesion is new at this study, the key of the previous study's candidate it was
    matched to in retrospect (None: not looked back), whether it is a candidate below the nodule criteria
    kept because it lies at the place of a known lesion (``at_known_lesion``), and the range of VDT (days, shortest
    and longest; longest None: growth within the measurements' noise) the two volumes allow
    (:func:`screening.growth.vdt_range_days`; None where ``vdt_days`` is None)."""

    key: int
    lesion: int
    category: LungRads
    reason: str
    brock_probability: float | None
    vdt_days: float | None
    new: bool
    retrospective: int | None = None
    at_known_lesion: bool = False
    vdt_range_days: tuple[float, float | None] | None = None


@dataclass(frozen=True)
class StudyResult:
    """One study assessed: category and reason, nodules, highest Brock, shortest VDT (days), next step due,
    the translation (mm, reference frame to this study) and how it was found, and the assumptions made."""

    key: int
    study_date: dt.date
    category: LungRads
    reason: str
    nodules: tuple[NoduleResult, ...]
    brock_max: float | None
    vdt_min_days: float | None
    follow_up_due: dt.date
    translation_mm: Vector
    alignment: str
    assumptions: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class LesionResult:
    """One lesion over the patient's studies: (study index, nodule key) of each observation, whether it is in the
    latest study (``present``) or not (``resolved``), its latest type, size (mm) and Brock probability, and its VDT
    (days) from its first observation to its latest (from its first nodule look when it began as a candidate seen in
    retrospect and was seen as a nodule twice since; None: seen once, or no finite VDT), with the range of VDT
    (days, shortest and longest) the two volumes allow (:func:`screening.growth.vdt_range_days`; longest None: the
    growth lies within the noise of the two measurements, so is not shown)."""

    index: int
    observations: tuple[tuple[int, int], ...]
    status: str
    nodule_type: NoduleType
    first_seen: dt.date
    last_seen: dt.date
    diameter_mm: float
    vdt_days: float | None
    brock_probability: float | None
    vdt_range_days: tuple[float, float | None] | None = None


@dataclass(frozen=True)
class PatientResult:
    """Every study assessed, every lesion, and the summary: the latest study's category, Brock maximum and next
    step due; the shortest VDT (days) of a present lesion; the number of present lesions."""

    studies: tuple[StudyResult, ...]
    lesions: tuple[LesionResult, ...]

    @property
    def latest(self) -> StudyResult:
        """The latest study (ValueError when there is none)."""
        if not self.studies:
            raise ValueError("no studies were assessed")
        return self.studies[-1]

    @property
    def present(self) -> tuple[LesionResult, ...]:
        """Lesions seen in the latest study."""
        return tuple(lesion for lesion in self.lesions if lesion.status == PRESENT)

    @property
    def vdt_min_days(self) -> float | None:
        """The shortest finite VDT (days) among present lesions; None when none has one."""
        values = [lesion.vdt_days for lesion in self.present if lesion.vdt_days is not None]
        return min(values) if values else None


PRESENT = "present"
RESOLVED = "resolved"


def measurement_from_finding(
    *,
    nodule_type: str | None,
    diameter_mm: float,
    long_axis_mm: float | None = None,
    short_axis_mm: float | None = None,
    solid_component_mm: float | None = None,
    spiculated: bool | None = None,
) -> tuple[Measurement, tuple[str, ...]]:
    """A Lung-RADS measurement from a finding's columns (mm), and the defaults it needed.

    A missing type is taken as solid; axes that do not give ``diameter_mm`` as their mean are dropped (the mean
    diameter stands); a part-solid nodule without a solid component takes its whole diameter as solid; a solid
    component below :data:`SOLID_COMPONENT_FLOOR_MM` makes the nodule ground glass; a solid component is dropped
    for other types and capped at the mean diameter. ``spiculated`` None (not measured) counts as not spiculated
    (no 4X, Brock spiculation 0) and is listed.
    """
    assumed: list[str] = []
    mean = round_mm(positive(diameter_mm, "diameter_mm"))
    kind = NoduleType(nodule_type) if nodule_type else None
    if kind is None:
        kind = NoduleType.SOLID
        assumed.append("nodule_type unknown: solid")
    solid: float | None = None
    if spiculated is None:
        spiculated = False
        assumed.append(SPICULATION_NOT_MEASURED)
    spiculated = boolean(spiculated, "spiculated")
    if kind is NoduleType.PART_SOLID:
        if solid_component_mm is None or solid_component_mm <= 0:
            solid = mean
            assumed.append("solid component unknown: the whole diameter")
        elif solid_component_mm < SOLID_COMPONENT_FLOOR_MM:
            kind = NoduleType.GROUND_GLASS
            assumed.append(
                f"solid component {solid_component_mm:.1f} mm below {SOLID_COMPONENT_FLOOR_MM:g} mm: ground glass"
            )
        else:
            solid = min(round_mm(solid_component_mm), mean)
    if long_axis_mm is not None and short_axis_mm is not None and 0 < short_axis_mm <= long_axis_mm:
        try:
            measured = Measurement(
                nodule_type=kind,
                mean_diameter_mm=mean,
                long_axis_mm=long_axis_mm,
                short_axis_mm=short_axis_mm,
                solid_component_mm=solid,
                spiculated=spiculated,
            )
            return measured, tuple(assumed)
        except ValueError:
            pass
    return Measurement.from_mean_diameter(kind, mean, solid_component_mm=solid, spiculated=spiculated), tuple(assumed)


def same_nodule(a: Observation, b: Observation) -> bool:
    """True when two findings of one study are one nodule: their centres lie closer than half the larger mean
    diameter (mm), so their spheres would overlap past each other's centre. Two distinct nodules cannot; a
    detector's duplicate candidates, re-centred on the same nodule by the measurement, do."""
    larger = max(a.measurement.mean_diameter_mm, b.measurement.mean_diameter_mm)
    return math.dist(a.centre_mm, b.centre_mm) < larger / 2


def is_upper_lobe(z_mm: float, scan_range_z_mm: tuple[float, float]) -> bool:
    """True when ``z_mm`` lies above :data:`UPPER_LOBE_FRACTION` of the scan range (z low, high; mm)."""
    low, high = sorted(scan_range_z_mm)
    if high <= low:
        raise ValueError(f"scan_range_z_mm must span a length, got {scan_range_z_mm!r}")
    return (z_mm - low) / (high - low) > UPPER_LOBE_FRACTION


@dataclass
class _Lesion:
    """A lesion while tracking: its centre in the reference frame, its observations and its last state."""

    index: int
    centre_mm: Vector
    observations: list[tuple[int, Observation]]
    category: LungRads
    before_features: LungRads | None = None  # for a 4X, its category before spiculation made it 4X
    brock: float | None = None
    vdt_days: float | None = None
    vdt_range_days: tuple[float, float | None] | None = None
    retrospective_first: bool = False  # its first observation is a candidate below the criteria, seen in retrospect

    @property
    def last(self) -> tuple[int, Observation]:
        return self.observations[-1]

    def growth_start(self) -> tuple[int, Observation]:
        """The observation its VDT starts from: the first, unless that is a candidate seen in retrospect and a
        nodule observation follows it before the latest (a candidate below the criteria is measured with less
        confidence, often small, where a voxel's share moves the volume most; it serves when nothing else
        does)."""
        if self.retrospective_first and len(self.observations) > 2:
            return self.observations[1]
        return self.observations[0]


def _carried_category(lesion: _Lesion, nodule: Observation) -> LungRads:
    """The prior category that ``lesion``, seen again as ``nodule`` (its spiculation read from all its looks), keeps
    when stable: its last category, but a 4X that the looks no longer read spiculated goes back to the category it
    had before the spiculation (3, 4A or 4B), which then steps down or stands as usual."""
    if lesion.category is LungRads.CAT4X and not nodule.measurement.spiculated and lesion.before_features is not None:
        return lesion.before_features
    return lesion.category


def follow_patient(studies: Sequence[StudyInput]) -> PatientResult:
    """Track the patient's nodules over ``studies`` and assess every study (see the module docstring).

    Studies are taken in date order (then key order); two on the same day are taken as one day apart.
    """
    ordered = sorted(studies, key=lambda study: (study.study_date, study.key))
    lesions: list[_Lesion] = []
    results: list[StudyResult] = []
    for index, study in enumerate(ordered):
        previous = results[-1].translation_mm if results else (0.0, 0.0, 0.0)
        results.append(_assess_study(index, study, ordered, lesions, previous))
    latest = len(ordered) - 1
    return PatientResult(
        studies=tuple(results), lesions=tuple(_lesion_result(lesion, ordered, latest) for lesion in lesions)
    )


def _assess_study(
    index: int, study: StudyInput, ordered: Sequence[StudyInput], lesions: list[_Lesion], previous_mm: Vector
) -> StudyResult:
    assumptions: dict[str, object] = {}
    nodules = study.nodules
    first = ordered[0]
    initial = (0.0, 0.0, 0.0)
    if index and study.lung_centroid_mm is not None and first.lung_centroid_mm is not None:
        initial = (
            study.lung_centroid_mm[0] - first.lung_centroid_mm[0],
            study.lung_centroid_mm[1] - first.lung_centroid_mm[1],
            study.lung_centroid_mm[2] - first.lung_centroid_mm[2],
        )
    elif index and study.scan_range_z_mm is not None and first.scan_range_z_mm is not None:
        initial = (0.0, 0.0, sum(study.scan_range_z_mm) / 2 - sum(first.scan_range_z_mm) / 2)
        assumptions["alignment_start"] = "lung centroid unknown: the scan range's shift along the table"
    elif index:
        assumptions["alignment_start"] = "lung centroid and scan range unknown: no shift assumed"
    known = [LocatedNodule(lesion.centre_mm, lesion.last[1].measurement.mean_diameter_mm) for lesion in lesions]
    current = [LocatedNodule(nodule.centre_mm, nodule.measurement.mean_diameter_mm) for nodule in nodules]
    alignment = align_studies(current, known, initial_mm=initial)
    translation = alignment.translation_mm
    matched = {pair.current_index: lesions[pair.prior_index] for pair in alignment.match.pairs}
    carried = _at_known_lesions(study, matched, lesions, translation)  # none at the first study: no lesions yet
    for candidate, lesion in carried:
        matched[len(nodules)] = lesion
        nodules = (*nodules, candidate)
    retro = _look_back(index, nodules, matched, ordered, translation, previous_mm, lesions)
    nodules = tuple(_with_pooled_spiculation(nodule, matched.get(n), retro.get(n)) for n, nodule in enumerate(nodules))

    histories: list[NoduleHistory] = []
    priors: list[tuple[StudyInput, Observation, _Lesion | None] | None] = []
    same_day = False
    for n, nodule in enumerate(nodules):
        lesion = matched.get(n)
        if index == 0:
            histories.append(NoduleHistory.at_baseline(nodule.measurement))
            priors.append(None)
        elif n in retro:
            before = ordered[index - 1]
            interval = max(1, (study.study_date - before.study_date).days)
            same_day = same_day or study.study_date == before.study_date
            histories.append(NoduleHistory.at_follow_up(nodule.measurement, retro[n].measurement, float(interval)))
            priors.append((before, retro[n], None))
        elif lesion is None:
            histories.append(NoduleHistory.new_at_follow_up(nodule.measurement))
            priors.append(None)
        else:
            prior_index, prior = lesion.last
            interval = (study.study_date - ordered[prior_index].study_date).days
            if interval <= 0:
                interval, same_day = 1, True
            histories.append(
                NoduleHistory.at_follow_up(
                    nodule.measurement, prior.measurement, float(interval), _carried_category(lesion, nodule)
                )
            )
            priors.append((ordered[prior_index], prior, lesion))
    if same_day:
        assumptions["interval"] = "a prior study on the same day: taken as 1 day earlier"

    age, female = study.age_years, study.female
    if age is None or not AGE_RANGE_YEARS[0] <= age <= AGE_RANGE_YEARS[1]:
        assumptions["age_years"] = f"unknown ({age!r}): {AGE_CENTRE_YEARS:g}"
        age = AGE_CENTRE_YEARS
    if female is None:
        assumptions["sex"] = "unknown: male"
        female = False
    if nodules:
        unmeasured = sum(SPICULATION_NOT_MEASURED in nodule.assumed for nodule in nodules)
        if unmeasured:
            assumptions["spiculation"] = f"not measured for {unmeasured} of {len(nodules)} nodule(s): 0 (no 4X)"
        if study.scan_range_z_mm is None:
            assumptions["upper_lobe"] = "scan range unknown: 0"
        else:
            assumptions["upper_lobe"] = f"from the position: above {UPPER_LOBE_FRACTION:g} of the scan range"
    measured = sorted({text for nodule in nodules for text in nodule.assumed} - {SPICULATION_NOT_MEASURED})
    if measured:
        assumptions["measurement"] = measured

    results: list[NoduleResult] = []
    defaulted: set[str] = set()
    for n, (nodule, history) in enumerate(zip(nodules, histories, strict=True)):
        assessment = nodule_category(history)
        brock = None
        if nodule.measurement.nodule_type is not NoduleType.CALCIFIED:
            upper = (
                is_upper_lobe(nodule.centre_mm[2], study.scan_range_z_mm)
                if study.scan_range_z_mm is not None
                else False
            )
            outcome = brock_probability(
                age_years=age,
                female=female,
                diameter_mm=nodule.measurement.mean_diameter_mm,
                nodule_type=nodule.measurement.nodule_type,
                upper_lobe=upper,
                nodule_count=len(nodules),
                spiculation=nodule.measurement.spiculated,
            )
            brock = outcome.probability
            defaulted.update(outcome.defaulted)
        prior = priors[n]
        lesion = matched.get(n)
        if lesion is None:
            centre = tuple(c - t for c, t in zip(nodule.centre_mm, translation, strict=True))
            lesion = _Lesion(len(lesions), (centre[0], centre[1], centre[2]), [], assessment.category)
            if n in retro:
                lesion.observations.append((index - 1, retro[n]))
                lesion.retrospective_first = True
            lesions.append(lesion)
        else:
            lesion.centre_mm = (
                nodule.centre_mm[0] - translation[0],
                nodule.centre_mm[1] - translation[1],
                nodule.centre_mm[2] - translation[2],
            )
        lesion.observations.append((index, nodule))
        vdt = vdt_range = None
        if prior is not None:  # over the lesion's history: the longest span, the least noise of measurement
            first_index, first_seen = lesion.growth_start()
            span = max(1, (study.study_date - ordered[first_index].study_date).days)
            vdt = volume_doubling_time_days(_volume(first_seen), _volume(nodule), float(span))
            vdt_range = vdt_range_days(
                _volume(first_seen),
                _volume(nodule),
                float(span),
                first_seen.measurement.mean_diameter_mm,
                nodule.measurement.mean_diameter_mm,
            )
        if assessment.category is not LungRads.CAT4X or assessment.before_features is not None:
            lesion.before_features = assessment.before_features  # a 4X carried as such keeps the category under it
        lesion.category, lesion.brock = assessment.category, brock
        lesion.vdt_days, lesion.vdt_range_days = vdt, vdt_range
        reason = assessment.reason
        if n in retro:
            reason += " (its prior: a candidate of the previous study below the nodule criteria, seen in retrospect)"
        if n >= len(study.nodules):
            reason += " (a candidate below the nodule criteria at the place of a known lesion)"
        results.append(
            NoduleResult(
                key=nodule.key,
                lesion=lesion.index,
                category=assessment.category,
                reason=reason,
                brock_probability=brock,
                vdt_days=vdt,
                new=index > 0 and prior is None,
                retrospective=retro[n].key if n in retro else None,
                at_known_lesion=n >= len(study.nodules),
                vdt_range_days=vdt_range,
            )
        )
    if defaulted:
        assumptions["brock_defaulted"] = sorted(defaulted)
    if retro:
        assumptions["retrospective"] = f"{len(retro)} nodule(s) found in retrospect on the previous study"
    if carried:
        assumptions["at_known_lesions"] = (
            f"{len(carried)} candidate(s) below the nodule criteria kept at the place of a known lesion"
        )
    exam = exam_category(histories)
    reason = exam.reason
    if nodules and index:
        reason += f" [aligned: {alignment.method}, {len(alignment.match.pairs)} of {len(nodules)} nodule(s) matched]"
    brocks = [r.brock_probability for r in results if r.brock_probability is not None]
    vdts = [r.vdt_days for r in results if r.vdt_days is not None]
    return StudyResult(
        key=study.key,
        study_date=study.study_date,
        category=exam.category,
        reason=reason,
        nodules=tuple(results),
        brock_max=max(brocks) if brocks else None,
        vdt_min_days=min(vdts) if vdts else None,
        follow_up_due=study.study_date + dt.timedelta(days=FOLLOW_UP_DAYS[exam.category]),
        translation_mm=translation,
        alignment=alignment.method,
        assumptions=assumptions,
    )


def pooled_spiculated(probabilities: Sequence[float]) -> bool:
    """True when the mean log-odds of ``probabilities`` (0 to 1, each clipped to :data:`SPICULATION_POOL_CLIP`)
    is at least 0: one lesion's spiculation probabilities over its looks, read together at 0.5."""
    if not probabilities:
        raise ValueError("pooled_spiculated needs at least one probability")
    clip = SPICULATION_POOL_CLIP
    pooled = sum(log_odds(min(max(p, clip), 1.0 - clip)) for p in probabilities) / len(probabilities)
    return pooled >= 0.0


def _with_pooled_spiculation(nodule: Observation, lesion: _Lesion | None, retro: Observation | None) -> Observation:
    """``nodule`` with its spiculation read from every look at its lesion so far (:func:`pooled_spiculated`):
    the lesion's observations, or the candidate it was found on in retrospect, and itself. Unchanged when this
    look or every earlier one has no spiculation."""
    if nodule.spiculation is None:
        return nodule
    earlier = [obs for _, obs in lesion.observations] if lesion is not None else [retro] if retro is not None else []
    scores = [obs.spiculation for obs in earlier if obs.spiculation is not None]
    if not scores:
        return nodule
    spiculated = pooled_spiculated([*scores, nodule.spiculation])
    if spiculated == nodule.measurement.spiculated:
        return nodule
    return dataclasses.replace(nodule, measurement=dataclasses.replace(nodule.measurement, spiculated=spiculated))


def _at_known_lesions(
    study: StudyInput, matched: dict[int, _Lesion], lesions: Sequence[_Lesion], translation_mm: Vector
) -> list[tuple[Observation, _Lesion]]:
    """Candidates of ``study`` (findings below the nodule criteria) at the place of a known lesion that none of its
    nodules matched, each with that lesion: a reader who knows where the prior CT showed a nodule looks there, and
    a finding at that place is the nodule seen again, not a new suspicion that must stand on its own evidence.
    Matched as nodules are (:func:`screening.matching.match_nodules`, the size-scaled gate around the lesion's last
    centre); ``translation_mm`` brings the reference frame to this study's."""
    taken = {id(lesion) for lesion in matched.values()}
    unmatched = [lesion for lesion in lesions if id(lesion) not in taken]
    if not unmatched or not study.candidates:
        return []
    match = match_nodules(
        [LocatedNodule(c.centre_mm, c.measurement.mean_diameter_mm) for c in study.candidates],
        [LocatedNodule(lesion.centre_mm, lesion.last[1].measurement.mean_diameter_mm) for lesion in unmatched],
        translation_mm=translation_mm,
    )
    pairs = sorted(match.pairs, key=lambda pair: pair.current_index)
    return [(study.candidates[pair.current_index], unmatched[pair.prior_index]) for pair in pairs]


def _look_back(
    index: int,
    nodules: Sequence[Observation],
    matched: dict[int, _Lesion],
    ordered: Sequence[StudyInput],
    translation_mm: Vector,
    previous_mm: Vector,
    lesions: Sequence[_Lesion],
) -> dict[int, Observation]:
    """Nodules of study ``index`` that match no lesion but a candidate of the previous study (one not already
    kept at a known lesion): nodule index -> that candidate. ``translation_mm`` and ``previous_mm`` bring the
    reference frame to this and the previous study's frames, so their difference brings the previous study's
    centres into this one's."""
    if index == 0:
        return {}
    unmatched = [n for n in range(len(nodules)) if n not in matched]
    observed = {observation.key for lesion in lesions for _, observation in lesion.observations}
    candidates = [c for c in ordered[index - 1].candidates if c.key not in observed]
    if not unmatched or not candidates:
        return {}
    shift = (
        translation_mm[0] - previous_mm[0],
        translation_mm[1] - previous_mm[1],
        translation_mm[2] - previous_mm[2],
    )
    match = match_nodules(
        [LocatedNodule(nodules[n].centre_mm, nodules[n].measurement.mean_diameter_mm) for n in unmatched],
        [LocatedNodule(c.centre_mm, c.measurement.mean_diameter_mm) for c in candidates],
        translation_mm=shift,
    )
    return {unmatched[pair.current_index]: candidates[pair.prior_index] for pair in match.pairs}


def _volume(nodule: Observation) -> float:
    """The nodule's measured volume (mm3), else that of the sphere of its mean diameter."""
    if nodule.volume_mm3 is not None and nodule.volume_mm3 > 0:
        return nodule.volume_mm3
    return sphere_volume_mm3(nodule.measurement.mean_diameter_mm)


def _lesion_result(lesion: _Lesion, ordered: Sequence[StudyInput], latest: int) -> LesionResult:
    first_index, _ = lesion.observations[0]
    last_index, last = lesion.observations[-1]
    return LesionResult(
        index=lesion.index,
        observations=tuple((study_index, nodule.key) for study_index, nodule in lesion.observations),
        status=PRESENT if last_index == latest else RESOLVED,
        nodule_type=last.measurement.nodule_type,
        first_seen=ordered[first_index].study_date,
        last_seen=ordered[last_index].study_date,
        diameter_mm=last.measurement.mean_diameter_mm,
        vdt_days=lesion.vdt_days,
        brock_probability=lesion.brock,
        vdt_range_days=lesion.vdt_range_days,
    )
