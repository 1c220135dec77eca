"""``nightscan report worklist|patient|study|run`` on PostgreSQL and SQLite: terminal table, CSV and JSON."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from nightscan.cli import main
from tests.reports_seed import MODEL, SECRET, TODAY, Seeded, seed


@pytest.fixture(params=["postgres", "sqlite"])
def seeded(request: pytest.FixtureRequest) -> tuple[str, Seeded]:
    url = request.getfixturevalue("postgres_url" if request.param == "postgres" else "sqlite_url")
    return url, seed(url)


def run(url: str, *args: str) -> Result:
    env = {"NIGHTSCAN_DATABASE_URL": url, "NIGHTSCAN_PSEUDONYM_KEY": SECRET, "NIGHTSCAN_DETECTOR": MODEL}
    result = CliRunner().invoke(main, ["report", *args], env=env, catch_exceptions=False)
    return result


def test_worklist_in_three_formats(seeded: tuple[str, Seeded], tmp_path: Path) -> None:
    url, data = seeded
    table = run(url, "worklist", "--as-of", TODAY.isoformat())
    assert table.exit_code == 0, table.output
    assert data.keys["PAT-0001"][:16] in table.output and "Lung-RADS 4A" in table.output
    assert data.keys["PAT-0002"][:16] not in table.output
    rows = list(
        csv.DictReader(io.StringIO(run(url, "worklist", "--as-of", TODAY.isoformat(), "--format", "csv").output))
    )
    assert [r["patient_key"] for r in rows] == [data.keys["PAT-0001"], data.keys["O'Brien/77"]]
    assert rows[0]["lungrads"] == "4A" and rows[0]["vdt_min_days"] == "180.0"
    out = tmp_path / "worklist.json"
    result = run(url, "worklist", "--as-of", TODAY.isoformat(), "--format", "json", "--out", str(out))
    assert result.exit_code == 0 and result.stdout == ""  # the log line goes to stderr
    payload = json.loads(out.read_text())
    assert payload["model"] == MODEL and len(payload["items"]) == 2
    assert payload["items"][1]["reasons"] == ["follow-up overdue since 2026-10-01"]


def test_patient_by_id_and_by_key(seeded: tuple[str, Seeded]) -> None:
    url, data = seeded
    table = run(url, "patient", "PAT-0002")
    assert table.exit_code == 0, table.output
    assert "L1" in table.output and "L2" in table.output and "4.0 -> 4.1" in table.output
    rows = list(csv.DictReader(io.StringIO(run(url, "patient", "PAT-0002", "--format", "csv").stdout)))
    assert [(r["study_date"], r["lesion"], r["diameter_mm"]) for r in rows] == [
        ("2025-06-01", "L1", "4.0"),
        ("2025-06-01", "L2", "3.0"),
        ("2026-06-01", "L1", "4.1"),
        ("2026-06-01", "L2", "3.0"),
    ]
    by_key = json.loads(run(url, "patient", data.keys["PAT-0002"], "--key", "--format", "json").stdout)
    assert by_key == json.loads(run(url, "patient", "PAT-0002", "--format", "json").stdout)
    missing = run(url, "patient", "PAT-4242")
    assert missing.exit_code == 1 and "no patient has this PatientID" in missing.output
    assert "PAT-4242" not in missing.output


def test_study_and_run(seeded: tuple[str, Seeded]) -> None:
    url, data = seeded
    uid = data.studies[("PAT-0001", 1)]
    table = run(url, "study", uid)
    assert table.exit_code == 0 and "findings" in table.output and "9.5" in table.output
    rows = list(csv.DictReader(io.StringIO(run(url, "study", uid, "--format", "csv").stdout)))
    assert [(r["lesion"], r["diameter_mm"], r["model"]) for r in rows] == [("L1", "9.5", MODEL)]
    assert json.loads(run(url, "study", uid, "--format", "json").stdout)["study"]["study_instance_uid"] == uid
    assert run(url, "study", "1.2.3").exit_code == 1
    runs = list(csv.DictReader(io.StringIO(run(url, "run", "--format", "csv").stdout)))
    assert [int(r["id"]) for r in runs] == sorted(data.runs, reverse=True)
    assert runs[0]["listed"] == "18" and runs[0]["status"] == "finished"
    one = json.loads(run(url, "run", str(data.runs[0]), "--format", "json").stdout)
    assert [r["id"] for r in one] == [data.runs[0]]
    assert run(url, "run", "999").exit_code == 1
