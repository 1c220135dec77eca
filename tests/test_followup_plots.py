"""Plots of longitudinal evaluation reports: the pooled Lung-RADS confusion matrix and the VDT plot."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from nightscan.cli import main
from workers.followup_plots import plot_reports, pooled_confusion, vdt_points

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _report(seed: int, studies: list[tuple[str, str]], vdt_rows: list[dict]) -> dict:
    """The parts of a ``nightscan follow-up evaluate`` report the plots read."""
    return {
        "archive": {"seed": seed},
        "result": {
            "per_study": [{"truth": truth, "assessed": assessed} for truth, assessed in studies],
            "vdt": {"rows": vdt_rows},
        },
    }


ONE = _report(
    1,
    [("1", "1"), ("2", "1"), ("4X", "4X"), ("3", "4A")],
    [
        {"true_vdt_days": 100.0, "lesion": 110.0, "lesion_range": [90.0, 140.0]},
        {"true_vdt_days": 400.0, "lesion": 700.0, "lesion_range": [250.0, None]},  # growth not shown
        {"true_vdt_days": 300.0, "lesion": None, "lesion_range": None},  # measured shrinking: no VDT
    ],
)
TWO = _report(2, [("2", "2"), ("2", "1")], [{"true_vdt_days": 80.0, "lesion": 60.0}])  # a report before ranges


def test_the_confusion_matrix_pools_the_reports_studies() -> None:
    labels, counts = pooled_confusion([ONE, TWO])
    assert labels == ["1", "2", "3", "4A", "4B", "4X"]
    assert counts.sum() == 6 and np.trace(counts) == 3
    assert counts[labels.index("2"), labels.index("1")] == 2  # truth 2, assessed 1: once in each report
    assert counts[labels.index("3"), labels.index("4A")] == 1
    undated = _report(3, [("0", "0")], [])
    assert pooled_confusion([undated])[0][0] == "0"  # a study without a date gets its own row
    with pytest.raises(ValueError, match="5"):
        pooled_confusion([_report(4, [("5", "1")], [])])


def test_vdt_points_keep_the_ranges_and_leave_out_lesions_without_a_vdt() -> None:
    assert vdt_points([ONE, TWO]) == [(100.0, 110.0, (90.0, 140.0)), (400.0, 700.0, (250.0, None)), (80.0, 60.0, None)]


def test_the_cli_writes_both_plots_from_report_files(tmp_path: Path) -> None:
    paths = []
    for n, report in enumerate((ONE, TWO)):
        paths.append(tmp_path / f"report{n}.json")
        paths[-1].write_text(json.dumps(report))
    result = CliRunner().invoke(
        main, ["follow-up", "plot", *map(str, paths), "--out", str(tmp_path / "plots"), "--name", "both"]
    )
    assert result.exit_code == 0, result.output
    for name in ("both_lungrads.png", "both_vdt.png"):
        written = tmp_path / "plots" / name
        assert written.read_bytes()[:8] == PNG_SIGNATURE
        assert str(written) in result.output
    no_vdt = tmp_path / "no_vdt.json"
    no_vdt.write_text(json.dumps(_report(5, [("1", "1")], [])))
    assert [p.name for p in plot_reports([no_vdt], tmp_path, name="alone")] == ["alone_lungrads.png"]
    with pytest.raises(ValueError, match="no report"):
        plot_reports([], tmp_path, name="none")
