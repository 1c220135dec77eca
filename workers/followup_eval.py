"""Evaluation of the longitudinal step against a synthetic archive's ground truth.

``nightscan follow-up evaluate``: write a synthetic longitudinal archive (patients x studies) to a folder,
index it, run every analysis through the same function the gpu worker runs (:func:`workers.pipeline.run_analysis`,
so the findings are the real detector's, classifier's and measurement's), run the longitudinal step for every
patient, and score it against the truth:

- **Lung-RADS**: the share of studies whose assessed category equals the true one (and, among those, the
  studies whose category a false positive sets: right for the wrong nodule, counted apart);
- **tracking**: of the true lesions seen (found by the detector, and kept as nodules) in two or more studies,
  the share of consecutive observations linked to the same lesion and not shared with another true lesion;
- **VDT**: for growing true lesions of 6 mm or more, the share whose measured VDT (from the first to the last
  observations) lies within 25 % of the true one.

Each study that disagrees with the truth carries its detail in the report (both reasons, each true nodule with
the finding that hit it, the kept false positives), so that it can be read without the database.

Everything is cached in the working folder: the archive, its truth, and the SQLite database with the
findings, so a second evaluation only re-runs the step and the scoring.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import json
import logging
import math
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.engine import transaction
from db.longitudinal import FindingRow, load_patient, patients_to_follow
from db.migrate import upgrade
from db.models import (
    Analysis,
    AnalysisStatus,
    Assessment,
    Finding,
    Study,
)
from db.results import series_objects
from models.measurement import SPICULATED_SCORE
from nightscan.runtime import session_factory
from nightscan.settings import Settings
from nightscan.storage import open_storage
from screening.growth import growth_shown, sphere_volume_mm3, volume_doubling_time_days
from screening.longitudinal import (
    FOLLOW_UP_DAYS,
    LesionResult,
    NoduleCriteria,
    NoduleResult,
    Observation,
    PatientResult,
    StudyInput,
    StudyResult,
    follow_patient,
    log_odds,
)
from screening.types import LungRads
from synth.archive import GroundTruth, StudyTruth, generate_archive, read_ground_truth, write_ground_truth
from workers.followup import NODULE_CRITERIA, study_input, update_patient
from workers.followup_ceiling import ceiling

if TYPE_CHECKING:
    from workers.context import WorkerContext
    from workers.volume import Volume

log = logging.getLogger(__name__)

DEFAULT_SHAPE_ZYX = (100, 256, 256)
"""Voxels per generated study: the demo's chest-CT geometry, the detector's validated range."""
DEFAULT_SPACING_ZYX_MM = (2.5, 1.4, 1.4)


@dataclass(frozen=True, kw_only=True)
class EvaluationArchive:
    """Where an evaluation's archive, truth and database live, and how the archive was drawn."""

    work_dir: Path
    n_patients: int
    seed: int
    studies_per_patient: int = 3
    shape_zyx: tuple[int, int, int] = DEFAULT_SHAPE_ZYX
    spacing_zyx_mm: tuple[float, float, float] = DEFAULT_SPACING_ZYX_MM

    @property
    def archive_dir(self) -> Path:
        """The folder holding the DICOM objects."""
        return self.work_dir / "archive"

    @property
    def truth_path(self) -> Path:
        """The ground truth JSON."""
        return self.work_dir / "truth.json"

    def settings(self, base: Settings) -> Settings:
        """``base`` pointed at this evaluation's folder archive, SQLite database and embedded broker."""
        return Settings(
            **{
                **base.model_dump(),
                "data_dir": self.work_dir,
                "archive_url": self.archive_dir.resolve().as_uri(),
                "database_url": f"sqlite:///{(self.work_dir / 'eval.db').resolve()}",
                "broker_url": "",
                "series_quiet_s": 0,
                "archive_include": [],
                "archive_exclude": [],
            }
        )


def prepare(spec: EvaluationArchive, base: Settings, *, synth_workers: int = 1) -> tuple[GroundTruth, Settings]:
    """Write the archive (unless its truth is there already), index it and run every analysis not yet done.

    Returns the truth and the settings of the evaluation's database. The detector takes about 5 s per study
    of 100 x 256 x 256 voxels on 2 CPU cores.
    """
    settings = spec.settings(base)
    spec.work_dir.mkdir(parents=True, exist_ok=True)
    if spec.truth_path.exists():
        truth = read_ground_truth(spec.truth_path)
        log.info("reusing the archive in %s (%d studies)", spec.archive_dir, len(truth.studies))
    else:
        start = time.perf_counter()
        storage = open_storage(settings.archive_url, settings)
        truth = generate_archive(
            storage.put,
            n_patients=spec.n_patients,
            seed=spec.seed,
            studies_per_patient=spec.studies_per_patient,
            shape_zyx=spec.shape_zyx,
            spacing_zyx_mm=spec.spacing_zyx_mm,
            workers=synth_workers,
        )
        write_ground_truth(truth, spec.truth_path)
        log.info("wrote %d studies in %.0f s to %s", len(truth.studies), time.perf_counter() - start, spec.archive_dir)
    analyse_all(settings)
    measure_missing_spiculation(settings)
    record_missing_lung_centroids(settings)
    return truth, settings


def analyse_all(settings: Settings) -> dict[str, int]:
    """Index the archive and run each analysis that is not done, in this process, as the gpu worker would.

    Returns the count of each outcome (done, failed, skipped, ...).
    """
    from scheduler.scan import scan
    from workers.context import WorkerContext
    from workers.pipeline import run_analysis

    upgrade(settings.resolved_database_url)
    factory = session_factory(settings)
    report = scan(settings.archive_url, settings, factory, None)
    log.info("scan: %d objects listed, %d analyses planned", report.listed, report.planned)
    with transaction(factory) as session:
        pending = list(
            session.scalars(
                select(Analysis.id)
                .where(Analysis.status.not_in((AnalysisStatus.DONE, AnalysisStatus.FAILED)))
                .order_by(Analysis.id)
            )
        )
    outcomes: dict[str, int] = {}
    ctx = WorkerContext(settings)
    start = time.perf_counter()
    for n, analysis_id in enumerate(pending, 1):
        outcome = run_analysis(analysis_id, ctx)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        log.info(
            "analysis %d: %s (%d of %d, %.0f s)", analysis_id, outcome, n, len(pending), time.perf_counter() - start
        )
    return outcomes


def measure_missing_spiculation(settings: Settings) -> int:
    """Fill ``findings.spiculation`` where a finding was measured before spiculation was (a database of an older
    nightscan): the nodule is measured again at its stored centre (the segmentation's centroid, mm) on its
    study's volume, and only the spiculation score is written: the configured spiculation model's probability at the
    new measurement's centre and mean diameter (``settings.spiculation``, raised to the hand-made score of the
    second-longest spicule from 15 mm on, as the worker stores it), else the hand-made score. Returns the findings
    updated.

    The other columns are left as the worker wrote them; the log reports how far the new mean diameter lies from
    the stored one (the same nodule, measured from its centroid instead of the detector's centre).
    """
    from models.measurement import measure_nodule
    from models.spiculation import large_nodule_spiculation
    from workers.context import WorkerContext

    factory = session_factory(settings)
    with factory() as session:
        todo: dict[int, list[Finding]] = defaultdict(list)
        for finding in session.scalars(
            select(Finding)
            .join(Analysis, Analysis.id == Finding.analysis_id)
            .where(
                Analysis.status == AnalysisStatus.DONE,
                Finding.spiculation.is_(None),
                Finding.long_axis_mm.is_not(None),
            )
            .order_by(Finding.id)
        ):
            todo[finding.analysis_id].append(finding)
        objects = {analysis_id: _objects(session, analysis_id) for analysis_id in todo}
    if not todo:
        return 0
    log.info("measuring spiculation of %d findings in %d analyses", sum(map(len, todo.values())), len(todo))
    ctx = WorkerContext(settings)
    model = ctx.spiculation(settings.spiculation) if settings.spiculation else None
    start = time.perf_counter()
    updated = 0
    differences: list[float] = []
    for n, (analysis_id, findings) in enumerate(sorted(todo.items()), 1):
        volume = _load_volume(ctx, analysis_id, objects[analysis_id])
        scores: dict[int, float] = {}
        for finding in findings:
            centre = volume.to_voxel((finding.center_x_mm, finding.center_y_mm, finding.center_z_mm))
            try:
                measured = measure_nodule(
                    volume.hu, volume.spacing_zyx_mm, centre, approx_diameter_mm=finding.diameter_mm
                )
            except ValueError as exc:
                log.info("finding %d (analysis %d) not measured again: %s", finding.id, analysis_id, exc)
                continue
            scores[finding.id] = measured.spiculation
            if model is not None:
                probability = model.predict(
                    volume.hu, volume.spacing_zyx_mm, [(measured.center_zyx_vox, measured.mean_diameter_mm)]
                )[0]
                scores[finding.id] = round(large_nodule_spiculation(probability, measured), 3)
            differences.append(abs(measured.mean_diameter_mm - finding.diameter_mm))
        with transaction(factory) as session:
            for finding_id, value in scores.items():
                row = session.get(Finding, finding_id)
                if row is not None:
                    row.spiculation = value
        updated += len(scores)
        log.info(
            "analysis %d: %d of %d findings (%d of %d analyses, %.0f s)",
            analysis_id,
            len(scores),
            len(findings),
            n,
            len(todo),
            time.perf_counter() - start,
        )
    if differences:
        log.info(
            "spiculation measured on %d findings; mean diameter measured again: median |difference| %.2f mm, "
            "90th percentile %.2f mm",
            updated,
            float(np.median(differences)),
            float(np.percentile(differences, 90)),
        )
    return updated


def record_missing_lung_centroids(settings: Settings) -> int:
    """Add ``lung_centroid_mm`` to the ``volume`` of done analyses that lack it (a database of an older nightscan),
    from the study's volume as the worker computes it (:func:`workers.lungs.lung_centroid_mm`). Returns the
    analyses updated."""
    from workers.context import WorkerContext
    from workers.lungs import lung_centroid_mm

    factory = session_factory(settings)
    with factory() as session:
        todo = [
            analysis_id
            for analysis_id, volume in session.execute(
                select(Analysis.id, Analysis.volume).where(Analysis.status == AnalysisStatus.DONE).order_by(Analysis.id)
            )
            if not (isinstance(volume, dict) and "lung_centroid_mm" in volume)
        ]
        objects = {analysis_id: _objects(session, analysis_id) for analysis_id in todo}
    if not todo:
        return 0
    log.info("recording the lung centroid of %d analyses", len(todo))
    ctx = WorkerContext(settings)
    for analysis_id in todo:
        centroid = lung_centroid_mm(_load_volume(ctx, analysis_id, objects[analysis_id]))
        with transaction(factory) as session:
            row = session.get(Analysis, analysis_id)
            if row is not None:
                row.volume = {**(row.volume or {}), "lung_centroid_mm": None if centroid is None else list(centroid)}
    return len(todo)


def _objects(session: Session, analysis_id: int) -> list[tuple[str, str]]:
    """(source, key) of the indexed objects of an analysis's series, in key order."""
    series_id = session.get_one(Analysis, analysis_id).series_id
    return [(row.source, row.key) for row in series_objects(session, series_id)]


def _load_volume(ctx: WorkerContext, analysis_id: int, objects: Sequence[tuple[str, str]]) -> Volume:
    """The volume of an analysis's series, fetched and decoded as the worker does."""
    from workers.series import load_series
    from workers.volume import IrregularSeries

    if not objects:
        raise LookupError(f"analysis {analysis_id} has no indexed instances")
    storage = ctx.storage(objects[0][0])
    volume, _ = load_series(
        [key for _, key in objects],
        storage.get,
        fetch_threads=ctx.settings.fetch_threads,
        pool=ctx.decode_pool,
        policy=IrregularSeries(ctx.settings.irregular_series),
    )
    return volume


HIT_RADIUS_FLOOR_MM = 2.5
"""A finding is a true nodule's when its centre lies within the nodule's radius (LUNA16), or this many mm for
nodules smaller than 5 mm (their centre is only known to about a pixel)."""
VDT_TOLERANCE = 0.25
VDT_MIN_DIAMETER_MM = 6.0
TARGETS = {"lungrads_accuracy": 0.90, "tracking_accuracy": 0.95, "vdt_within_25pct": 1.0}


@dataclass
class _Hit:
    """A true nodule of one study and the finding that found it (None: missed)."""

    track_id: str
    study_index: int
    diameter_mm: float
    lung_rads: str
    finding_id: int | None
    kept: bool
    spiculated: bool = False
    measured_spiculated: bool | None = None  # None: not found, or its spiculation not measured
    type_right: bool | None = None  # the finding's type equals the truth's; None: not found or no type
    measured_diameter_mm: float | None = None  # the finding's mean diameter; None: not found


def _measurement_cause(direction: str, hits: Sequence[_Hit]) -> str:
    """Why true nodules, found and kept, moved the category `direction` ("higher" or "lower"): one measured as
    another type, else measured larger (higher) or smaller (lower)."""
    if any(h.type_right is False for h in hits):
        return f"{direction}: measured as another type (true nodule)"
    return f"{direction}: measured {'larger' if direction == 'higher' else 'smaller'} (true nodule)"


def score(
    truth: GroundTruth, factory: sessionmaker[Session], model: str, criteria: NoduleCriteria
) -> dict[str, object]:
    """Score the longitudinal step with ``criteria`` against ``truth`` (pure: nothing is written).

    See the module docstring for the three figures; the result also holds the causes of every Lung-RADS
    disagreement, the detection counts behind them, and the per-study table.
    """
    with factory() as session:
        studies = {
            uid: (study_id, patient_id)
            for uid, study_id, patient_id in session.execute(
                select(Study.study_instance_uid, Study.id, Study.patient_id)
            )
        }
        patients = sorted({patient_id for _, patient_id in studies.values()})
        loaded = {patient_id: load_patient(session, patient_id, model) for patient_id in patients}
    results: dict[int, PatientResult] = {}
    inputs: dict[int, list[StudyInput]] = {}
    for patient_id, rows in loaded.items():
        inputs[patient_id] = [study_input(s, rows, criteria) for s in rows.studies if s.study_date is not None]
        results[patient_id] = follow_patient(inputs[patient_id])
    analysis_of_study = {row.study_id: (patient_id, row) for patient_id, rows in loaded.items() for row in rows.studies}
    by_analysis = {study.key: study for result in results.values() for study in result.studies}
    lesion_of_finding = {
        (patient_id, key): lesion.index
        for patient_id, result in results.items()
        for lesion in result.lesions
        for _, key in lesion.observations
    }
    lesion_vdt = {
        (patient_id, lesion.index): lesion for patient_id, result in results.items() for lesion in result.lesions
    }

    first_study: dict[str, int] = {}
    for truth_study in truth.studies:
        for nodule in truth_study.nodules:
            first_study.setdefault(nodule.nodule_id, truth_study.study_index)
    per_study: list[dict[str, object]] = []
    hits: list[_Hit] = []
    track_patient: dict[str, int] = {}
    causes: dict[str, int] = {}
    brock: list[tuple[float, float, bool, bool]] = []  # (ours, truth, our upper lobe, true upper lobe)
    for truth_study in truth.studies:
        study_id, patient_id = studies[truth_study.study_uid]
        _, row = analysis_of_study[study_id]
        assessed = by_analysis[row.analysis_id]
        kept = {nodule.key for nodule in assessed.nodules}  # the criteria's, and candidates at known lesions
        study_hits = _match_truth(truth_study, row.findings, kept)
        for hit in study_hits:
            track_patient[hit.track_id] = patient_id
        hits.extend(study_hits)
        study_in = next(s for s in inputs[patient_id] if s.key == row.analysis_id)
        brock.extend(_brock_pairs(truth_study, study_hits, assessed, study_in))
        ours, expected = assessed.category.value, truth_study.lung_rads
        cause = "" if ours == expected else _cause(ours, expected, assessed, study_hits, first_study)
        by_false_positive = ours == expected and _set_by_false_positive(assessed, study_hits)
        if cause:
            causes[cause] = causes.get(cause, 0) + 1
        row_out: dict[str, object] = {
            "patient": truth_study.patient_id,
            "study_index": truth_study.study_index,
            "truth": expected,
            "assessed": ours,
            "true_nodules": len(truth_study.nodules),
            "found": sum(h.finding_id is not None for h in study_hits),
            "kept_nodules": len(kept),
            "cause": cause,
            "set_by_false_positive": by_false_positive,
        }
        if cause:
            row_out["detail"] = _disagreement_detail(truth_study, assessed, row.findings, study_hits, kept)
        per_study.append(row_out)

    tracking = _score_tracking(hits, lesion_of_finding, track_patient)
    vdt = _score_vdt(truth, hits, lesion_of_finding, lesion_vdt, track_patient, inputs)
    agree = sum(s["truth"] == s["assessed"] for s in per_study)
    detection = {
        "true_nodules": len(hits),
        "found": sum(h.finding_id is not None for h in hits),
        "found_and_kept": sum(h.kept for h in hits),
        "found_6mm_plus": sum(h.finding_id is not None for h in hits if h.diameter_mm >= 6.0),
        "true_6mm_plus": sum(h.diameter_mm >= 6.0 for h in hits),
        "kept_findings": sum(len(s.nodules) for result in results.values() for s in result.studies),
        "kept_false_positives": sum(
            len({n.key for n in s.nodules} - {h.finding_id for h in hits})
            for result in results.values()
            for s in result.studies
        ),
    }
    return {
        "criteria": dataclasses.asdict(criteria),
        "studies": len(per_study),
        "lungrads_agree": agree,
        "lungrads_accuracy": agree / len(per_study) if per_study else None,
        "lungrads_agree_set_by_false_positive": sum(bool(s["set_by_false_positive"]) for s in per_study),
        "lungrads_within_one": sum(
            abs(LungRads(s["truth"]).rank - LungRads(s["assessed"]).rank) <= 1 for s in per_study
        )
        / max(1, len(per_study)),
        "same_next_step": sum(
            FOLLOW_UP_DAYS[LungRads(s["truth"])] == FOLLOW_UP_DAYS[LungRads(s["assessed"])] for s in per_study
        )
        / max(1, len(per_study)),
        "lungrads_causes": dict(sorted(causes.items(), key=lambda item: -item[1])),
        "confusion": _confusion(per_study),
        "tracking": tracking,
        "vdt": vdt,
        "detection": detection,
        "spiculation": _spiculation_summary(hits),
        "diameter_error": _diameter_error(hits),
        "brock": _brock_summary(brock),
        "per_study": per_study,
    }


def _match_truth(truth_study: StudyTruth, findings: Sequence[FindingRow], kept: set[int]) -> list[_Hit]:
    """Each true nodule of the study with a finding within its hit radius (each finding once): a kept one first,
    the nearest of them, else the nearest. A nodule with two findings, the kept one a little off centre and a
    duplicate left out nearer, is found and kept, and its kept finding is no false positive."""
    candidates = []
    for i, nodule in enumerate(truth_study.nodules):
        radius = max(nodule.diameter_mm / 2, HIT_RADIUS_FLOOR_MM)
        for finding in findings:
            distance = math.dist(nodule.center_xyz_mm, finding.centre_mm)
            if distance <= radius:
                candidates.append((finding.id not in kept, distance, i, finding.id))
    spiculation = {finding.id: finding.spiculation for finding in findings}
    types = {finding.id: finding.nodule_type for finding in findings}
    diameters = {finding.id: finding.diameter_mm for finding in findings}
    found: dict[int, int] = {}
    used: set[int] = set()
    for _, _, i, finding_id in sorted(candidates):
        if i not in found and finding_id not in used:
            found[i] = finding_id
            used.add(finding_id)
    return [
        _Hit(
            track_id=nodule.nodule_id,
            study_index=truth_study.study_index,
            diameter_mm=nodule.diameter_mm,
            lung_rads=nodule.lung_rads,
            finding_id=found.get(i),
            kept=found.get(i) in kept,
            spiculated=nodule.spiculated,
            measured_spiculated=None
            if found.get(i) is None or spiculation.get(found[i]) is None
            else spiculation[found[i]] >= SPICULATED_SCORE,
            type_right=None if types.get(found.get(i)) is None else types[found[i]] == nodule.kind,
            measured_diameter_mm=diameters.get(found.get(i)),
        )
        for i, nodule in enumerate(truth_study.nodules)
    ]


def _finding_detail(finding: FindingRow, kept: set[int]) -> dict[str, object]:
    """A finding as the step read it: type, sizes (mm), the models' evidence (0 to 1, and their summed log-odds)
    and spiculation (0 to 1), and whether it counted as a nodule."""
    evidence = [p for p in (finding.probability, finding.score) if p is not None]
    return {
        "finding": finding.id,
        "type": finding.nodule_type,
        "diameter_mm": finding.diameter_mm,
        "solid_component_mm": finding.solid_component_mm,
        "probability": finding.probability,
        "score": round(finding.score, 4),
        "log_odds": round(sum(log_odds(p) for p in evidence), 2),
        "spiculation": finding.spiculation,
        "kept": finding.id in kept,
    }


def _disagreement_detail(
    truth_study: StudyTruth,
    assessed: StudyResult,
    findings: Sequence[FindingRow],
    hits: Sequence[_Hit],
    kept: set[int],
) -> dict[str, object]:
    """What a reader needs to see why a study disagrees without the database: both reasons, each true nodule
    with the finding that hit it (None: missed), and the kept findings that hit no true nodule."""
    by_id = {finding.id: finding for finding in findings}
    hit_ids = {hit.finding_id for hit in hits if hit.finding_id is not None}
    return {
        "reason": assessed.reason,
        "truth_reason": truth_study.lung_rads_reason,
        "nodules": [
            {
                "track": nodule.nodule_id,
                "type": nodule.kind,
                "diameter_mm": nodule.diameter_mm,
                "solid_component_mm": nodule.solid_component_mm,
                "spiculated": nodule.spiculated,
                "juxtapleural": nodule.juxtapleural,
                "lung_rads": nodule.lung_rads,
                "found": None if hit.finding_id is None else _finding_detail(by_id[hit.finding_id], kept),
            }
            for nodule, hit in zip(truth_study.nodules, hits, strict=True)
        ],
        "false_positives": [_finding_detail(by_id[key], kept) for key in sorted(kept - hit_ids) if key in by_id],
    }


def _set_by_false_positive(assessed: StudyResult, hits: Sequence[_Hit]) -> bool:
    """True when every nodule of the study's category is a finding on no true nodule: the category is right, but a
    false positive sets it (the true nodule that should was missed or left out)."""
    true_findings = {h.finding_id for h in hits if h.finding_id is not None}
    setting = [n for n in assessed.nodules if n.category == assessed.category]
    return bool(setting) and all(n.key not in true_findings for n in setting)


def _cause(ours: str, expected: str, assessed: StudyResult, hits: list[_Hit], first_study: dict[str, int]) -> str:
    """Why the assessed category differs from the true one, in a few words."""
    hit_of = {h.finding_id: h for h in hits if h.finding_id is not None}
    if expected == LungRads.CAT4X.value:
        spiculated = [h for h in hits if h.spiculated and h.lung_rads == expected]
        if spiculated and all(not h.kept for h in spiculated):
            return "truth 4X: the spiculated nodule was missed or not kept"
        if spiculated and not any(h.measured_spiculated for h in spiculated if h.kept):
            return "truth 4X: the spiculated nodule was not measured spiculated"
        return "truth 4X: the spiculated nodule measured spiculated, but below category 3"
    if ours == LungRads.CAT4X.value:
        worst = max(assessed.nodules, key=lambda n: n.category)
        hit = hit_of.get(worst.key)
        if hit is None:
            return "4X: a false-positive finding measured spiculated"
        if not hit.spiculated:
            return "4X: a smooth nodule measured spiculated"
        return "4X: a spiculated nodule the truth puts in category 1 or 2 (measured larger or other type)"
    if LungRads(ours) > LungRads(expected):
        worst = max(assessed.nodules, key=lambda n: n.category)
        hit = hit_of.get(worst.key)
        if hit is None:
            return "higher: a false-positive finding kept as a nodule"
        return _history_cause(worst, hit, first_study) or _measurement_cause("higher", [hit])
    driving = [h for h in hits if h.lung_rads == expected]
    if driving and all(h.finding_id is None for h in driving):
        return "lower: the nodule setting the category was missed by the detector"
    if driving and all(not h.kept for h in driving):
        return "lower: the nodule setting the category was found but not kept (criteria)"
    kept_driving = [h for h in driving if h.kept]
    for hit in kept_driving:
        result = next(n for n in assessed.nodules if n.key == hit.finding_id)
        cause = _history_cause(result, hit, first_study)
        if cause:
            return cause
    return _measurement_cause("lower", kept_driving)


def _history_cause(result: NoduleResult, hit: _Hit, first_study: dict[str, int]) -> str:
    """A tracking cause when the nodule's history (new or seen before) differs from the truth's, else ''."""
    truly_new = hit.study_index > 0 and first_study[hit.track_id] == hit.study_index
    seen_before = hit.study_index > first_study[hit.track_id]
    if result.new and seen_before:
        return "tracking: a known nodule taken as new (or its prior missed)"
    if not result.new and truly_new:
        return "tracking: a new nodule matched to an earlier one"
    return ""


def _brock_pairs(
    truth_study: StudyTruth, hits: list[_Hit], assessed: StudyResult, study_in: StudyInput
) -> list[tuple[float, float, bool, bool]]:
    """(our Brock, true Brock, our upper lobe, true upper lobe) of each true nodule kept as a nodule."""
    from screening.longitudinal import is_upper_lobe
    from synth.anatomy import UPPER_LOBES

    ours = {n.key: n for n in assessed.nodules}
    centres = {n.key: n.centre_mm for n in (*study_in.nodules, *study_in.candidates)}
    records = {n.nodule_id: n for n in truth_study.nodules}
    pairs = []
    for hit in hits:
        result = ours.get(hit.finding_id) if hit.kept else None
        record = records[hit.track_id]
        if result is None or result.brock_probability is None or record.brock_probability is None:
            continue
        upper = study_in.scan_range_z_mm is not None and is_upper_lobe(
            centres[hit.finding_id][2], study_in.scan_range_z_mm
        )
        pairs.append((result.brock_probability, record.brock_probability, upper, record.lobe in UPPER_LOBES))
    return pairs


def _spiculation_summary(hits: list[_Hit]) -> dict[str, object]:
    """Measured spiculation against the truth's, over the true nodules kept as nodules (all sizes, and 8 mm or
    more: the synthetic archive draws spicules on solid and part-solid nodules of 8 mm or more only)."""
    summary: dict[str, object] = {}
    for name, low in (("all", 0.0), ("8mm_plus", 8.0)):
        kept = [h for h in hits if h.kept and h.measured_spiculated is not None and h.diameter_mm >= low]
        summary[name] = {
            "kept_nodules": len(kept),
            "truth_spiculated": sum(h.spiculated for h in kept),
            "measured_spiculated_and_true": sum(h.spiculated and bool(h.measured_spiculated) for h in kept),
            "measured_spiculated_but_smooth": sum(not h.spiculated and bool(h.measured_spiculated) for h in kept),
        }
    return summary


def _diameter_error(hits: list[_Hit]) -> dict[str, object]:
    """Mean diameter measured minus true (mm) over the true nodules kept as nodules: count, bias and RMS, for all
    sizes and for 6 mm and more (the noise :mod:`workers.followup_ceiling` turns into Lung-RADS agreement)."""
    summary: dict[str, object] = {}
    for name, low in (("all", 0.0), ("6mm_plus", 6.0)):
        errors = np.array(
            [
                h.measured_diameter_mm - h.diameter_mm
                for h in hits
                if h.kept and h.measured_diameter_mm is not None and h.diameter_mm >= low
            ]
        )
        summary[name] = {
            "nodules": int(errors.size),
            "bias_mm": round(float(errors.mean()), 3) if errors.size else None,
            "rms_mm": round(float(np.sqrt((errors**2).mean())), 3) if errors.size else None,
        }
    return summary


def _brock_summary(pairs: list[tuple[float, float, bool, bool]]) -> dict[str, object]:
    """How our Brock probabilities compare with the truth's (which knows spiculation and the lobe)."""
    if not pairs:
        return {"nodules": 0}
    ours, true = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
    return {
        "nodules": len(pairs),
        "median_abs_difference": round(float(np.median(np.abs(ours - true))), 5),
        "same_side_of_10pct": round(float(np.mean((ours >= 0.1) == (true >= 0.1))), 4),
        "upper_lobe_agreement": round(float(np.mean([p[2] == p[3] for p in pairs])), 4),
    }


def _score_tracking(
    hits: list[_Hit], lesion_of_finding: dict[tuple[int, int], int], track_patient: dict[str, int]
) -> dict[str, object]:
    """Of the true lesions kept as nodules in two or more studies, those whose observations form one lesion
    holding no other true lesion; and the share of consecutive observations linked."""
    observations: dict[str, list[tuple[int, int]]] = defaultdict(list)
    present: dict[str, int] = defaultdict(int)
    members: dict[tuple[int, int], set[str]] = defaultdict(set)
    for hit in hits:
        present[hit.track_id] += 1
        if hit.kept and hit.finding_id is not None:
            patient = track_patient[hit.track_id]
            lesion = lesion_of_finding[(patient, hit.finding_id)]
            observations[hit.track_id].append((hit.study_index, lesion))
            members[(patient, lesion)].add(hit.track_id)
    eligible = sorted(track for track, seen in observations.items() if len(seen) >= 2)
    correct = [
        track
        for track in eligible
        if len({lesion for _, lesion in observations[track]}) == 1
        and members[(track_patient[track], observations[track][0][1])] == {track}
    ]
    links = linked = 0
    for track in eligible:
        seen = sorted(observations[track])
        for (_, a), (_, b) in itertools.pairwise(seen):
            links += 1
            linked += a == b
    return {
        "true_lesions_in_2plus_studies": sum(n >= 2 for n in present.values()),
        "kept_in_2plus_studies": len(eligible),
        "assigned_right": len(correct),
        "accuracy": len(correct) / len(eligible) if eligible else None,
        "consecutive_links": links,
        "consecutive_linked": linked,
        "wrong": [track for track in eligible if track not in correct],
    }


def _score_vdt(
    truth: GroundTruth,
    hits: list[_Hit],
    lesion_of_finding: dict[tuple[int, int], int],
    lesions: dict[tuple[int, int], LesionResult],
    track_patient: dict[str, int],
    inputs: dict[int, list[StudyInput]],
) -> dict[str, object]:
    """Measured against true VDT for growing true lesions of 6 mm or more kept in two or more studies.

    ``lesion``: the stored estimate (the lesion's first to last observation, measured volumes); the others are
    alternatives measured for the analysis: the last two observations, with measured volumes, the first to the
    last with the sphere of the mean diameter, and a least-squares fit of ln(volume) against time over every
    observation.

    ``lesion_range``: the range of VDT (days) the lesion's two volumes allow (:func:`screening.growth.vdt_range_days`;
    longest None: growth within the measurements' noise). The summary counts the lesions whose range holds the
    true VDT, those whose growth it shows (an upper end), and of these, those within 25 %: a VDT from a volume
    change within the noise of two measurements cannot be expected within 25 %.
    """
    observed: dict[int, tuple[Observation, dt.date]] = {
        nodule.key: (nodule, study.study_date)
        for studies in inputs.values()
        for study in studies
        for nodule in (*study.nodules, *study.candidates)
    }
    largest: dict[str, float] = defaultdict(float)
    for hit in hits:
        largest[hit.track_id] = max(largest[hit.track_id], hit.diameter_mm)
    kept: dict[str, list[int]] = defaultdict(list)
    for hit in hits:
        if hit.kept and hit.finding_id is not None:
            kept[hit.track_id].append(hit.finding_id)
    rows = []
    for track in truth.tracks:
        if track.vdt_days is None or largest[track.track_id] < VDT_MIN_DIAMETER_MM or len(kept[track.track_id]) < 2:
            continue
        patient = track_patient[track.track_id]
        indexes = {lesion_of_finding[(patient, f)] for f in kept[track.track_id]}
        series = sorted((observed[f][1], observed[f][0]) for f in kept[track.track_id])
        (d0, first), (d1, last) = series[0], series[-1]
        days = (d1 - d0).days
        lesion = lesions[(patient, indexes.pop())] if len(indexes) == 1 else None
        rows.append(
            {
                "track": track.track_id,
                "true_vdt_days": track.vdt_days,
                "largest_mm": largest[track.track_id],
                "observations": len(series),
                "lesion": lesion.vdt_days if lesion is not None else None,
                "lesion_range": lesion.vdt_range_days if lesion is not None else None,
                "last_two_volume": _vdt(_volume(series[-2][1]), _volume(last), (d1 - series[-2][0]).days),
                "first_last_volume": _vdt(_volume(first), _volume(last), days),
                "first_last_sphere": _vdt(
                    sphere_volume_mm3(first.measurement.mean_diameter_mm),
                    sphere_volume_mm3(last.measurement.mean_diameter_mm),
                    days,
                ),
                "fit": _fitted_vdt([(d, _volume(o)) for d, o in series]),
                "weighted_fit": _fitted_vdt([(d, _volume(o)) for d, o in series], weighted=True),
            }
        )
    estimators = ("lesion", "last_two_volume", "first_last_volume", "first_last_sphere", "fit", "weighted_fit")
    within = {
        name: sum(
            row[name] is not None and abs(row[name] - row["true_vdt_days"]) <= VDT_TOLERANCE * row["true_vdt_days"]
            for row in rows
        )
        for name in estimators
    }
    shown = [row for row in rows if growth_shown(row["lesion_range"])]
    return {
        "growing_6mm_plus_kept_twice": len(rows),
        "growing_6mm_plus_in_truth": sum(
            1
            for t in truth.tracks
            if t.vdt_days is not None and largest[t.track_id] >= VDT_MIN_DIAMETER_MM and len(t.study_uids) >= 2
        ),
        "within_25pct": within,
        "accuracy": within["lesion"] / len(rows) if rows else None,
        "range_holds_truth": sum(_in_range(row["lesion_range"], row["true_vdt_days"]) for row in rows),
        "growth_shown": len(shown),
        "within_25pct_where_growth_shown": sum(
            abs(row["lesion"] - row["true_vdt_days"]) <= VDT_TOLERANCE * row["true_vdt_days"] for row in shown
        ),
        "rows": rows,
    }


def _in_range(vdt_range: tuple[float, float | None] | None, vdt_days: float) -> bool:
    """True when ``vdt_days`` lies in ``vdt_range`` (shortest, longest; longest None: no upper end)."""
    if vdt_range is None:
        return False
    shortest, longest = vdt_range
    return shortest <= vdt_days and (longest is None or vdt_days <= longest)


def _volume(nodule: Observation) -> float:
    if nodule.volume_mm3 is not None and nodule.volume_mm3 > 0:
        return nodule.volume_mm3
    return sphere_volume_mm3(nodule.measurement.mean_diameter_mm)


def _vdt(v1: float, v2: float, days: int) -> float | None:
    return volume_doubling_time_days(v1, v2, float(days)) if days > 0 else None


def _fitted_vdt(points: list[tuple[dt.date, float]], *, weighted: bool = False) -> float | None:
    """VDT (days) from the least-squares slope of ln(volume) against days; None when it does not grow. With
    ``weighted``, each point weighs volume^(2/3) (mm2): the relative error of a volume falls as the nodule grows
    (its edge, where the error is, is a smaller share of it)."""
    if len(points) < 2:
        return None
    t = np.array([(d - points[0][0]).days for d, _ in points], dtype=float)
    v = np.log([volume for _, volume in points])
    if np.ptp(t) == 0:
        return None
    weights = np.exp(v / 3) if weighted else None  # polyfit squares them: volume^(2/3)
    slope = float(np.polyfit(t, v, 1, w=weights)[0])
    return math.log(2.0) / slope if slope > 0 else None


def _summary(result: dict[str, object]) -> dict[str, object]:
    """The figures of one scoring, without its per-study and per-lesion rows."""
    tracking, vdt = result["tracking"], result["vdt"]
    assert isinstance(tracking, dict) and isinstance(vdt, dict)
    return {
        "criteria": result["criteria"],
        "lungrads_accuracy": result["lungrads_accuracy"],
        "lungrads_agree_set_by_false_positive": result["lungrads_agree_set_by_false_positive"],
        "lungrads_causes": result["lungrads_causes"],
        "tracking": {k: v for k, v in tracking.items() if k != "wrong"},
        "vdt": {k: v for k, v in vdt.items() if k != "rows"},
        "detection": result["detection"],
        "spiculation": result["spiculation"],
    }


def _confusion(per_study: list[dict[str, object]]) -> dict[str, dict[str, int]]:
    """truth category -> assessed category -> studies."""
    table: dict[str, dict[str, int]] = {}
    for row in per_study:
        cell = table.setdefault(str(row["truth"]), {})
        cell[str(row["assessed"])] = cell.get(str(row["assessed"]), 0) + 1
    return {k: dict(sorted(v.items())) for k, v in sorted(table.items())}


CEILING_NOISES_MM = (0.0, 0.25, 0.5, 0.75)
"""Measurement noise (standard deviation, mm) at which the report gives the step's ceiling, besides the RMS
measured on the run (:mod:`workers.followup_ceiling`)."""
CEILING_DRAWS = 20

SWEEP = tuple(
    NoduleCriteria(min_score=s, min_probability=p, min_diameter_mm=d)
    for s in (0.0, 0.5, 0.8, 0.9, 0.95, 0.98)
    for p in (0.0, 0.3, 0.5, 0.7, 0.9)
    for d in (3.0, 4.0, 5.0)
) + tuple(
    NoduleCriteria(min_score=s, min_probability=p, min_diameter_mm=d, min_log_odds=e)
    for s in (0.0, 0.5)
    for p in (0.0, 0.3)
    for d in (3.0, 4.0)
    for e in (4.0, 5.0, 6.0, 7.0, 8.0, 9.0)
)
"""Nodule criteria scored besides the default, to show how the choice of findings moves the figures."""


def evaluate(
    spec: EvaluationArchive,
    base: Settings,
    *,
    out_path: Path | None = None,
    synth_workers: int = 1,
    sweep: Sequence[NoduleCriteria] = SWEEP,
) -> dict[str, object]:
    """Prepare the archive (cached), run the step for every patient as the worker does, score it; write the JSON.

    The default criteria (:data:`workers.followup.NODULE_CRITERIA`) are scored from the rows the step wrote, the
    ``sweep`` from the pure computation with each criteria (nothing written): both paths must agree, and the
    report says whether they did.
    """
    truth, settings = prepare(spec, base, synth_workers=synth_workers)
    factory = session_factory(settings)
    model = settings.detector
    start = time.perf_counter()
    with factory() as session:
        pairs = patients_to_follow(session, model=model)
    for patient_id, _ in pairs:
        update_patient(factory, patient_id, model)
    step_s = time.perf_counter() - start
    main = score(truth, factory, model, NODULE_CRITERIA)
    with factory() as session:
        stored = dict(
            (uid, lungrads)
            for uid, lungrads in session.execute(
                select(Study.study_instance_uid, Assessment.lungrads)
                .join(Analysis, Analysis.study_id == Study.id)
                .join(Assessment, Assessment.analysis_id == Analysis.id)
                .where(Assessment.model == model)
            )
        )
    by_uid = {s.study_uid: row for s, row in zip(truth.studies, main["per_study"], strict=True)}
    disagreements = sum(stored.get(uid) != row["assessed"] for uid, row in by_uid.items())
    measured_rms = main["diameter_error"]["all"]["rms_mm"]
    noise = (measured_rms,) if measured_rms else ()
    report: dict[str, object] = {
        "archive": {
            "patients": spec.n_patients,
            "studies": len(truth.studies),
            "studies_per_patient": spec.studies_per_patient,
            "seed": spec.seed,
            "shape_zyx": list(spec.shape_zyx),
            "spacing_zyx_mm": list(spec.spacing_zyx_mm),
            "model": model,
            "classifier": settings.classifier,
            "finding_min_score": settings.finding_min_score,
        },
        "targets": TARGETS,
        "step": {"patients": len(pairs), "seconds": round(step_s, 2), "stored_vs_pure_disagreements": disagreements},
        "result": main,
        "ceiling": {
            "what": "Lung-RADS agreement of the true nodules, each diameter and solid component moved by Gaussian "
            f"noise of this standard deviation (mm; the last: the RMS measured above), {CEILING_DRAWS} draws "
            "(workers.followup_ceiling)",
            "lungrads_accuracy_by_noise_mm": ceiling(truth, (*CEILING_NOISES_MM, *noise), draws=CEILING_DRAWS),
        },
        "sweep": [_summary(score(truth, factory, model, criteria)) for criteria in sweep],
    }
    if out_path is not None:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(report, indent=1, default=str) + "\n")
        log.info("evaluation written to %s", out_path)
    return report
