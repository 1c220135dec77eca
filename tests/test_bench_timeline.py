"""The timeline benchmark's small path runs end to end on PostgreSQL (its timings are not asserted)."""

from __future__ import annotations

import uuid

from bench.timeline_query import main
from tests.conftest import POSTGRES_URL


def test_timeline_benchmark_small_path(postgres_template: str) -> None:  # the fixture skips without PostgreSQL
    figures = main(
        [
            "--patients",
            "200",
            "--findings",
            "2000",
            "--samples",
            "50",
            "--database",
            f"nightscan_bench_test_{uuid.uuid4().hex[:8]}",
            "--postgres-url",
            POSTGRES_URL,
            "--no-save",
        ]
    )
    assert figures["rows"]["patients"] == 200 and figures["rows"]["findings"] == 2000
    assert figures["timeline_samples"] == 50 and figures["summary_patients"] == 200
    assert 0 < figures["worklist_patients"] <= 200
    assert figures["timeline_ms_p50"] <= figures["timeline_ms_p95"] <= figures["timeline_ms_p99"]
