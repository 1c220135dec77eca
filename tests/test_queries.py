"""The read queries on hand-built rows, in PostgreSQL and SQLite: timeline, worklist, cohort summary."""

from __future__ import annotations

from datetime import date

import pytest

from db.engine import make_engine, make_sessionmaker, transaction
from db.models import AnalysisStatus
from db.queries import categories_from, cohort_summary, patient_timeline, worklist
from tests.hand_built import (
    add_analysis,
    add_assessment,
    add_finding,
    add_lesion,
    add_patient,
    add_study,
    key_of,
    set_status,
)

V1 = "nodule-detector@0.2.0"
V2 = "nodule-detector@0.3.0"
TODAY = date(2026, 6, 1)


@pytest.fixture(params=["sqlite", "postgres"])
def factory(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    return make_sessionmaker(make_engine(request.getfixturevalue(f"{request.param}_url")))


def test_timeline_has_studies_lesions_over_time_and_risk(factory) -> None:  # type: ignore[no-untyped-def]
    with transaction(factory) as session:
        patient = add_patient(session, "ann")
        s1, se1 = add_study(session, patient, date(2024, 1, 10))
        s3, se3 = add_study(session, patient, date(2026, 1, 15))  # inserted before s2: order is by date
        s2, se2 = add_study(session, patient, date(2025, 1, 12))
        add_study(session, patient, date(2026, 5, 1))  # not analysed yet
        a1, a2 = add_analysis(session, s1, se1, V1), add_analysis(session, s2, se2, V1)
        add_analysis(session, s3, se3, V1, AnalysisStatus.RUNNING)
        l1 = add_lesion(session, patient, V1, 1, diameter_mm=7.9, vdt_days=210.0, brock_probability=0.04)
        l2 = add_lesion(session, patient, V1, 2, status="resolved", diameter_mm=4.0)
        add_finding(session, a2, (10.0, 20.0, 30.0), 7.0, l1, long_axis_mm=8.4, short_axis_mm=7.4)
        add_finding(session, a1, (10.5, 20.0, 30.0), 6.0, l1, long_axis_mm=6.2, short_axis_mm=5.8)
        add_finding(session, a1, (-40.0, 0.0, 10.0), 4.0, l2)
        add_finding(session, a2, (90.0, 0.0, 10.0), 3.0)  # not a tracked nodule
        add_assessment(session, a1, s1, "2", "baseline solid 6.0 mm", brock_max=0.02)
        add_assessment(
            session,
            a2,
            s2,
            "4A",
            "growing solid 7.9 mm",
            brock_max=0.04,
            vdt_min_days=210.0,
            follow_up_due=date(2025, 4, 12),
        )
        set_status(
            session,
            patient,
            a2,
            "4A",
            brock_max=0.04,
            vdt_min_days=210.0,
            n_lesions=1,
            latest_study_date=s2.study_date,
            follow_up_due=date(2025, 4, 12),
        )
        # another version's results of the same patient must not leak in
        b1 = add_analysis(session, s1, se1, V2)
        add_finding(session, b1, (10.0, 20.0, 30.0), 6.0, add_lesion(session, patient, V2, 1))
        add_assessment(session, b1, s1, "3")
        other = add_patient(session, "bob")
        patient_id, other_id = patient.id, other.id

    with factory() as session:
        timeline = patient_timeline(session, patient_id, V1)
        assert patient_timeline(session, 10_000, V1) is None
        empty = patient_timeline(session, other_id, V1)
    assert timeline is not None and empty is not None
    assert timeline.patient_key == key_of("ann") and timeline.model == V1
    assert [(s.study_date, s.lungrads, s.analysis_status) for s in timeline.studies] == [
        (date(2024, 1, 10), "2", "done"),
        (date(2025, 1, 12), "4A", "done"),
        (date(2026, 1, 15), None, "running"),
        (date(2026, 5, 1), None, None),
    ]
    assert timeline.studies[1].reason == "growing solid 7.9 mm" and timeline.studies[1].vdt_min_days == 210.0
    assert [(les.name, les.status) for les in timeline.lesions] == [("L1", "present"), ("L2", "resolved")]
    l1_sizes = [(o.study_date, o.long_axis_mm, o.centre_mm[0]) for o in timeline.lesions[0].observations]
    assert l1_sizes == [(date(2024, 1, 10), 6.2, 10.5), (date(2025, 1, 12), 8.4, 10.0)]
    assert timeline.lesions[0].vdt_days == 210.0 and len(timeline.lesions[1].observations) == 1
    assert timeline.risk is not None and (timeline.risk.lungrads, timeline.risk.n_lesions) == ("4A", 1)
    assert (empty.studies, empty.lesions, empty.risk) == ((), (), None)


@pytest.fixture
def cohort(factory):  # type: ignore[no-untyped-def]
    """Six patients under V1 and one under V2 only, each with the status named after them."""
    with transaction(factory) as session:
        for name, model, lungrads, values in (
            ("high", V1, "4B", {"brock_max": 0.31}),
            ("all-three", V1, "4A", {"vdt_min_days": 90.0, "follow_up_due": date(2026, 3, 1), "brock_max": 0.12}),
            ("overdue", V1, "3", {"follow_up_due": date(2026, 5, 31)}),
            ("fast", V1, "2", {"vdt_min_days": 399.0, "follow_up_due": date(2027, 1, 1)}),
            ("slow", V1, "2", {"vdt_min_days": 400.0, "follow_up_due": date(2026, 6, 1), "n_lesions": 2}),
            ("clear", V1, "1", {}),
            ("other-model", V2, "4X", {}),
        ):
            patient = add_patient(session, name)
            study, series = add_study(session, patient, date(2025, 6, 1))
            set_status(session, patient, add_analysis(session, study, series, model), lungrads, **values)
    return factory


def test_worklist_has_the_three_reasons_most_urgent_first(cohort) -> None:  # type: ignore[no-untyped-def]
    with cohort() as session:
        entries = worklist(session, V1, TODAY)
        page = worklist(session, V1, TODAY, limit=2, offset=1)
        strict = worklist(session, V1, TODAY, vdt_days=100, min_category="4b")
    names = {key_of(n): n for n in ("high", "all-three", "overdue", "fast", "slow", "clear")}
    assert [names[e.patient_key] for e in entries] == ["high", "all-three", "overdue", "fast"]
    assert entries[1].reasons == (
        "Lung-RADS 4A",
        "VDT 90 days (under 400)",
        "follow-up overdue since 2026-03-01",
    )
    assert entries[0].reasons == ("Lung-RADS 4B",) and entries[3].reasons == ("VDT 399 days (under 400)",)
    assert entries[2].reasons == ("follow-up overdue since 2026-05-31",)
    assert [names[e.patient_key] for e in page] == ["all-three", "overdue"]
    assert [names[e.patient_key] for e in strict] == ["high", "all-three", "overdue"]
    with pytest.raises(ValueError, match="'5'"):
        categories_from("5")


def test_cohort_summary_counts(cohort) -> None:  # type: ignore[no-untyped-def]
    with cohort() as session:
        summary = cohort_summary(session, V1, TODAY)
        other = cohort_summary(session, V2, TODAY)
    assert summary.patients == 6
    assert summary.by_category == {"0": 0, "1": 1, "2": 2, "3": 1, "4A": 1, "4B": 1, "4X": 0}
    assert (summary.overdue, summary.fast_growing, summary.high_brock, summary.lesions_present) == (2, 2, 2, 2)
    assert summary.analyses == {"done": 6}
    assert (other.patients, other.by_category["4X"]) == (1, 1)
