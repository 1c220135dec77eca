"""How fast the reports' queries answer on a screening programme's worth of results, in PostgreSQL.

A database (``--database``, dropped and re-created) is migrated with Alembic and filled by COPY with
``--patients`` patients (100,000 by default) and ``--findings`` findings (1,000,000): 1 to 5 studies
per patient (3 on average) a year or so apart, the latest within 400 days of 2026-06-01 ("today"),
one analysis by the model per study, 0 to 4 lesions per patient tracked from the study they appear
in (a few resolve), their findings linked through ``findings.lesion_id``, the other findings untracked
candidates, one assessment per analysis and one ``patient_status`` per patient. Then ANALYZE, and:

- ``patient_timeline`` for ``--samples`` random patients (a new session each, as an API request has):
  p50, p95 and p99 in ms (target: p95 under 50 ms);
- ``worklist`` (every patient on it, and its first page of 50) and ``cohort_summary``: the median of
  5 runs, ms.

    .venv/bin/python -m bench.timeline_query [--patients 100000] [--findings 1000000] [--samples 2000]
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import psycopg
from psycopg import sql
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from bench.common import POSTGRES_URL, write_result
from db.engine import make_engine, make_sessionmaker
from db.migrate import upgrade
from db.queries import PatientTimeline, cohort_summary, patient_timeline, worklist
from nightscan.logs import configure_logging
from nightscan.progress import progress_bar

log = logging.getLogger("bench.timeline_query")
MODEL = "nodule-detector@0.3.0"
PIPELINE = "lung-ct"
TODAY = date(2026, 6, 1)
CATEGORIES = ("1", "2", "3", "4A", "4B", "4X")
STUDIES_PER_PATIENT = (1, 2, 3, 4, 5)
STUDIES_WEIGHTS = (0.1, 0.2, 0.4, 0.2, 0.1)  # 3 on average
LESIONS_WEIGHTS = (0.35, 0.3, 0.2, 0.1, 0.05)  # 0 to 4 lesions per patient


@dataclass
class Shape:
    """The generated rows, column-ordered per table, ready for COPY."""

    tables: dict[str, tuple[list[str], list[tuple[Any, ...]]]] = field(default_factory=dict)

    def add(self, table: str, columns: list[str]) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = []
        self.tables[table] = (columns, rows)
        return rows

    def count(self, table: str) -> int:
        return len(self.tables[table][1])


def generate(n_patients: int, n_findings: int, seed: int) -> Shape:
    """Every row of the benchmark's archive: sizes in mm, dates a year or so apart, a fixed random seed."""
    rng = np.random.default_rng(seed)
    now = datetime(2026, 6, 1, tzinfo=UTC)
    shape = Shape()
    patients = shape.add("patients", ["id", "patient_key", "sex", "created_at"])
    studies = shape.add("studies", ["id", "study_instance_uid", "patient_id", "study_date", "created_at"])
    series = shape.add("series", ["id", "series_instance_uid", "study_id", "modality", "updated_at"])
    analyses = shape.add(
        "analyses", ["id", "study_id", "series_id", "pipeline", "model", "status", "attempts", "created_at"]
    )
    lesions = shape.add(
        "lesions",
        [
            "id",
            "patient_id",
            "model",
            "label",
            "status",
            "nodule_type",
            "first_seen",
            "last_seen",
            "diameter_mm",
            "vdt_days",
            "brock_probability",
            "n_observations",
            "updated_at",
        ],
    )
    assessments = shape.add(
        "assessments",
        [
            "id",
            "analysis_id",
            "patient_id",
            "model",
            "study_date",
            "lungrads",
            "reason",
            "brock_max",
            "vdt_min_days",
            "follow_up_due",
            "assessed_at",
        ],
    )
    status = shape.add(
        "patient_status",
        [
            "id",
            "patient_id",
            "model",
            "latest_analysis_id",
            "latest_study_date",
            "lungrads",
            "brock_max",
            "vdt_min_days",
            "follow_up_due",
            "n_lesions",
            "updated_at",
        ],
    )
    # (analysis_id, lesion_id or None, centre x, y, z, diameter)
    tracked: list[tuple[int, int | None, float, float, float, float]] = []
    n_studies = rng.choice(STUDIES_PER_PATIENT, size=n_patients, p=STUDIES_WEIGHTS)
    n_lesions = rng.choice(len(LESIONS_WEIGHTS), size=n_patients, p=LESIONS_WEIGHTS)
    study_id = lesion_id = 0
    for p in range(n_patients):
        patient_id = p + 1
        patients.append((patient_id, f"{rng.bytes(32).hex()}", "FM"[int(rng.integers(2))], now))
        # the latest study 10 to 400 days before TODAY, the earlier ones 300 to 430 days apart
        days = [TODAY - timedelta(days=int(rng.integers(10, 400)))]
        for _ in range(int(n_studies[p]) - 1):
            days.insert(0, days[0] - timedelta(days=int(rng.integers(300, 430))))
        visits: list[tuple[int, date]] = []
        for day in days:
            study_id += 1
            studies.append((study_id, f"2.25.{study_id}", patient_id, day, now))
            series.append((study_id, f"2.25.{study_id}.1", study_id, "CT", now))
            analyses.append((study_id, study_id, study_id, PIPELINE, MODEL, "done", 1, now))
            visits.append((study_id, day))
        present = 0
        vdts: list[float] = []
        for label in range(1, int(n_lesions[p]) + 1):
            lesion_id += 1
            first = int(rng.integers(0, len(visits))) if rng.random() < 0.4 else 0
            resolved = rng.random() < 0.1 and first < len(visits) - 1
            seen = visits[first : len(visits) - 1] if resolved else visits[first:]
            centre = rng.uniform(-150, 150, size=3)
            size = float(rng.uniform(3, 12))
            growth = float(rng.uniform(0, 0.25)) if rng.random() < 0.3 else 0.0
            for analysis_id, _ in seen:
                tracked.append((analysis_id, lesion_id, *centre, round(size, 1)))
                size *= 1 + growth
            vdt = float(rng.uniform(60, 900)) if growth and len(seen) > 1 else None
            if not resolved:
                present += 1
                if vdt is not None:
                    vdts.append(vdt)
            lesions.append(
                (
                    lesion_id,
                    patient_id,
                    MODEL,
                    label,
                    "resolved" if resolved else "present",
                    "solid",
                    seen[0][1],
                    seen[-1][1],
                    round(size, 1),
                    vdt,
                    float(rng.uniform(0, 0.3)),
                    len(seen),
                    now,
                )
            )
        for analysis_id, visit_day in visits:
            category = CATEGORIES[int(rng.choice(6, p=(0.25, 0.45, 0.15, 0.08, 0.05, 0.02)))]
            due = visit_day + timedelta(days={"1": 365, "2": 365, "3": 182, "4A": 91}.get(category, 30))
            assessments.append(
                (
                    analysis_id,
                    analysis_id,
                    patient_id,
                    MODEL,
                    visit_day,
                    category,
                    f"category {category}: largest solid nodule {rng.uniform(3, 15):.1f} mm",
                    float(rng.uniform(0, 0.4)),
                    min(vdts) if vdts else None,
                    due,
                    now,
                )
            )
        last = assessments[-1]
        status.append(
            (patient_id, patient_id, MODEL, last[1], last[4], last[5], last[7], last[8], last[9], present, now)
        )
    # untracked candidates fill the findings up to n_findings, spread at random over the analyses
    n_untracked = max(n_findings - len(tracked), 0)
    hosts = rng.integers(1, study_id + 1, size=n_untracked)
    centres = rng.uniform(-150, 150, size=(n_untracked, 3))
    sizes = rng.uniform(2, 8, size=n_untracked)
    tracked.extend(
        (int(a), None, float(x), float(y), float(z), round(float(d), 1))
        for a, (x, y, z), d in zip(hosts, centres, sizes, strict=True)
    )
    tracked.sort(key=lambda row: row[0])
    findings = shape.add(
        "findings",
        [
            "id",
            "analysis_id",
            "ordinal",
            "label",
            "score",
            "center_x_mm",
            "center_y_mm",
            "center_z_mm",
            "diameter_mm",
            "extent_mm",
            "nodule_type",
            "long_axis_mm",
            "short_axis_mm",
            "lesion_id",
        ],
    )
    ordinal = previous = 0
    for finding_id, (analysis_id, lesion, x, y, z, d) in enumerate(tracked, start=1):
        ordinal = ordinal + 1 if analysis_id == previous else 0
        previous = analysis_id
        extent = json.dumps([d, d, d])
        findings.append(
            (finding_id, analysis_id, ordinal, "nodule", 0.9, x, y, z, d, extent, "solid", d * 1.1, d * 0.9, lesion)
        )
    return shape


COPY_ORDER = ("patients", "studies", "series", "analyses", "lesions", "findings", "assessments", "patient_status")


def copy_rows(conninfo: str, shape: Shape) -> dict[str, float]:
    """COPY every table in foreign-key order with a progress bar; then set the sequences and ANALYZE. Seconds."""
    seconds: dict[str, float] = {}
    with psycopg.connect(conninfo) as conn:
        total = sum(shape.count(t) for t in COPY_ORDER)
        with progress_bar("COPY", total, "rows") as advance:
            for table in COPY_ORDER:
                columns, rows = shape.tables[table]
                start = time.perf_counter()
                statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
                    sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns))
                )
                with conn.cursor() as cur, cur.copy(statement) as copy:
                    for i, row in enumerate(rows, start=1):
                        copy.write_row(row)
                        if i % 20000 == 0:
                            advance(20000, note=table)
                    advance(len(rows) % 20000, note=table)
                conn.commit()
                seconds[table] = time.perf_counter() - start
        for table in COPY_ORDER:
            sequence = sql.SQL("SELECT setval(pg_get_serial_sequence({}, 'id'), (SELECT coalesce(max(id), 1) FROM {}))")
            conn.execute(sequence.format(sql.Literal(table), sql.Identifier(table)))
        conn.commit()
        start = time.perf_counter()
        conn.execute("ANALYZE")
        conn.commit()
        seconds["analyze"] = time.perf_counter() - start
    return seconds


def timed(call: Callable[[], object]) -> tuple[float, object]:
    """Milliseconds one call took, and its result."""
    start = time.perf_counter()
    result = call()
    return (time.perf_counter() - start) * 1000, result


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of ``values``, linear interpolation."""
    return float(np.percentile(np.asarray(values), q))


def measure(url: str, n_patients: int, samples: int, seed: int) -> dict[str, Any]:
    """Time the queries on the filled database; figures in ms."""
    engine = make_engine(url)
    factory = make_sessionmaker(engine)
    rng = random.Random(seed)
    ids = [rng.randint(1, n_patients) for _ in range(samples)]
    for patient_id in ids[:20]:  # warm-up: connections, statement caches
        with factory() as session:
            patient_timeline(session, patient_id, MODEL)
    times: list[float] = []
    sizes: list[tuple[int, int]] = []
    with progress_bar("patient_timeline", samples, "patients") as advance:
        for patient_id in ids:
            with factory() as session:
                ms, timeline = timed(lambda s=session, p=patient_id: patient_timeline(s, p, MODEL))
            times.append(ms)
            if not isinstance(timeline, PatientTimeline):
                raise RuntimeError(f"patient {patient_id} has no timeline: the database is not the one generated")
            sizes.append((len(timeline.studies), sum(len(les.observations) for les in timeline.lesions)))
            advance()
    runs: dict[str, list[float]] = {"worklist_all": [], "worklist_page_50": [], "cohort_summary": []}
    on_worklist = summarised = 0
    for _ in range(5):
        with factory() as session:
            start = time.perf_counter()
            on_worklist = len(worklist(session, MODEL, TODAY))
            runs["worklist_all"].append((time.perf_counter() - start) * 1000)
            ms, _ = timed(lambda s=session: worklist(s, MODEL, TODAY, limit=50))
            runs["worklist_page_50"].append(ms)
            start = time.perf_counter()
            summarised = cohort_summary(session, MODEL, TODAY).patients
            runs["cohort_summary"].append((time.perf_counter() - start) * 1000)
    engine.dispose()
    return {
        "timeline_samples": samples,
        "timeline_ms_p50": round(percentile(times, 50), 2),
        "timeline_ms_p95": round(percentile(times, 95), 2),
        "timeline_ms_p99": round(percentile(times, 99), 2),
        "timeline_ms_max": round(max(times), 2),
        "timeline_mean_studies": round(statistics.fmean(s for s, _ in sizes), 2),
        "timeline_mean_lesion_observations": round(statistics.fmean(o for _, o in sizes), 2),
        **{f"{name}_ms_median_of_5": round(statistics.median(values), 1) for name, values in runs.items()},
        "worklist_patients": on_worklist,
        "summary_patients": summarised,
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patients", type=int, default=100_000)
    parser.add_argument("--findings", type=int, default=1_000_000)
    parser.add_argument("--samples", type=int, default=2000, help="patients whose timeline is timed")
    parser.add_argument("--seed", type=int, default=8)
    parser.add_argument("--database", default="nightscan_bench_timeline", help="re-created, then dropped")
    parser.add_argument("--postgres-url", default=POSTGRES_URL, help="a database to connect to for CREATE DATABASE")
    parser.add_argument("--keep", action="store_true", help="leave the database in place afterwards")
    parser.add_argument("--reuse", action="store_true", help="time the queries on a database kept by --keep")
    parser.add_argument("--no-save", action="store_true", help="print the figures only (no bench/results file)")
    args = parser.parse_args(argv)
    configure_logging("WARNING")
    logging.getLogger("bench").setLevel("INFO")

    admin = create_engine(args.postgres_url, isolation_level="AUTOCOMMIT")
    url = make_url(args.postgres_url).set(database=args.database)
    conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        if args.reuse:
            rows, generate_s, copy_s = _counts(url.render_as_string(hide_password=False)), 0.0, {}
        else:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)'))
                conn.execute(text(f'CREATE DATABASE "{args.database}"'))
            upgrade(url.render_as_string(hide_password=False))
            start = time.perf_counter()
            shape = generate(args.patients, args.findings, args.seed)
            generate_s = time.perf_counter() - start
            rows = {table: shape.count(table) for table in COPY_ORDER}
            log.info("generated %s in %.1f s", rows, generate_s)
            copy_s = copy_rows(conninfo, shape)
            del shape
        with admin.connect() as conn:
            size = conn.execute(text("SELECT pg_database_size(:d)"), {"d": args.database}).scalar_one()
        figures = measure(url.render_as_string(hide_password=False), rows["patients"], args.samples, args.seed)
        copied_s = sum(v for k, v in copy_s.items() if k != "analyze")
        figures = {
            "command": f"python -m bench.timeline_query --patients {args.patients} --findings {args.findings} "
            f"--samples {args.samples}",
            "postgres": _server_version(admin),
            "rows": rows,
            "generate_seconds": round(generate_s, 1),
            "copy_seconds": round(copied_s, 1),
            "copy_rows_per_s": round(sum(rows.values()) / copied_s) if copied_s else None,
            "analyze_seconds": round(copy_s.get("analyze", 0.0), 1),
            "database_mib": round(size / 2**20),
            **figures,
            "timeline_target_p95_ms": 50,
        }
        if args.no_save:
            for key, value in figures.items():
                log.info("%s: %s", key, value)
        else:
            write_result("timeline_query", figures)
        return figures
    finally:
        if not (args.keep or args.reuse):
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)'))
        admin.dispose()


def _counts(url: str) -> dict[str, int]:
    """Rows per table of an existing benchmark database."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return {t: conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one() for t in COPY_ORDER}  # noqa: S608
    finally:
        engine.dispose()


def _server_version(admin: Any) -> str:
    with admin.connect() as conn:
        return str(conn.execute(text("SHOW server_version")).scalar_one())


if __name__ == "__main__":
    main()
