"""``nightscan diff``: patients whose category changed between two versions, and why, in PostgreSQL and SQLite."""

from __future__ import annotations

import csv
import io
import json
from datetime import date

import pytest
from click.testing import CliRunner

from db.engine import make_engine, make_sessionmaker, transaction
from nightscan.cli import main
from scheduler.version_diff import diff_versions
from tests.hand_built import add_analysis, add_assessment, add_finding, add_lesion, add_patient, add_study, key_of

V1 = "nodule-detector@0.2.0"
V2 = "nodule-detector@0.3.0"


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest) -> str:
    url: str = request.getfixturevalue(f"{request.param}_url")
    factory = make_sessionmaker(make_engine(url))
    with transaction(factory) as session:
        # up: V2 finds a second nodule and sizes the first larger
        up = add_patient(session, "up")
        study, series = add_study(session, up, date(2026, 1, 10))
        a, b = add_analysis(session, study, series, V1), add_analysis(session, study, series, V2)
        add_finding(
            session, a, (0.0, 0.0, 0.0), 6.0, add_lesion(session, up, V1, 1), long_axis_mm=6.2, short_axis_mm=5.8
        )
        add_finding(
            session, b, (1.0, 0.0, 0.0), 6.5, add_lesion(session, up, V2, 1), long_axis_mm=6.9, short_axis_mm=6.1
        )
        add_finding(session, b, (50.0, 0.0, 0.0), 8.2, add_lesion(session, up, V2, 2))
        add_assessment(session, a, study, "2", "baseline solid 6.0 mm")
        add_assessment(session, b, study, "4A", "baseline solid 8.2 mm (L2)")
        # down: V2 drops the nodule V1 saw; its latest common study decides, not an older one
        down = add_patient(session, "down")
        old, old_series = add_study(session, down, date(2024, 2, 1))
        add_assessment(session, add_analysis(session, old, old_series, V1), old, "1")
        add_assessment(session, add_analysis(session, old, old_series, V2), old, "1")
        study, series = add_study(session, down, date(2025, 2, 1))
        a, b = add_analysis(session, study, series, V1), add_analysis(session, study, series, V2)
        add_finding(session, a, (30.0, 10.0, -5.0), 9.0, add_lesion(session, down, V1, 1))
        add_assessment(session, a, study, "4A", "new solid 9.0 mm")
        add_assessment(session, b, study, "1", "no nodule")
        newer, newer_series = add_study(session, down, date(2026, 2, 1))  # V1 only: not compared
        add_assessment(session, add_analysis(session, newer, newer_series, V1), newer, "4B")
        # same: no change
        same = add_patient(session, "same")
        study, series = add_study(session, same, date(2026, 3, 3))
        a, b = add_analysis(session, study, series, V1), add_analysis(session, study, series, V2)
        add_finding(session, a, (5.0, 5.0, 5.0), 4.0, add_lesion(session, same, V1, 1))
        add_finding(session, b, (5.5, 5.0, 5.0), 4.4, add_lesion(session, same, V2, 1))
        add_assessment(session, a, study, "2")
        add_assessment(session, b, study, "2")
        # only V1 so far
        waiting = add_patient(session, "waiting")
        study, series = add_study(session, waiting, date(2026, 4, 4))
        add_assessment(session, add_analysis(session, study, series, V1), study, "3")
    return url


def test_diff_lists_changed_patients_with_reasons_and_lesions(db_url: str) -> None:
    with make_sessionmaker(make_engine(db_url))() as session:
        report = diff_versions(session, V1, V2)
        every = diff_versions(session, V1, V2, every=True)
    assert (report.compared, report.only_a, report.only_b, report.up, report.down) == (3, 1, 0, 1, 1)
    up, down = report.changes
    assert up.patient == key_of("up")[:12] and (up.category_a, up.category_b, up.direction) == ("2", "4A", "up")
    assert up.reason_b == "baseline solid 8.2 mm (L2)"
    assert up.lesions_added == ("L2 8.2 mm",) and up.lesions_removed == ()
    assert (up.biggest_change, up.biggest_change_mm) == ("L1 -> L1", 0.5)  # 6.0 -> 6.5 mm mean diameter
    assert (down.study_date, down.category_a, down.category_b) == (date(2025, 2, 1), "4A", "1")
    assert down.lesions_removed == ("L1 9.0 mm",) and down.biggest_change is None
    assert [c.direction for c in every.changes] == ["up", "down", "same"]
    assert every.changes[2].biggest_change_mm == 0.4
    with pytest.raises(ValueError, match=V1):
        diff_versions(session, V1, V1)


def test_cli_diff_formats_show_key_prefixes_only(db_url: str) -> None:
    runner = CliRunner()
    env = {"NIGHTSCAN_DATABASE_URL": db_url, "NIGHTSCAN_LOG_LEVEL": "WARNING"}
    table = runner.invoke(main, ["diff", V1, V2], env={**env, "COLUMNS": "200"})
    assert table.exit_code == 0, table.output
    assert key_of("up")[:12] in table.output and key_of("up") not in table.output
    assert "2 -> 4A" in table.output and "L2 8.2 mm" in table.output
    as_csv = runner.invoke(main, ["diff", V1, V2, "--format", "csv"], env=env)
    rows = list(csv.DictReader(io.StringIO(as_csv.output)))
    assert [(r["patient"], r["category_a"], r["category_b"]) for r in rows] == [
        (key_of("up")[:12], "2", "4A"),
        (key_of("down")[:12], "4A", "1"),
    ]
    as_json = json.loads(runner.invoke(main, ["diff", V1, V2, "--format", "json", "--all"], env=env).output)
    assert (as_json["compared"], as_json["changed"], as_json["only_a"]) == (3, 2, 1)
    assert as_json["patients"][0]["lesions_added"] == ["L2 8.2 mm"] and len(as_json["patients"]) == 3
    bad = runner.invoke(main, ["diff", "v1", V2], env=env)
    assert bad.exit_code == 2 and "'v1'" in bad.output
