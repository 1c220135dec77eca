"""``nightscan follow-up evaluate`` end to end on a tiny archive: the real analyses (detector, classifier,
measurement, spiculation), the step, and a report whose figures add up."""

from __future__ import annotations

import math
from pathlib import Path

from sqlalchemy import select

from db.engine import transaction
from db.models import Analysis
from nightscan.cli_followup import print_report
from nightscan.runtime import session_factory
from nightscan.settings import Settings
from workers.followup import NODULE_CRITERIA
from workers.followup_eval import (
    EvaluationArchive,
    _Hit,
    _set_by_false_positive,
    evaluate,
    record_missing_lung_centroids,
)


def test_a_tiny_archive_is_analysed_followed_and_scored(tmp_path: Path) -> None:
    spec = EvaluationArchive(
        work_dir=tmp_path / "eval", n_patients=4, seed=3, studies_per_patient=2, shape_zyx=(48, 160, 160)
    )
    out = tmp_path / "report.json"
    report = evaluate(spec, Settings(data_dir=tmp_path), out_path=out, sweep=(NODULE_CRITERIA,))

    result = report["result"]
    assert out.exists() and report["archive"]["studies"] == result["studies"] == 8
    assert report["step"]["stored_vs_pure_disagreements"] == 0  # the rows the step wrote = the pure computation
    assert result["lungrads_agree"] == sum(s["truth"] == s["assessed"] for s in result["per_study"])
    assert 0.0 <= result["lungrads_accuracy"] <= result["same_next_step"] <= 1.0
    assert sum(result["lungrads_causes"].values()) == result["studies"] - result["lungrads_agree"]
    for study in result["per_study"]:  # each disagreement carries its nodules and findings; the others do not
        assert ("detail" in study) == bool(study["cause"])
        if study["cause"]:
            nodules = study["detail"]["nodules"]
            assert (
                len(nodules) == study["true_nodules"] and sum(n["found"] is not None for n in nodules) == study["found"]
            )
    by_fp = [s for s in result["per_study"] if s["set_by_false_positive"]]
    assert result["lungrads_agree_set_by_false_positive"] == len(by_fp) <= result["lungrads_agree"]
    assert all(s["truth"] == s["assessed"] != "1" for s in by_fp)
    assert report["ceiling"]["lungrads_accuracy_by_noise_mm"]["0"] == 1.0
    kept = result["diameter_error"]["all"]["nodules"]
    assert kept == result["detection"]["found_and_kept"]
    assert report["sweep"][0]["lungrads_accuracy"] == result["lungrads_accuracy"]  # the same criteria, both paths
    vdt = result["vdt"]
    assert vdt["within_25pct_where_growth_shown"] <= vdt["growth_shown"] <= len(vdt["rows"])
    holds = [
        r["lesion_range"] is not None
        and r["lesion_range"][0] <= r["true_vdt_days"] <= (r["lesion_range"][1] or math.inf)
        for r in vdt["rows"]
    ]
    assert vdt["range_holds_truth"] == sum(holds)

    again = evaluate(spec, Settings(data_dir=tmp_path), sweep=())  # cached: only the step and the scoring run
    assert again["result"]["per_study"] == result["per_study"]
    print_report(report)

    settings = spec.settings(Settings(data_dir=tmp_path))
    factory = session_factory(settings)
    with transaction(factory) as session:  # every analysis recorded the lungs; forget them, as an older worker did
        analyses = list(session.scalars(select(Analysis).order_by(Analysis.id)))
        recorded = [analysis.volume["lung_centroid_mm"] for analysis in analyses]
        for analysis in analyses:
            analysis.volume = {k: v for k, v in analysis.volume.items() if k != "lung_centroid_mm"}
    # 160 x 160 pixels of 1.4 mm: these studies' lungs reach the slices' edges, and give none (tests/test_lungs.py)
    assert len(recorded) == 8 and all(centroid is None or len(centroid) == 3 for centroid in recorded)
    assert record_missing_lung_centroids(settings) == len(analyses) and record_missing_lung_centroids(settings) == 0
    with factory() as session:
        assert [session.get(Analysis, a.id).volume["lung_centroid_mm"] for a in analyses] == recorded


def test_a_right_category_set_by_a_false_positive_is_told_apart() -> None:
    """Truth 2 from a missed 4 mm nodule; the study reads 2 from finding 7, on no true nodule (a false positive)."""
    import datetime as dt

    from screening.longitudinal import NoduleResult, StudyResult
    from screening.types import LungRads

    def study(*nodules: tuple[int, LungRads]) -> StudyResult:
        results = tuple(NoduleResult(key, 0, category, "", None, None, False) for key, category in nodules)
        category = max((c for _, c in nodules), default=LungRads.CAT1)
        date = dt.date(2026, 1, 1)
        return StudyResult(1, date, category, "", results, None, None, date, (0.0, 0.0, 0.0), "none")

    missed = _Hit("P-L1", 0, 4.0, "2", None, False)
    found = _Hit("P-L1", 0, 4.0, "2", 9, True)
    assert _set_by_false_positive(study((7, LungRads.CAT2)), [missed])
    assert not _set_by_false_positive(study((9, LungRads.CAT2), (7, LungRads.CAT2)), [found])  # a true one too
    assert _set_by_false_positive(study((9, LungRads.CAT2), (7, LungRads.CAT3)), [found])  # the 3 sets it
    assert not _set_by_false_positive(study(), [missed])  # category 1: no nodule sets it


def test_a_true_nodule_is_matched_to_its_kept_finding_before_a_nearer_duplicate() -> None:
    """The measurement re-centres duplicates on one nodule: the kept finding 0.2 mm off, a left-out one 0.1 mm off.
    The nodule is found and kept through the kept one; a finding farther than the hit radius never matches."""
    from db.longitudinal import FindingRow
    from synth.manifest import NoduleRecord, StudyTruth
    from workers.followup_eval import _match_truth

    def finding(key: int, x: float) -> FindingRow:
        return FindingRow(key, (x, 0.0, 0.0), 17.3, None, None, None, "solid", None, 1.0, 0.9, None)

    nodule = NoduleRecord("P-L1", (0.0, 0.0, 0.0), (0.0, 0.0, 0.0), 17.5, "solid", lung_rads="4B")
    study = StudyTruth("P", "1.2", "1.3", "20260101", 10, (10, 10, 10), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), [nodule])
    findings = [finding(247, 0.1), finding(243, 0.2), finding(250, 9.0)]
    (hit,) = _match_truth(study, findings, kept={243, 250})
    assert (hit.finding_id, hit.kept) == (243, True)
    (hit,) = _match_truth(study, findings, kept=set())
    assert (hit.finding_id, hit.kept) == (247, False)


def test_a_disagreement_shows_each_true_nodule_with_its_finding_and_the_kept_false_positives() -> None:
    """Truth 3 from a part-solid nodule measured ground glass; a 4 mm nodule missed; a kept finding on no nodule.
    The report's detail says so without the database."""
    import datetime as dt

    from db.longitudinal import FindingRow
    from screening.longitudinal import StudyResult
    from screening.types import LungRads
    from synth.manifest import NoduleRecord, StudyTruth
    from workers.followup_eval import _disagreement_detail, _match_truth

    part_solid = NoduleRecord("P-L1", (0.0, 0.0, 0.0), (0.0, 0.0, 0.0), 7.2, "part_solid", solid_component_mm=2.7)
    small = NoduleRecord("P-L2", (40.0, 0.0, 0.0), (0.0, 0.0, 0.0), 4.0, "solid", lung_rads="2")
    truth = StudyTruth(
        "P", "1.2", "1.3", "20260101", 10, (10, 10, 10), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), [part_solid, small]
    )
    findings = [
        FindingRow(5, (0.1, 0.0, 0.0), 7.0, None, None, None, "ground_glass", None, 0.99, 0.999, None, 0.05),
        FindingRow(6, (-60.0, 0.0, 0.0), 5.0, None, None, None, "solid", None, 0.9, 0.9, None),
    ]
    kept = {5, 6}
    date = dt.date(2026, 1, 1)
    assessed = StudyResult(1, date, LungRads.CAT2, "ours", (), None, None, date, (0.0, 0.0, 0.0), "none")

    detail = _disagreement_detail(truth, assessed, findings, _match_truth(truth, findings, kept), kept)

    assert (detail["reason"], [n["track"] for n in detail["nodules"]]) == ("ours", ["P-L1", "P-L2"])
    measured = detail["nodules"][0]["found"]
    assert (measured["finding"], measured["type"], measured["kept"]) == (5, "ground_glass", True)
    assert measured["log_odds"] == round(math.log(0.99 / 0.01) + math.log(0.999 / 0.001), 2)
    assert detail["nodules"][1]["found"] is None  # missed
    assert [f["finding"] for f in detail["false_positives"]] == [6]
