"""Evaluate a registered detector on a held-out archive with known nodules (``nightscan models evaluate``).

Every study of the ground truth is read through the production path (the archive's objects fetched and
decoded by :func:`workers.series.load_series`), the detector runs on the volume, and its candidates are
matched to the true nodules in patient (world) coordinates, mm: a candidate hits a nodule when
``volume.to_patient(candidate centre)`` lies within diameter / 2 of the nodule's ``center_xyz_mm``
(LUNA16, see :mod:`models.metrics`).

Candidates are taken down to the model's own lowest score (not the registry threshold) so the FROC curve
covers every operating point; "at threshold" figures keep those with score >= the registry's threshold.

Two later steps plug in as optional callables:

- ``classify(volume, candidates)``: one :class:`CandidateClassLike` per candidate (nodule probability 0..1,
  and type or None; ``models.classifier.Classification`` is one, :func:`classify_with` adapts a classifier),
  run on the candidates kept at the registry threshold (as in production). It adds the
  nodule-vs-not ROC AUC and binary metrics, a FROC with the probability as score and, when types are given,
  type accuracy and its confusion matrix over the detected nodules.
- ``rank_by``: what orders the candidates for the FROC and CPM (:class:`RankBy`): the detector's score (the
  default), the classifier's nodule probability, or their product (false-positive reduction). Ranking by the
  classifier classifies every candidate, down to the detector's lowest score, so that the curve covers the same
  candidates as the detector's own; the figures "at threshold" stay those of the detector's registry threshold.
- ``measure(volume, candidate)``: diameters of a detected nodule (anything with ``mean_diameter_mm``; None
  or ValueError when it finds no nodule there, counted as a failure); :func:`measure_with` adapts
  ``models.measurement.measure_nodule``. Without it the diameter error is that of the detector's box
  diameter (coarse).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from models import metrics, plots
from models.candidates import Candidate
from synth.manifest import GroundTruth, NoduleRecord, StudyTruth

if TYPE_CHECKING:
    from nightscan.settings import Settings
    from workers.volume import Volume

logger = logging.getLogger(__name__)

IMAGE_ROLE = "image"
"""WrittenObjectRecord.role of the objects that are slices of the study's CT series."""
SIZES_OF_INTEREST_MM = (4.0, 6.0)
REPORT_SIZE_BINS_MM: tuple[tuple[float, float], ...] = ((0.0, 4.0), *metrics.SIZE_BINS_MM)
NODULE_KINDS = ("solid", "part_solid", "ground_glass")
HIT_RULE = "candidate centre (patient coordinates, mm) within diameter/2 of a true nodule centre (LUNA16)"


class RankBy(StrEnum):
    """The score that orders the candidates for the FROC and CPM (each in 0..1)."""

    DETECTOR = "detector"
    CLASSIFIER = "classifier"
    PRODUCT = "product"

    @property
    def description(self) -> str:
        """The ranking score in words, for the report."""
        return {
            RankBy.DETECTOR: "detector score",
            RankBy.CLASSIFIER: "classifier nodule probability",
            RankBy.PRODUCT: "detector score x classifier nodule probability",
        }[self]


class Detector(Protocol):
    """What the evaluation needs of a detector (:class:`models.inference.NoduleDetector` is one)."""

    @property
    def name(self) -> str: ...

    @property
    def version(self) -> str: ...

    @property
    def sha256(self) -> str: ...

    score_threshold: float

    def detect(
        self, hu: np.ndarray, spacing_zyx_mm: tuple[float, float, float], *, score_threshold: float | None = None
    ) -> list[Candidate]: ...


class CandidateClassLike(Protocol):
    """A classifier's verdict on one candidate: nodule probability (0..1) and type (None when not typed)."""

    @property
    def nodule_probability(self) -> float: ...

    @property
    def nodule_type(self) -> str | None: ...


@dataclass(frozen=True)
class CandidateClass:
    """A plain :class:`CandidateClassLike`; `nodule_type` one of :data:`NODULE_KINDS` or None."""

    nodule_probability: float
    nodule_type: str | None = None


class MeasurementLike(Protocol):
    """A measured nodule: mean diameter in mm (``models.measurement``'s results have it)."""

    @property
    def mean_diameter_mm(self) -> float: ...


Classify = Callable[["Volume", Sequence[Candidate]], Sequence[CandidateClassLike]]
Measure = Callable[["Volume", Candidate], MeasurementLike | None]


class _Classifies(Protocol):
    def classify(
        self, hu: np.ndarray, spacing_zyx_mm: tuple[float, float, float], centers_zyx_vox: Sequence[Sequence[float]]
    ) -> Sequence[CandidateClassLike]: ...


def ranking_score(rank_by: RankBy, candidate: Candidate, verdict: CandidateClassLike | None) -> float:
    """The score (0..1) that ranks `candidate` for the FROC: its detector score, the classifier's nodule
    probability in `verdict`, or their product. ValueError naming the candidate when `verdict` is needed but None.
    """
    if rank_by is RankBy.DETECTOR:
        return float(candidate.score)
    if verdict is None:
        raise ValueError(f"ranking by {rank_by.value} needs the classifier's verdict on {candidate}, got none")
    probability = float(verdict.nodule_probability)
    return probability if rank_by is RankBy.CLASSIFIER else float(candidate.score) * probability


def classify_with(classifier: _Classifies) -> Classify:
    """A classify step from a classifier with ``classify(hu, spacing_zyx_mm, centers_zyx_vox)``."""

    def step(volume: Volume, candidates: Sequence[Candidate]) -> Sequence[CandidateClassLike]:
        return classifier.classify(volume.hu, volume.spacing_zyx_mm, [c.center_zyx_vox for c in candidates])

    return step


def measure_with(measure_fn: Callable[..., MeasurementLike]) -> Measure:
    """A measure step from ``measure_fn(hu, spacing_zyx_mm, center_zyx_vox, *, approx_diameter_mm)``."""

    def step(volume: Volume, candidate: Candidate) -> MeasurementLike:
        return measure_fn(
            volume.hu, volume.spacing_zyx_mm, candidate.center_zyx_vox, approx_diameter_mm=candidate.diameter_mm
        )

    return step


@dataclass
class _StudyResult:
    """One evaluated study: the truth, the candidates (all scores) with their world centres, and the match."""

    study: StudyTruth
    candidates: list[Candidate]
    centers_xyz_mm: np.ndarray
    match: metrics.ScanMatch
    classes: dict[int, CandidateClassLike]  # candidate index -> verdict (kept at the threshold, or all: rank_by)
    measured_mm: dict[int, float]  # nodule index -> measured mean diameter of its best candidate
    seconds: dict[str, float]
    measure_failures: int = 0
    measured_type: dict[int, str] = field(default_factory=dict)  # nodule index -> the measurement's type

    @property
    def scores(self) -> list[float]:
        return [c.score for c in self.candidates]

    @property
    def diameters(self) -> list[float]:
        return [n.diameter_mm for n in self.study.nodules]

    def ranked_scan(self, rank_by: RankBy, min_diameter_mm: float) -> metrics.ScanScores:
        """The FROC inputs with the candidates scored by `rank_by` (each nodule's best candidate chosen anew)."""
        scores = [ranking_score(rank_by, c, self.classes.get(i)) for i, c in enumerate(self.candidates)]
        match = metrics.match_scan(
            self.centers_xyz_mm, scores, [n.center_xyz_mm for n in self.study.nodules], self.diameters
        )
        return metrics.scan_scores(match, scores, self.diameters, min_diameter_mm=min_diameter_mm)


def image_keys(study: StudyTruth) -> list[str]:
    """The object keys of the study's CT slices (role "image"); ValueError naming the study when there are none."""
    keys = [o.key for o in study.objects if o.role == IMAGE_ROLE]
    if not keys:
        roles = sorted({o.role for o in study.objects})
        raise ValueError(
            f"study {study.study_uid} of {study.patient_id} lists no image objects (roles {roles}); "
            "the ground truth must come from synth.archive with manifest version >= 2"
        )
    return keys


def evaluate_detector(
    ref: str,
    archive_url: str,
    truth: GroundTruth,
    out_dir: Path,
    settings: Settings | None = None,
    *,
    detector: Detector | None = None,
    classify: Classify | None = None,
    measure: Measure | None = None,
    rank_by: RankBy | str = RankBy.DETECTOR,
    registry_path: Path | None = None,
    device: str = "cpu",
    classifier_threshold: float = 0.5,
    classifier_ref: str | None = None,
    classifier_sha256: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate detector `ref` ("name@version") on the studies of `truth`, stored at `archive_url`.

    `detector` replaces the registered one (tests); `classify`, `measure` and `rank_by` are the optional later
    steps (see the module's docstring); ranking by the classifier needs `classify`. `classifier_threshold` (0..1)
    is the nodule probability from which a candidate counts as a nodule; `classifier_ref` ("name@version") and
    `classifier_sha256` name the classifier behind `classify` in the report. Writes ``report.json`` and the PNG
    plots into `out_dir`; returns the report.
    """
    from nightscan.settings import Settings
    from nightscan.storage import open_storage
    from workers.series import DecodePool, load_series
    from workers.volume import IrregularSeries

    if not truth.studies:
        raise ValueError(f"the ground truth (seed {truth.seed}) holds no study")
    rank_by = RankBy(rank_by)
    if rank_by is not RankBy.DETECTOR and classify is None:
        raise ValueError(f"rank_by={rank_by.value!r} needs a classify step, got classify=None")
    settings = settings or Settings()
    entry_history: list[dict[str, Any]] = []
    if detector is None:
        from models.registry import get_entry, load_detector

        detector = load_detector(ref, device, registry_path=registry_path)
        entry_history = list(get_entry(ref, registry_path).metrics.get("history", []))
    else:
        entry = getattr(detector, "entry", None)
        entry_history = list(getattr(entry, "metrics", {}).get("history", [])) if entry is not None else []
    storage = open_storage(archive_url, settings)
    pool = DecodePool(1)
    policy = IrregularSeries(settings.irregular_series)
    threshold = float(detector.score_threshold)

    results: list[_StudyResult] = []
    started = time.perf_counter()
    with _progress(progress, len(truth.studies)) as advance:
        for study in truth.studies:
            t0 = time.perf_counter()
            volume, _ = load_series(
                image_keys(study), storage.get, fetch_threads=settings.fetch_threads, pool=pool, policy=policy
            )
            t1 = time.perf_counter()
            candidates = detector.detect(volume.hu, volume.spacing_zyx_mm, score_threshold=0.0)
            t2 = time.perf_counter()
            result = _match_study(study, volume, candidates)
            if rank_by is RankBy.DETECTOR:
                to_classify = [i for i, c in enumerate(candidates) if c.score >= threshold]
            else:
                to_classify = list(range(len(candidates)))
            if classify is not None and to_classify:
                verdicts = list(classify(volume, [candidates[i] for i in to_classify]))
                if len(verdicts) != len(to_classify):
                    raise ValueError(f"classify returned {len(verdicts)} verdicts for {len(to_classify)} candidates")
                result.classes = dict(zip(to_classify, verdicts, strict=True))
            t3 = time.perf_counter()
            if measure is not None:
                for j, best in enumerate(result.match.best_candidate):
                    if best is not None and candidates[best].score >= threshold:
                        try:
                            measured = measure(volume, candidates[best])
                        except ValueError as exc:
                            logger.warning("%s: no measurement at %s: %s", study.study_uid, candidates[best], exc)
                            measured = None
                        if measured is None:
                            result.measure_failures += 1
                        else:
                            result.measured_mm[j] = float(measured.mean_diameter_mm)
                            kind = getattr(measured, "nodule_type", None)
                            if kind is not None:
                                result.measured_type[j] = str(getattr(kind, "value", kind))
            t4 = time.perf_counter()
            result.seconds = {"load": t1 - t0, "detect": t2 - t1, "classify": t3 - t2, "measure": t4 - t3}
            result.seconds["total"] = t4 - t0
            results.append(result)
            n_hit = sum(1 for b in result.match.best_candidate if b is not None and candidates[b].score >= threshold)
            advance(1, note=f"{study.patient_id}: {n_hit}/{len(study.nodules)} nodules found")
            logger.debug("%s: %d candidates, %s", study.study_uid, len(candidates), result.seconds)
    pool.close()

    report = _report(
        ref=ref,
        detector=detector,
        archive_url=archive_url,
        truth=truth,
        results=results,
        threshold=threshold,
        measured=measure is not None,
        rank_by=rank_by,
        classifier=None
        if classify is None
        else {"ref": classifier_ref, "sha256": classifier_sha256, "threshold": classifier_threshold},
        classifier_threshold=classifier_threshold,
        wall_s=time.perf_counter() - started,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    report["plots"] = _plots(report, results, threshold, out_dir, entry_history)
    write_report(report, out_dir / "report.json")
    logger.info("evaluated %s on %d studies: report in %s", ref, len(results), out_dir)
    return report


def _progress(enabled: bool, total: int) -> Any:
    from contextlib import nullcontext

    if not enabled:
        return nullcontext(lambda n=1, note=None: None)
    from nightscan.progress import progress_bar

    return progress_bar("evaluating", total=total, unit="studies")


def _match_study(study: StudyTruth, volume: Volume, candidates: list[Candidate]) -> _StudyResult:
    centers = np.array([volume.to_patient(c.center_zyx_vox) for c in candidates], dtype=np.float64).reshape(-1, 3)
    nodules: list[NoduleRecord] = study.nodules
    match = metrics.match_scan(
        centers,
        [c.score for c in candidates],
        [n.center_xyz_mm for n in nodules],
        [n.diameter_mm for n in nodules],
    )
    return _StudyResult(study, candidates, centers, match, {}, {}, {})


def _detection(
    results: list[_StudyResult], threshold: float, min_diameter_mm: float, rank_by: RankBy
) -> dict[str, Any]:
    """FROC and CPM with the candidates ranked by `rank_by`; the operating point at the detector's `threshold`."""
    scans = [metrics.scan_scores(r.match, r.scores, r.diameters, min_diameter_mm=min_diameter_mm) for r in results]
    ranked = scans if rank_by is RankBy.DETECTOR else [r.ranked_scan(rank_by, min_diameter_mm) for r in results]
    curve = metrics.froc_curve(ranked)
    sensitivity, fp_per_scan = metrics.operating_point(scans, threshold)
    froc = metrics.froc(ranked)
    return {
        "n_nodules": curve.n_nodules,
        "froc": froc,
        "cpm": froc["cpm"],
        "sensitivity_at_1fp": metrics.sensitivity_at(curve, 1.0),
        "at_threshold": {"sensitivity": sensitivity, "fp_per_scan": fp_per_scan},
        "max_sensitivity": float(np.nanmax(curve.sensitivity)) if curve.n_nodules else math.nan,
        "curve": {"fp_per_scan": curve.fp_per_scan.tolist(), "sensitivity": curve.sensitivity.tolist()},
    }


def _detected_pairs(
    results: list[_StudyResult], threshold: float, *, measured: bool
) -> tuple[list[float], list[float]]:
    """(true, measured) mean diameters in mm of the nodules hit at `threshold` (measured: by `measure`)."""
    true_mm: list[float] = []
    measured_mm: list[float] = []
    for r in results:
        for j, (nodule, best) in enumerate(zip(r.study.nodules, r.match.best_candidate, strict=True)):
            if best is None or r.candidates[best].score < threshold:
                continue
            if measured:
                if j not in r.measured_mm:
                    continue
                value = r.measured_mm[j]
            else:
                value = r.candidates[best].diameter_mm
            true_mm.append(nodule.diameter_mm)
            measured_mm.append(value)
    return true_mm, measured_mm


def _report(
    *,
    ref: str,
    detector: Detector,
    archive_url: str,
    truth: GroundTruth,
    results: list[_StudyResult],
    threshold: float,
    measured: bool,
    rank_by: RankBy,
    classifier: dict[str, Any] | None,
    classifier_threshold: float,
    wall_s: float,
) -> dict[str, Any]:
    all_diameters = [n.diameter_mm for r in results for n in r.study.nodules]
    detected = [
        best is not None and r.candidates[best].score >= threshold for r in results for best in r.match.best_candidate
    ]
    fp_at_threshold = [sum(1 for i in r.match.false_positives if r.candidates[i].score >= threshold) for r in results]
    true_mm, measured_mm = _detected_pairs(results, threshold, measured=measured)
    t, m = np.array(true_mm), np.array(measured_mm)
    seconds = {key: [r.seconds[key] for r in results] for key in ("load", "detect", "classify", "measure", "total")}
    report: dict[str, Any] = {
        "model": {
            "ref": ref,
            "name": detector.name,
            "version": detector.version,
            "sha256": detector.sha256,
            "score_threshold": threshold,
        },
        "archive": archive_url,
        "truth": {
            "seed": truth.seed,
            "n_studies": len(results),
            "n_nodules": len(all_diameters),
            "n_nodules_ge_4mm": sum(d >= 4.0 for d in all_diameters),
            "n_nodules_ge_6mm": sum(d >= 6.0 for d in all_diameters),
            "options": truth.options,
        },
        "classifier": classifier,
        "hit_rule": HIT_RULE,
        "detection": {
            "ranked_by": rank_by.value,
            "ranking_score": rank_by.description,
            **{f"ge_{d:g}mm": _detection(results, threshold, d, rank_by) for d in SIZES_OF_INTEREST_MM},
            "fp_per_scan_at_threshold": float(np.mean(fp_at_threshold)),
            "sensitivity_by_size_at_threshold": metrics.sensitivity_by_size(
                all_diameters, detected, REPORT_SIZE_BINS_MM
            ),
        },
        "diameter": {
            "source": "measure" if measured else "detector box (mean in-plane extent)",
            "n_detected": len(true_mm),
            "measure_failures": sum(r.measure_failures for r in results),
            "mae_mm_ge_4mm": metrics.mean_absolute_error(t[t >= 4.0], m[t >= 4.0]),
            "mae_mm_ge_6mm": metrics.mean_absolute_error(t[t >= 6.0], m[t >= 6.0]),
            "by_size": metrics.diameter_error_by_size(true_mm, measured_mm, REPORT_SIZE_BINS_MM),
        },
        "classification": _classification(results, threshold, classifier_threshold),
        "finding_type": _finding_type(results, threshold),
        "timing": {
            "seconds_per_study": float(np.mean(seconds["total"])),
            **{f"{key}_seconds_per_study": float(np.mean(v)) for key, v in seconds.items() if key != "total"},
            "max_seconds_per_study": float(np.max(seconds["total"])),
            "wall_seconds": wall_s,
        },
        "studies": [_study_row(r, threshold) for r in results],
    }
    return report


def _study_row(r: _StudyResult, threshold: float) -> dict[str, Any]:
    nodules = []
    for j, (nodule, best) in enumerate(zip(r.study.nodules, r.match.best_candidate, strict=True)):
        row: dict[str, Any] = {
            "nodule_id": nodule.nodule_id,
            "diameter_mm": nodule.diameter_mm,
            "kind": nodule.kind,
            "best_score": r.candidates[best].score if best is not None else None,
            "detected_at_threshold": best is not None and r.candidates[best].score >= threshold,
        }
        if len(r.candidates):
            distances = np.linalg.norm(r.centers_xyz_mm - np.asarray(nodule.center_xyz_mm), axis=1)
            nearest = int(np.argmin(distances))
            row["nearest_candidate"] = {"distance_mm": float(distances[nearest]), "score": r.candidates[nearest].score}
        if best is not None:
            row["distance_mm"] = float(np.linalg.norm(r.centers_xyz_mm[best] - np.asarray(nodule.center_xyz_mm)))
            row["detector_diameter_mm"] = r.candidates[best].diameter_mm
            if j in r.measured_mm:
                row["measured_diameter_mm"] = r.measured_mm[j]
            if best in r.classes:
                row["predicted_type"] = r.classes[best].nodule_type
                row["nodule_probability"] = r.classes[best].nodule_probability
        nodules.append(row)
    return {
        "patient_id": r.study.patient_id,
        "study_uid": r.study.study_uid,
        "n_candidates": len(r.candidates),
        "n_candidates_at_threshold": sum(c.score >= threshold for c in r.candidates),
        "false_positives_at_threshold": sum(1 for i in r.match.false_positives if r.candidates[i].score >= threshold),
        "nodules": nodules,
        "seconds": r.seconds,
    }


def _classification(
    results: list[_StudyResult], threshold: float, classifier_threshold: float
) -> dict[str, Any] | None:
    """Nodule-vs-not over the candidates kept at the detector threshold; type over the detected nodules."""
    kept_by_study = [sorted(i for i in r.classes if r.candidates[i].score >= threshold) for r in results]
    if not any(kept_by_study):
        return None
    labels: list[bool] = []
    probabilities: list[float] = []
    true_kinds: list[str] = []
    predicted_kinds: list[str] = []
    scans_by_size: dict[float, list[metrics.ScanScores]] = {d: [] for d in SIZES_OF_INTEREST_MM}
    for r, kept in zip(results, kept_by_study, strict=True):
        for i in kept:
            labels.append(bool(r.match.hits[i].any()))
            probabilities.append(float(r.classes[i].nodule_probability))
        prob = np.zeros(len(r.candidates))
        for i in kept:
            prob[i] = float(r.classes[i].nodule_probability)
        sub = metrics.match_scan(
            r.centers_xyz_mm[kept], prob[kept], [n.center_xyz_mm for n in r.study.nodules], r.diameters
        )
        for d in SIZES_OF_INTEREST_MM:
            scans_by_size[d].append(metrics.scan_scores(sub, prob[kept], r.diameters, min_diameter_mm=d))
        for nodule, best in zip(r.study.nodules, r.match.best_candidate, strict=True):
            if best is None or r.candidates[best].score < threshold or best not in r.classes:
                continue
            kind = r.classes[best].nodule_type
            if kind is not None:
                true_kinds.append(str(nodule.kind))
                predicted_kinds.append(str(kind))
    y_pred = [p >= classifier_threshold for p in probabilities]
    cm = metrics.confusion_matrix([int(v) for v in labels], [int(v) for v in y_pred], [0, 1])
    out: dict[str, Any] = {
        "candidates": len(labels),
        "label_rule": "a candidate is a nodule when it hits any true nodule (any size)",
        "nodule_vs_not": {
            "threshold": classifier_threshold,
            **metrics.binary_metrics(cm),
            "confusion_matrix": cm.tolist(),
            "roc_auc": math.nan,
        },
        "detection_with_classifier": {f"ge_{d:g}mm": metrics.froc(s) for d, s in scans_by_size.items()},
        "type": None,
    }
    if any(labels) and not all(labels):
        fpr, tpr, _ = metrics.roc_curve(labels, probabilities)
        out["nodule_vs_not"]["roc_auc"] = metrics.roc_auc(labels, probabilities)
        out["nodule_vs_not"]["roc"] = {"fpr": fpr.tolist(), "tpr": tpr.tolist()}
    if true_kinds:
        kinds = list(NODULE_KINDS) + sorted(set(true_kinds + predicted_kinds) - set(NODULE_KINDS))
        type_cm = metrics.confusion_matrix(true_kinds, predicted_kinds, kinds)
        out["type"] = {
            "labels": kinds,
            "n": len(true_kinds),
            "confusion_matrix": type_cm.tolist(),
            **metrics.multiclass_metrics(type_cm, kinds),
        }
    return out


def _finding_type(results: list[_StudyResult], threshold: float) -> dict[str, Any] | None:
    """Type accuracy of the detected nodules as the workers report it: the measurement's type, else the
    classifier's (workers.findings); None when neither gave a type."""
    true_kinds: list[str] = []
    predicted: list[str] = []
    sources = {"measurement": 0, "classifier": 0}
    for r in results:
        for j, (nodule, best) in enumerate(zip(r.study.nodules, r.match.best_candidate, strict=True)):
            if best is None or r.candidates[best].score < threshold:
                continue
            verdict = r.classes.get(best)
            if j in r.measured_type:
                kind, source = r.measured_type[j], "measurement"
            elif verdict is not None and verdict.nodule_type is not None:
                kind, source = str(verdict.nodule_type), "classifier"
            else:
                continue
            true_kinds.append(str(nodule.kind))
            predicted.append(kind)
            sources[source] += 1
    if not true_kinds:
        return None
    kinds = list(NODULE_KINDS) + sorted(set(true_kinds + predicted) - set(NODULE_KINDS))
    cm = metrics.confusion_matrix(true_kinds, predicted, kinds)
    return {
        "rule": "the measurement's type where the nodule was measured, else the classifier's (as workers report it)",
        "n": len(true_kinds),
        "sources": sources,
        "labels": kinds,
        "confusion_matrix": cm.tolist(),
        "accuracy": metrics.accuracy(cm),
    }


def _plots(
    report: dict[str, Any],
    results: list[_StudyResult],
    threshold: float,
    out_dir: Path,
    history: list[dict[str, Any]],
) -> dict[str, str]:
    """Write the PNGs; returns {plot: file name in out_dir}."""
    ref = report["model"]["ref"]
    written: dict[str, Path] = {}
    curves = {}
    for d in SIZES_OF_INTEREST_MM:
        det = report["detection"][f"ge_{d:g}mm"]
        if det["n_nodules"]:
            curves[f"nodules >= {d:g} mm (n={det['n_nodules']})"] = (
                det["curve"]["fp_per_scan"],
                det["curve"]["sensitivity"],
                det["cpm"],
            )
    if curves:
        ranking = RankBy(report["detection"]["ranked_by"])
        title = f"{ref}: FROC" if ranking is RankBy.DETECTOR else f"{ref}: FROC\nranked by {ranking.description}"
        written["froc"] = plots.froc_plot(curves, out_dir / "froc.png", title=title)
    true_mm, measured_mm = _detected_pairs(results, threshold, measured=report["diameter"]["source"] == "measure")
    if true_mm:
        written["diameter"] = plots.diameter_scatter_plot(
            true_mm,
            measured_mm,
            out_dir / "diameter.png",
            mae_mm=report["diameter"]["mae_mm_ge_4mm"],
            title=f"{ref}: diameter ({report['diameter']['source']})",
        )
    if history:
        written["training_curves"] = plots.training_curves_plot(
            history, out_dir / "training_curves.png", title=f"{ref}: training"
        )
    classification = report["classification"]
    if classification is not None:
        nvn = classification["nodule_vs_not"]
        if "roc" in nvn:
            written["roc"] = plots.roc_plot(
                nvn["roc"]["fpr"], nvn["roc"]["tpr"], nvn["roc_auc"], out_dir / "roc.png", title=f"{ref}: nodule vs not"
            )
        written["confusion_nodule"] = plots.confusion_matrix_plot(
            np.array(nvn["confusion_matrix"]), ["not nodule", "nodule"], out_dir / "confusion_nodule.png"
        )
        if classification["type"] is not None:
            written["confusion_type"] = plots.confusion_matrix_plot(
                np.array(classification["type"]["confusion_matrix"]),
                classification["type"]["labels"],
                out_dir / "confusion_type.png",
                title="nodule type",
            )
    return {name: path.name for name, path in written.items()}


def _jsonable(value: Any) -> Any:
    """NaN and infinities become None (JSON has no NaN); numpy scalars become Python numbers."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_report(report: dict[str, Any], path: Path) -> Path:
    """Write `report` as strict JSON (NaN -> null) to `path`; returns the path."""
    path.write_text(json.dumps(_jsonable(report), indent=1, allow_nan=False) + "\n", encoding="utf-8")
    return path
