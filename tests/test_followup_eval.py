"""``nightscan follow-up evaluate`` end to end on a tiny archive: the real analyses (detector, classifier,
measurement, spiculation), the step, and a report whose figures add up."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from db.engine import transaction
from db.models import Analysis
from nightscan.cli_followup import print_report
from nightscan.runtime import session_factory
from nightscan.settings import Settings
from workers.followup import NODULE_CRITERIA
from workers.followup_eval import EvaluationArchive, evaluate, record_missing_lung_centroids


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
    assert report["ceiling"]["lungrads_accuracy_by_noise_mm"]["0"] == 1.0
    kept = result["diameter_error"]["all"]["nodules"]
    assert kept == result["detection"]["found_and_kept"]
    assert report["sweep"][0]["lungrads_accuracy"] == result["lungrads_accuracy"]  # the same criteria, both paths

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
