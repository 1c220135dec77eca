"""The candidate classifier in the worker: its setting, loaded once per process, and run on every candidate."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from db.migrate import upgrade
from db.models import Analysis, AnalysisStatus
from models.registry import get_entry
from models.store import publish
from nightscan.runtime import session_factory
from nightscan.settings import Settings
from nightscan.storage import open_storage
from scheduler.scan import scan
from synth.archive import generate_archive
from workers.context import WorkerContext
from workers.findings import Classification
from workers.pipeline import VOUCHED_PROBABILITY, run_analysis, vouched

CLASSIFIER_REF = "nodule-classifier@0.4.0"


def test_the_classifier_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NIGHTSCAN_CLASSIFIER", raising=False)
    assert Settings().classifier == CLASSIFIER_REF
    for off in ("", "none", " None "):
        monkeypatch.setenv("NIGHTSCAN_CLASSIFIER", off)
        assert Settings().classifier is None, off
    monkeypatch.setenv("NIGHTSCAN_CLASSIFIER", "nodule-classifier@9.9.9")
    assert Settings().classifier == "nodule-classifier@9.9.9"
    assert Settings(classifier="none").classifier is None


def test_the_classifier_is_loaded_once_from_the_model_store(tmp_path: Path) -> None:
    publish(open_storage((tmp_path / "store").as_uri()))
    settings = Settings(data_dir=tmp_path, model_store_url=(tmp_path / "store").as_uri())
    ctx = WorkerContext(settings)
    classifier = ctx.classifier(CLASSIFIER_REF)
    assert classifier is ctx.classifier(CLASSIFIER_REF)
    assert classifier.sha256 == get_entry(CLASSIFIER_REF).sha256
    assert (tmp_path / "model-cache" / get_entry(CLASSIFIER_REF).weights).is_file()  # fetched, then hash-checked


def analyse(settings: Settings) -> Analysis:
    """Scan the archive of `settings` into its (migrated) database, run the one planned analysis in this process,
    and return it with its findings loaded."""
    factory = session_factory(settings)
    assert scan(settings.resolved_archive_url, settings, factory, send=None).planned == 1
    with factory() as session:
        analysis_id = session.scalar(select(Analysis.id))
    assert run_analysis(analysis_id, WorkerContext(settings)) == "done"
    with factory() as session:
        analysis = session.get(Analysis, analysis_id)
        assert analysis.status == AnalysisStatus.DONE, analysis.error
        analysis.findings  # noqa: B018 (loaded before the session closes)
        return analysis


def test_findings_carry_the_classifier_probability_and_none_is_dropped(tmp_path: Path) -> None:
    base = Settings(data_dir=tmp_path, series_quiet_s=0, decode_processes=1, finding_min_score=None)
    generate_archive(open_storage(base.resolved_archive_url).put, n_patients=1, seed=11, shape_zyx=(48, 96, 96))
    runs = {}
    for name, classifier in (("with", CLASSIFIER_REF), ("without", None)):
        url = f"sqlite:///{tmp_path / name}.db"
        upgrade(url)
        runs[name] = analyse(Settings(**{**base.model_dump(), "database_url": url, "classifier": classifier}))
    with_classifier, without = runs["with"], runs["without"]

    assert (without.classifier, without.classifier_sha256, without.study_score) == (None, None, None)
    assert "classify" not in without.timings_s
    assert all(f.probability is None for f in without.findings)

    assert with_classifier.findings, "the detector found nothing: pick another seed"
    assert with_classifier.classifier == CLASSIFIER_REF
    assert with_classifier.classifier_sha256 == get_entry(CLASSIFIER_REF).sha256
    assert with_classifier.timings_s["classify"] >= 0
    probabilities = [f.probability for f in with_classifier.findings]
    assert all(0.0 <= p <= 1.0 for p in probabilities) and all(f.nodule_type for f in with_classifier.findings)
    assert with_classifier.study_score == pytest.approx(max(probabilities), abs=1e-4)  # the highest probability
    # from the detector's threshold, the classifier only adds its verdict: every candidate stays a finding, in order
    assert [(f.score, f.center_x_mm, f.diameter_mm) for f in with_classifier.findings] == [
        (f.score, f.center_x_mm, f.diameter_mm) for f in without.findings
    ]


def test_findings_under_the_detector_threshold_are_those_the_classifier_vouches_for(tmp_path: Path) -> None:
    base = Settings(data_dir=tmp_path, series_quiet_s=0, decode_processes=1)
    generate_archive(open_storage(base.resolved_archive_url).put, n_patients=1, seed=11, shape_zyx=(48, 96, 96))
    threshold = get_entry(base.detector).score_threshold
    runs = {}
    for name, classifier, floor in (
        ("registered", CLASSIFIER_REF, None),
        ("floor", CLASSIFIER_REF, 0.02),
        ("no classifier", None, 0.02),
    ):
        url = f"sqlite:///{tmp_path / name.replace(' ', '_')}.db"
        upgrade(url)
        settings = {**base.model_dump(), "database_url": url, "classifier": classifier, "finding_min_score": floor}
        runs[name] = [(f.score, f.probability) for f in analyse(Settings(**settings)).findings]
    registered, floor, no_classifier = (sorted(runs[name]) for name in ("registered", "floor", "no classifier"))

    assert registered and all(score >= threshold for score, _ in registered)
    assert [f for f in floor if f[0] >= threshold] == registered  # the same candidates above the threshold
    under = [f for f in floor if f[0] < threshold]
    assert all(score >= 0.02 and probability >= VOUCHED_PROBABILITY for score, probability in under)
    assert [score for score, _ in no_classifier] == [score for score, _ in registered]  # nobody to vouch: no floor


def test_vouched_keeps_the_candidates_above_the_threshold_and_the_confident_ones_under_it() -> None:
    from types import SimpleNamespace

    detector = SimpleNamespace(score_threshold=0.5)
    candidates = [SimpleNamespace(score=s) for s in (0.9, 0.6, 0.3, 0.1, 0.05)]
    verdicts = [Classification(p, "solid") for p in (0.01, 0.2, 0.5, 0.49, 0.9999)]
    kept, kept_verdicts = vouched(candidates, verdicts, detector)
    assert [c.score for c in kept] == [0.9, 0.6, 0.3, 0.05]  # 0.1 at p 0.49 is dropped
    assert [v.probability for v in kept_verdicts] == [0.01, 0.2, 0.5, 0.9999]


def test_the_finding_min_score_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NIGHTSCAN_FINDING_MIN_SCORE", raising=False)
    assert Settings().finding_min_score == 0.05
    monkeypatch.setenv("NIGHTSCAN_FINDING_MIN_SCORE", "0.2")
    assert Settings().finding_min_score == 0.2
    for registered in ("", "none"):
        monkeypatch.setenv("NIGHTSCAN_FINDING_MIN_SCORE", registered)
        assert Settings().finding_min_score is None, registered
    with pytest.raises(ValueError, match="finding_min_score"):
        Settings(finding_min_score=1.5)
