"""The per-patient longitudinal step: one patient's studies for one model, tracked and assessed, written back.

Runs after each analysis that ends done (task ``nightscan.update_patient`` on the cpu queue) and on demand
(``nightscan follow-up``). In one transaction, holding the patient's lock: read the patient's done analyses for
the model with their findings (:mod:`db.longitudinal`), keep the findings that are nodules
(:data:`NODULE_CRITERIA`), track and assess them (:func:`screening.longitudinal.follow_patient`), and replace the
patient's lesions, assessments and status for that model, changing only what differs. Running it again on the
same findings changes nothing; other models' rows are never touched.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

from sqlalchemy.orm import Session, sessionmaker

from db.engine import transaction
from db.longitudinal import (
    AssessmentWrite,
    LesionWrite,
    PatientRows,
    StatusWrite,
    StudyRow,
    WriteCounts,
    load_patient,
    lock_patient,
    write_patient,
)
from models.measurement import SPICULATED_SCORE
from screening.longitudinal import (
    NoduleCriteria,
    Observation,
    PatientResult,
    StudyInput,
    follow_patient,
    measurement_from_finding,
    same_nodule,
)

log = logging.getLogger(__name__)

NODULE_CRITERIA = NoduleCriteria(min_score=0.0, min_probability=0.0, min_diameter_mm=3.0, min_log_odds=7.0)
"""Findings that count as nodules: the detector's and the classifier's evidence together, ln(s / (1 - s)) +
ln(p / (1 - p)) >= 7 (for example score 0.99 with probability 0.92, or score 0.9 with probability 0.992), and
3 mm or more.

Chosen on the synthetic longitudinal archive of seed 2027 (``nightscan follow-up evaluate``, 150 studies), as the
workers now run (detector 0.3.0, classifier 0.3.0, findings from score 0.05 that the classifier vouches for,
:attr:`nightscan.settings.Settings.finding_min_score`): the best Lung-RADS agreement of the sweep, 135 studies,
which log-odds 4 to 7 all give, with the fewest false positives kept (3; log-odds 8: 134 studies, 2). On seed 2028
it gives 135 (log-odds 8: 136); on seed 2029, drawn after the choice, see bench/results/longitudinal_eval*.json.
Summed over seeds 2027 to 2030 (with the lungs' alignment and candidates at known lesions), no criteria of the
sweep do better (535 of 600 studies; log-odds 6 ties), nor since small nodules measured part-solid that the
classifier types solid are measured as solid (540 of 600; log-odds 6 ties).
Log-odds 8 was the choice of the same sweep with classifier 0.2.0 and findings from the detector's threshold. The
detector scores small nodules lower than large ones, and the sum lets a confident classifier keep them. Findings
left out still serve as candidates: seen in retrospect by the next study, or as a known lesion seen again."""

INCOMPLETE = "0"
"""The Lung-RADS value stored for a study that cannot be assessed (here: it has no study date)."""


@dataclass(frozen=True, slots=True)
class FollowUpReport:
    """What one run of the step did for one patient and model: studies, nodules kept, lesions (present and in
    all), the latest category, and the rows written (all zero when nothing changed)."""

    patient_id: int
    model: str
    studies: int
    nodules: int
    lesions: int
    present: int
    lungrads: str | None
    counts: WriteCounts


def update_patient(
    factory: sessionmaker[Session], patient_id: int, model: str, *, criteria: NoduleCriteria = NODULE_CRITERIA
) -> FollowUpReport:
    """Run the longitudinal step for ``patient_id`` and ``model`` (name@version) in one transaction."""
    with transaction(factory) as session:
        lock_patient(session, patient_id)
        rows = load_patient(session, patient_id, model)
        dated = [study for study in rows.studies if study.study_date is not None]
        inputs = [study_input(study, rows, criteria) for study in dated]
        result = follow_patient(inputs)
        lesions, assessments, status = _writes(result, rows, criteria)
        counts = write_patient(
            session,
            patient_id=patient_id,
            model=model,
            analysis_ids=tuple(study.analysis_id for study in rows.studies),
            lesions=lesions,
            assessments=assessments,
            status=status,
        )
    report = FollowUpReport(
        patient_id=patient_id,
        model=model,
        studies=len(rows.studies),
        nodules=sum(len(study.nodules) for study in result.studies),
        lesions=len(result.lesions),
        present=len(result.present),
        lungrads=status.lungrads if status is not None else None,
        counts=counts,
    )
    log.info(
        "patient %d, %s: %d studies, %d nodules, %d lesions (%d present), Lung-RADS %s; rows %s",
        patient_id,
        model,
        report.studies,
        report.nodules,
        report.lesions,
        report.present,
        report.lungrads,
        counts,
    )
    return report


def study_input(study: StudyRow, rows: PatientRows, criteria: NoduleCriteria) -> StudyInput:
    """The screening input of one dated study: its findings that ``criteria`` accept, measured, as nodules; the
    others as candidates (looked at in retrospect when a nodule of the next study seems new). A finding on the
    same nodule as a finding taken before it (accepted first, then by detector score) is the detector's duplicate
    and is left out (:func:`screening.longitudinal.same_nodule`)."""
    if study.study_date is None:
        raise ValueError(f"analysis {study.analysis_id} has no study date")
    nodules: list[Observation] = []
    candidates: list[Observation] = []
    ranked = sorted(
        (finding for finding in study.findings if finding.diameter_mm > 0),
        key=lambda f: (
            not criteria.accepts(f.probability, f.diameter_mm, f.score),
            -f.score,
            -(f.probability or 0.0),
            f.id,
        ),
    )
    for finding in ranked:
        measurement, assumed = measurement_from_finding(
            nodule_type=finding.nodule_type,
            diameter_mm=finding.diameter_mm,
            long_axis_mm=finding.long_axis_mm,
            short_axis_mm=finding.short_axis_mm,
            solid_component_mm=finding.solid_component_mm,
            spiculated=None if finding.spiculation is None else finding.spiculation >= SPICULATED_SCORE,
        )
        observation = Observation(
            key=finding.id,
            centre_mm=finding.centre_mm,
            measurement=measurement,
            volume_mm3=finding.volume_mm3,
            assumed=assumed,
            spiculation=finding.spiculation,
        )
        if any(same_nodule(observation, taken) for taken in (*nodules, *candidates)):
            continue
        accepted = criteria.accepts(finding.probability, finding.diameter_mm, finding.score)
        (nodules if accepted else candidates).append(observation)
    sex = (rows.sex or "").upper()
    return StudyInput(
        key=study.analysis_id,
        study_date=study.study_date,
        nodules=tuple(sorted(nodules, key=lambda n: n.key)),
        age_years=study.age_years,
        female={"F": True, "M": False}.get(sex),
        scan_range_z_mm=study.scan_range_z_mm,
        lung_centroid_mm=study.lung_centroid_mm,
        candidates=tuple(sorted(candidates, key=lambda n: n.key)),
    )


def _writes(
    result: PatientResult, rows: PatientRows, criteria: NoduleCriteria
) -> tuple[list[LesionWrite], list[AssessmentWrite], StatusWrite | None]:
    """The rows to store for ``result``: lesions, an assessment per analysis (undated ones: incomplete), status."""
    lesions = [
        LesionWrite(
            finding_ids=tuple(key for _, key in lesion.observations),
            status=lesion.status,
            nodule_type=lesion.nodule_type.value,
            first_seen=lesion.first_seen,
            last_seen=lesion.last_seen,
            diameter_mm=lesion.diameter_mm,
            vdt_days=lesion.vdt_days,
            brock_probability=lesion.brock_probability,
            vdt_shortest_days=None if lesion.vdt_range_days is None else lesion.vdt_range_days[0],
            vdt_longest_days=None if lesion.vdt_range_days is None else lesion.vdt_range_days[1],
        )
        for lesion in result.lesions
    ]
    candidates = {study.analysis_id: len(study.findings) for study in rows.studies}
    rule = asdict(criteria)
    assessments = [
        AssessmentWrite(
            analysis_id=study.key,
            study_date=study.study_date,
            lungrads=study.category.value,
            reason=study.reason,
            brock_max=study.brock_max,
            vdt_min_days=study.vdt_min_days,
            follow_up_due=study.follow_up_due,
            assumptions={
                **study.assumptions,
                "nodules": {"kept": len(study.nodules), "candidates": candidates[study.key], "criteria": rule},
                "alignment": {"method": study.alignment, "translation_mm": [round(v, 2) for v in study.translation_mm]},
            },
        )
        for study in result.studies
    ]
    assessments += [
        AssessmentWrite(
            analysis_id=study.analysis_id,
            study_date=None,
            lungrads=INCOMPLETE,
            reason="incomplete: the study has no date, so it cannot be placed in the patient's timeline",
            brock_max=None,
            vdt_min_days=None,
            follow_up_due=None,
        )
        for study in rows.studies
        if study.study_date is None
    ]
    if not result.studies:
        return lesions, assessments, None
    latest = result.latest
    status = StatusWrite(
        latest_analysis_id=latest.key,
        latest_study_date=latest.study_date,
        lungrads=latest.category.value,
        brock_max=latest.brock_max,
        vdt_min_days=result.vdt_min_days,
        follow_up_due=latest.follow_up_due,
        n_lesions=len(result.present),
    )
    return lesions, assessments, status
