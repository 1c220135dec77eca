"""The longitudinal step: alignment and tracking on hand-built cases, then the step on findings stored in
PostgreSQL and SQLite (labels, new and resolved lesions, idempotent re-runs, models kept apart)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.engine import make_engine, make_sessionmaker, transaction
from db.models import Assessment, Finding, Lesion, Patient, PatientStatus
from models.measurement import SPICULATED_SCORE
from screening import LocatedNodule, LungRads, lungrads
from screening.alignment import align_studies
from screening.growth import sphere_volume_mm3, vdt_range_days
from screening.longitudinal import (
    FOLLOW_UP_DAYS,
    SPICULATION_NOT_MEASURED,
    NoduleCriteria,
    Observation,
    PatientResult,
    StudyInput,
    follow_patient,
    is_upper_lobe,
    log_odds,
    measurement_from_finding,
    pooled_spiculated,
)
from tests.hand_built import add_analysis, add_finding, add_instance, add_patient, add_series, add_study_row
from workers.followup import update_patient

MODEL = "nodule-detector@0.3.0"
OTHER_MODEL = "nodule-detector@0.2.0"
SHIFT = (18.0, -9.0, 31.0)  # the patient lay this much differently at the follow-up (mm): beyond every gate


def nodule(
    key: int, centre: Sequence[float], diameter_mm: float, kind: str = "solid", spiculation: float | None = None
) -> Observation:
    spiculated = None if spiculation is None else spiculation >= SPICULATED_SCORE
    measurement, assumed = measurement_from_finding(nodule_type=kind, diameter_mm=diameter_mm, spiculated=spiculated)
    x, y, z = centre
    return Observation(key=key, centre_mm=(x, y, z), measurement=measurement, assumed=assumed, spiculation=spiculation)


def shifted(centre: Sequence[float], by: Sequence[float] = SHIFT) -> tuple[float, float, float]:
    return (centre[0] + by[0], centre[1] + by[1], centre[2] + by[2])


def study(key: int, date: dt.date, *nodules: Observation) -> StudyInput:
    return StudyInput(key=key, study_date=date, nodules=nodules, age_years=64.0, female=True)


DAY0, DAY1, DAY2 = dt.date(2021, 3, 1), dt.date(2021, 9, 1), dt.date(2022, 3, 1)
A, B, C = (60.0, 20.0, 120.0), (-70.0, -10.0, 90.0), (-20.0, 40.0, 60.0)


# --- pure: alignment and tracking -------------------------------------------------------------------------


def test_alignment_finds_a_shift_beyond_the_gate_from_the_nodules_alone() -> None:
    prior = [LocatedNodule(A, 6.0), LocatedNodule(B, 5.0), LocatedNodule(C, 4.0)]
    current = [LocatedNodule(shifted(c), d) for c, d in ((C, 4.0), (A, 6.5), (B, 5.0))]
    alignment = align_studies(current, prior)
    assert alignment.translation_mm == pytest.approx(SHIFT, abs=1e-6)
    assert [(p.current_index, p.prior_index) for p in alignment.match.pairs] == [(0, 2), (1, 0), (2, 1)]
    assert alignment.method == "pairs" and alignment.residual_mm == pytest.approx(0.0, abs=1e-6)


def test_alignment_without_nodules_keeps_the_initial_estimate() -> None:
    alignment = align_studies([], [LocatedNodule(A, 6.0)], initial_mm=(0.0, 0.0, 12.0))
    assert alignment.translation_mm == (0.0, 0.0, 12.0) and alignment.method == "none"
    assert alignment.match.resolved == (0,)


def test_a_shifted_patient_keeps_every_lesion() -> None:
    result = follow_patient(
        [
            study(1, DAY0, nodule(10, A, 6.0), nodule(11, B, 5.0)),
            study(2, DAY1, nodule(20, shifted(B), 5.0), nodule(21, shifted(A), 8.0)),
        ]
    )
    assert [lesion.observations for lesion in result.lesions] == [((0, 10), (1, 21)), ((0, 11), (1, 20))]
    baseline, follow_up = result.studies
    assert baseline.category is LungRads.CAT3  # 6 mm solid at baseline
    assert follow_up.category is LungRads.CAT4B  # 6 -> 8 mm in 184 days: growing, >= 8 mm
    assert follow_up.translation_mm == pytest.approx(SHIFT)
    # VDT of A from the sphere volumes: 184 days x ln 2 / ln((8/6)^3)
    assert result.lesions[0].vdt_days == pytest.approx(184 * 0.693147 / (3 * 0.287682), rel=1e-4)
    assert follow_up.follow_up_due == DAY1  # 4B: diagnostic work-up now
    # ... and the range its two volumes allow, from the volumes and diameters of the first and latest looks
    assert result.lesions[0].vdt_range_days == pytest.approx(
        vdt_range_days(sphere_volume_mm3(6.0), sphere_volume_mm3(8.0), 184, 6.0, 8.0)
    )
    assert next(n for n in follow_up.nodules if n.lesion == 0).vdt_range_days == result.lesions[0].vdt_range_days


def test_a_new_nodule_and_a_resolved_one() -> None:
    result = follow_patient(
        [
            study(1, DAY0, nodule(10, A, 6.0), nodule(11, B, 5.0)),
            study(2, DAY1, nodule(20, shifted(A), 6.0), nodule(21, shifted(C), 5.0)),
        ]
    )
    a, b, c = result.lesions
    assert (a.status, b.status, c.status) == ("present", "resolved", "present")
    assert c.observations == ((1, 21),) and c.first_seen == DAY1
    follow_up = result.studies[1]
    new = next(n for n in follow_up.nodules if n.key == 21)
    assert new.new and new.category is LungRads.CAT3  # new solid 5 mm: 4 to < 6 mm -> 3
    assert follow_up.category is LungRads.CAT3
    stable = next(n for n in follow_up.nodules if n.key == 20)
    assert stable.category is LungRads.CAT2  # category 3 stable at its 6-month CT steps down to 2
    assert result.vdt_min_days is None  # no lesion grew


def test_two_nodules_close_together_keep_their_identities() -> None:
    near = (A[0] + 9.0, A[1], A[2])  # 9 mm apart: each is within the other's gate
    moved = (4.0, -3.0, 2.0)  # a small shift, so both pairings are possible and only the assignment decides
    result = follow_patient(
        [
            study(1, DAY0, nodule(10, A, 5.0), nodule(11, near, 7.0)),
            study(2, DAY1, nodule(20, shifted(near, moved), 7.0), nodule(21, shifted(A, moved), 5.0)),
        ]
    )
    assert [lesion.observations for lesion in result.lesions] == [((0, 10), (1, 21)), ((0, 11), (1, 20))]


MOVED = (-5.0, 4.0, -22.0)


def test_a_lesion_missed_once_keeps_its_identity_and_its_last_observation_is_its_prior() -> None:
    result = follow_patient(
        [
            study(1, DAY0, nodule(10, A, 6.0), nodule(11, B, 5.0)),
            study(2, DAY1, nodule(20, shifted(B), 5.0)),  # A not found this time
            study(
                3,
                DAY2,
                nodule(30, shifted(A, (-5.0, 4.0, -22.0)), 6.0),
                nodule(31, shifted(B, (-5.0, 4.0, -22.0)), 5.0),
            ),
        ]
    )
    assert [lesion.observations for lesion in result.lesions] == [((0, 10), (2, 30)), ((0, 11), (1, 20), (2, 31))]
    assert [lesion.status for lesion in result.lesions] == ["present", "present"]
    assert not any(n.new for n in result.studies[2].nodules)


def test_a_nodule_seen_in_retrospect_below_the_criteria_is_not_new() -> None:
    faint = nodule(12, C, 3.6)  # the detector's candidate, below the nodule criteria at the first study
    first = StudyInput(key=1, study_date=DAY0, nodules=(nodule(10, A, 6.0),), candidates=(faint,))
    second = study(2, DAY1, nodule(20, shifted(A), 6.0), nodule(21, shifted(C), 4.2))
    result = follow_patient([first, second])
    seen = next(n for n in result.studies[1].nodules if n.key == 21)
    assert not seen.new and seen.retrospective == 12 and "retrospect" in seen.reason
    assert seen.category is LungRads.CAT2  # 3.6 -> 4.2 mm, < 6 mm: not "new 4 to < 6 mm -> 3"
    assert result.lesions[1].observations == ((0, 12), (1, 21)) and result.lesions[1].first_seen == DAY0
    without = follow_patient([StudyInput(key=1, study_date=DAY0, nodules=(nodule(10, A, 6.0),)), second])
    assert next(n for n in without.studies[1].nodules if n.key == 21).category is LungRads.CAT3


def test_a_lesion_found_in_retrospect_takes_its_vdt_from_its_first_nodule_look_once_it_has_two() -> None:
    faint = dataclasses.replace(nodule(12, C, 4.0), volume_mm3=15.0)  # a candidate, measured small
    first = StudyInput(key=1, study_date=DAY0, nodules=(nodule(10, A, 6.0),), candidates=(faint,))
    second = study(
        2, DAY1, nodule(20, shifted(A), 6.0), dataclasses.replace(nodule(21, shifted(C), 5.0), volume_mm3=60.0)
    )
    third = study(
        3, DAY2, nodule(30, shifted(A), 6.0), dataclasses.replace(nodule(31, shifted(C), 6.3), volume_mm3=120.0)
    )
    result = follow_patient([first, second, third])
    vdt = {n.key: n.vdt_days for s in result.studies for n in s.nodules}
    assert vdt[21] == pytest.approx((DAY1 - DAY0).days / 2)  # its only prior is the candidate: 15 -> 60 mm3
    assert vdt[31] == pytest.approx((DAY2 - DAY1).days)  # 60 -> 120 mm3, not from the candidate (15 -> 120 mm3)
    assert result.lesions[1].observations == ((0, 12), (1, 21), (2, 31))
    assert result.lesions[1].vdt_days == pytest.approx((DAY2 - DAY1).days)


def test_a_candidate_below_the_criteria_at_a_known_lesion_is_that_lesion_seen_again() -> None:
    first = study(1, DAY0, nodule(10, A, 9.0), nodule(11, B, 5.0))
    faint = nodule(21, shifted(A, MOVED), 9.2)  # the same nodule, scored under the criteria this time
    elsewhere = nodule(22, shifted(C, MOVED), 4.0)  # a candidate where no lesion was
    second = StudyInput(
        key=2, study_date=DAY1, nodules=(nodule(20, shifted(B, MOVED), 5.0),), candidates=(faint, elsewhere)
    )
    result = follow_patient([first, second])
    follow_up = result.studies[1]
    kept = {n.key: n for n in follow_up.nodules}
    assert sorted(kept) == [20, 21]  # the far candidate stays a candidate
    assert kept[21].at_known_lesion and not kept[21].new and "known lesion" in kept[21].reason
    assert kept[21].category is LungRads.CAT3  # 9 -> 9.2 mm at 6 months: not growing, 4A steps down to 3
    assert follow_up.category is LungRads.CAT3 and "at_known_lesions" in follow_up.assumptions
    assert [lesion.observations for lesion in result.lesions] == [((0, 10), (1, 21)), ((0, 11), (1, 20))]
    assert [lesion.status for lesion in result.lesions] == ["present", "present"]
    unguided = follow_patient([first, dataclasses.replace(second, candidates=())])
    assert unguided.studies[1].category is LungRads.CAT2 and unguided.lesions[0].status == "resolved"


def test_a_candidate_kept_at_a_known_lesion_is_not_looked_back_at_again() -> None:
    first = study(1, DAY0, nodule(10, A, 7.0))
    second = StudyInput(key=2, study_date=DAY1, nodules=(), candidates=(nodule(20, A, 7.0),))
    third = study(3, DAY2, nodule(30, A, 7.1))
    result = follow_patient([first, second, third])
    assert [lesion.observations for lesion in result.lesions] == [((0, 10), (1, 20), (2, 30))]
    assert result.studies[2].nodules[0].retrospective is None and not result.studies[2].nodules[0].new


def test_pooled_spiculation_is_the_mean_log_odds_of_the_looks_read_at_one_half() -> None:
    assert pooled_spiculated([0.5]) and not pooled_spiculated([0.49])
    assert pooled_spiculated([0.99, 0.99, 0.16])  # two clear looks and a blurred one
    assert not pooled_spiculated([0.05, 0.9])  # the same lesion smooth before: 0.9 alone does not make it so
    assert pooled_spiculated([0.999999, 0.0001]) == pooled_spiculated([0.99, 0.01])  # clipped: no look outvotes
    with pytest.raises(ValueError, match="at least one"):
        pooled_spiculated([])


def test_a_lesion_keeps_the_spicules_seen_before_when_one_look_blurs_them() -> None:
    def patient(third: float) -> list[StudyInput]:
        return [
            study(1, DAY0, nodule(10, A, 15.0, spiculation=0.99)),
            study(2, DAY1, nodule(20, shifted(A), 17.0, spiculation=0.95)),
            study(3, DAY2, nodule(30, shifted(A), 19.5, spiculation=third)),  # growing: its category is read again
        ]

    categories = [s.category for s in follow_patient(patient(0.16)).studies]
    assert categories == [LungRads.CAT4X] * 3
    alone = follow_patient([study(1, DAY0, nodule(10, A, 15.0)), study(2, DAY1, nodule(20, A, 17.0, spiculation=0.16))])
    assert alone.studies[1].category is LungRads.CAT4B  # 0.16 on its own
    assert follow_patient(patient(0.001)).studies[2].category is LungRads.CAT4X  # clipped: 4.6 + 2.9 - 4.6 > 0
    smooth_before = follow_patient(
        [study(1, DAY0, nodule(10, A, 7.0, spiculation=0.05)), study(2, DAY1, nodule(20, A, 7.1, spiculation=0.9))]
    )
    assert [s.category for s in smooth_before.studies] == [LungRads.CAT3, LungRads.CAT2]  # not 4X on one look
    new = follow_patient([study(1, DAY0), study(2, DAY1, nodule(20, A, 9.0, spiculation=0.9))])
    assert new.studies[1].category is LungRads.CAT4X  # a new lesion has only its own look


def test_a_stable_lesion_drops_a_4x_that_its_looks_together_no_longer_read() -> None:
    early = dt.date(2021, 6, 26)  # 117 days: too early for a category 3 to step down

    def patient(second: float, *, when: dt.date = early) -> PatientResult:
        return follow_patient(
            [
                study(1, DAY0, nodule(10, A, 6.3, spiculation=0.77)),
                study(2, when, nodule(20, A, 6.5, spiculation=second)),
            ]
        )

    assert patient(0.19).studies[0].category is LungRads.CAT4X  # one look: 6.3 mm -> 3, spiculated -> 4X
    smooth = patient(0.19).studies[1]  # log-odds 1.2 and -1.5: the looks together read it smooth
    assert smooth.category is LungRads.CAT3 and "keeps prior category 3" in smooth.nodules[0].reason
    assert patient(0.19, when=DAY1).studies[1].category is LungRads.CAT2  # 184 days: the 3 steps down as usual
    assert patient(0.4).studies[1].category is LungRads.CAT4X  # 1.2 and -0.4: still spiculated, the 4X stands
    assert lungrads.nodule_category(  # the category under a 4X is kept for this
        lungrads.NoduleHistory.at_baseline(nodule(1, A, 9.0, spiculation=0.9).measurement)
    ) == lungrads.Assessment(
        LungRads.CAT4X, "solid 9.0 mm at baseline: 8 to < 15 mm -> 4A; spiculated -> 4X", before_features=LungRads.CAT4A
    )


def test_a_4x_carried_twice_keeps_the_category_under_it() -> None:
    # 10 mm solid: 4A, spiculated -> 4X at the baseline; still read spiculated at DAY1, the 4X is carried; at DAY2
    # the three looks together (log-odds 2.2, 2.2 and -4.6) read it smooth: the 4A under the 4X steps down to 3.
    looks = [(1, DAY0, 0.9), (2, DAY1, 0.9), (3, DAY2, 0.01)]
    result = follow_patient([study(key, day, nodule(key * 10, A, 10.0, spiculation=p)) for key, day, p in looks])
    assert [s.category for s in result.studies] == [LungRads.CAT4X, LungRads.CAT4X, LungRads.CAT3]
    assert "category 4A stable or decreased" in result.studies[2].nodules[0].reason


def test_study_inputs_and_defaults() -> None:
    measurement, assumed = measurement_from_finding(nodule_type=None, diameter_mm=6.04)
    assert measurement.mean_diameter_mm == 6.0 and not measurement.spiculated
    assert assumed == ("nodule_type unknown: solid", SPICULATION_NOT_MEASURED)
    part_solid, assumed = measurement_from_finding(
        nodule_type="part-solid",
        diameter_mm=9.0,
        long_axis_mm=10.0,
        short_axis_mm=8.0,
        solid_component_mm=12.0,
        spiculated=True,
    )
    assert part_solid.solid_component_mm == 9.0 and part_solid.long_axis_mm == 10.0 and assumed == ()
    assert part_solid.spiculated
    assert is_upper_lobe(200.0, (0.0, 250.0)) and not is_upper_lobe(100.0, (250.0, 0.0))
    assert FOLLOW_UP_DAYS[LungRads.CAT3] == 182 and FOLLOW_UP_DAYS[LungRads.CAT4A] == 91
    faint_core, assumed = measurement_from_finding(nodule_type="part_solid", diameter_mm=12.0, solid_component_mm=1.2)
    assert faint_core.nodule_type == "ground_glass" and faint_core.solid_component_mm is None
    assert assumed == (SPICULATION_NOT_MEASURED, "solid component 1.2 mm below 3 mm: ground glass")
    criteria = NoduleCriteria(min_probability=0.5, min_diameter_mm=4.0, min_score=0.98)
    assert criteria.accepts(0.9, 4.0, 0.99) and criteria.accepts(None, 4.0, None)
    assert not criteria.accepts(0.4, 10.0, 1.0) and not criteria.accepts(None, 3.9)
    assert not criteria.accepts(1.0, 9.0, 0.9)
    # The log-odds sum: ln(0.9/0.1) + ln(0.99/0.01) = 2.20 + 4.60 = 6.80.
    joint = NoduleCriteria(min_probability=0.3, min_diameter_mm=4.0, min_score=0.5, min_log_odds=6.5)
    assert joint.accepts(0.9, 5.0, 0.99) and not joint.accepts(0.9, 5.0, 0.98)  # 2.20 + 3.89 = 6.09
    assert joint.accepts(0.9999, 5.0, 0.6) and not joint.accepts(0.2, 5.0, 1.0)  # 9.21 + 0.41; p under 0.3
    assert joint.accepts(None, 5.0, 0.9995) and not joint.accepts(None, 5.0, 0.998)  # the detector alone
    assert log_odds(1.0) == pytest.approx(13.8155, abs=1e-3) and log_odds(0.5) == 0.0
    result = follow_patient([StudyInput(key=1, study_date=DAY0, nodules=(nodule(1, A, 5.0),))])
    assumptions = result.studies[0].assumptions
    assert assumptions["sex"] == "unknown: male" and "62" in str(assumptions["age_years"])
    assert assumptions["brock_defaulted"] == ["emphysema", "family_history"]


# --- the step on stored findings ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Spot:
    """A finding to store: centre (mm), mean diameter (mm), classifier probability, type, detector score,
    spiculation score (0 to 1; None: not measured)."""

    centre: tuple[float, float, float]
    diameter_mm: float
    probability: float = 0.99
    kind: str = "solid"
    score: float = 0.999  # with the probability, log-odds 11.5: a nodule by workers.followup.NODULE_CRITERIA
    spiculation: float | None = None


class Archive:
    """Builds patients, studies, series (with slice positions), done analyses and findings in a database, each
    in its own transaction; numbered by one counter."""

    def __init__(self, factory: sessionmaker[Session]) -> None:
        self.factory = factory
        self.count = 0

    def patient(self, sex: str = "F") -> int:
        n = self._next()
        with transaction(self.factory) as session:
            return add_patient(session, f"patient {n}", sex, key=f"{n:064d}").id

    def study(
        self,
        patient_id: int,
        date: dt.date,
        spots: Sequence[Spot],
        *,
        models: Sequence[str] = (MODEL,),
        table_z_mm: float = 0.0,
        lungs_mm: tuple[float, float, float] | None = None,
    ) -> dict[str, int]:
        """A study with one series (slices 0..247.5 mm, moved by ``table_z_mm``) and a done analysis per model,
        which recorded the lungs' centroid ``lungs_mm`` (None: not recorded)."""
        n = self._next()
        with transaction(self.factory) as session:
            study = add_study_row(session, session.get_one(Patient, patient_id), date, uid=f"1.2.{n}", age_years=64.0)
            series = add_series(session, study, slices=0, uid=f"1.3.{n}")
            for k in range(0, 100, 33):  # four slices span the scan range
                add_instance(session, series, f"1.4.{n}.{k}", f"{n}/{k}", z_mm=table_z_mm + 2.5 * k)
            ids = {}
            for model in models:
                analysis = add_analysis(session, study, series, model)
                if lungs_mm is not None:
                    analysis.volume = {"lung_centroid_mm": list(lungs_mm)}
                for spot in spots:
                    add_finding(
                        session,
                        analysis,
                        spot.centre,
                        spot.diameter_mm,
                        score=spot.score,
                        probability=spot.probability,
                        nodule_type=spot.kind,
                        spiculation=spot.spiculation,
                    )
                ids[model] = analysis.id
            return ids

    def _next(self) -> int:
        self.count += 1
        return self.count


def snapshot(factory: sessionmaker[Session]) -> dict[str, list[tuple[object, ...]]]:
    """Every row the step writes, with IDs and timestamps."""
    with factory() as session:
        links = [tuple(row) for row in session.execute(select(Finding.id, Finding.lesion_id).order_by(Finding.id))]
        return {
            "lesions": [
                (r.id, r.patient_id, r.model, r.label, r.status, r.diameter_mm, r.vdt_days, r.updated_at)
                for r in session.scalars(select(Lesion).order_by(Lesion.id))
            ],
            "links": links,
            "assessments": [
                (r.id, r.analysis_id, r.model, r.lungrads, r.reason, r.follow_up_due, r.assumptions, r.assessed_at)
                for r in session.scalars(select(Assessment).order_by(Assessment.id))
            ],
            "status": [
                (r.id, r.patient_id, r.model, r.lungrads, r.vdt_min_days, r.n_lesions, r.updated_at)
                for r in session.scalars(select(PatientStatus).order_by(PatientStatus.id))
            ],
        }


@pytest.fixture(params=["postgresql", "sqlite"])
def factory(request: pytest.FixtureRequest) -> sessionmaker[Session]:
    url = request.getfixturevalue("postgres_url" if request.param == "postgresql" else "sqlite_url")
    engine = make_engine(url)
    request.addfinalizer(engine.dispose)
    return make_sessionmaker(engine)


def labelled(factory: sessionmaker[Session], analysis_id: int) -> dict[int, int | None]:
    """Finding ordinal -> lesion label for one analysis."""
    with factory() as session:
        rows = session.execute(
            select(Finding.ordinal, Lesion.label)
            .outerjoin(Lesion, Lesion.id == Finding.lesion_id)
            .where(Finding.analysis_id == analysis_id)
        ).all()
    return {ordinal: label for ordinal, label in rows}


def test_the_step_tracks_a_shifted_patient_and_writes_its_rows(factory: sessionmaker[Session]) -> None:
    archive = Archive(factory)
    patient = archive.patient()
    first = archive.study(patient, DAY0, [Spot(A, 6.0), Spot(B, 5.0), Spot((0.0, -80.0, 40.0), 6.0, probability=0.1)])
    second = archive.study(
        patient, DAY1, [Spot(shifted(B), 5.0), Spot(shifted(C), 5.0), Spot(shifted(A), 8.0)], table_z_mm=SHIFT[2]
    )

    report = update_patient(factory, patient, MODEL)
    assert (report.studies, report.nodules, report.lesions, report.present, report.lungrads) == (2, 5, 3, 3, "4B")
    assert labelled(factory, first[MODEL]) == {0: 1, 1: 2, 2: None}  # the improbable finding is no lesion
    assert labelled(factory, second[MODEL]) == {0: 2, 1: 3, 2: 1}
    with factory() as session:
        assessments = {a.analysis_id: a for a in session.scalars(select(Assessment))}
        lesions = {lesion.label: lesion for lesion in session.scalars(select(Lesion))}
        status = session.scalars(select(PatientStatus)).one()
    assert assessments[first[MODEL]].lungrads == "3" and assessments[second[MODEL]].lungrads == "4B"
    assert assessments[first[MODEL]].follow_up_due == DAY0 + dt.timedelta(days=182)
    assumptions = assessments[second[MODEL]].assumptions
    assert assumptions["alignment"]["translation_mm"] == pytest.approx(list(SHIFT), abs=0.01)
    assert assumptions["nodules"]["kept"] == 3 and "family_history" in assumptions["brock_defaulted"]
    assert lesions[1].vdt_days == pytest.approx(184 * 0.693147 / (3 * 0.287682), rel=1e-4)
    assert (lesions[1].first_seen, lesions[1].last_seen, lesions[1].diameter_mm) == (DAY0, DAY1, 8.0)
    assert lesions[3].first_seen == DAY1 and lesions[3].vdt_days is None
    assert lesions[1].vdt_shortest_days < lesions[1].vdt_days < lesions[1].vdt_longest_days
    assert lesions[3].vdt_shortest_days is None and lesions[3].vdt_longest_days is None
    assert 0 < lesions[1].brock_probability < 1
    assert (status.latest_analysis_id, status.lungrads, status.n_lesions) == (second[MODEL], "4B", 3)
    assert status.vdt_min_days == pytest.approx(lesions[1].vdt_days)
    assert status.follow_up_due == DAY1


def test_the_lungs_align_a_study_whose_only_finding_is_a_known_lesion_below_the_criteria(
    factory: sessionmaker[Session],
) -> None:
    archive = Archive(factory)
    patient = archive.patient()
    lungs = (0.0, -20.0, 120.0)
    first = archive.study(patient, DAY0, [Spot(A, 9.0)], lungs_mm=lungs)
    faint = Spot(shifted(A), 9.1, probability=0.3, score=0.7)  # under the criteria; the patient moved past the gate
    second = archive.study(patient, DAY1, [faint], lungs_mm=shifted(lungs))
    report = update_patient(factory, patient, MODEL)
    assert report.lungrads == "3" and report.present == 1  # 9 mm stable at 6 months: 4A steps down to 3
    assert labelled(factory, first[MODEL]) == {0: 1} and labelled(factory, second[MODEL]) == {0: 1}
    with factory() as session:
        assessment = session.scalars(select(Assessment).where(Assessment.analysis_id == second[MODEL])).one()
    assert assessment.assumptions["alignment"]["translation_mm"] == pytest.approx(list(SHIFT), abs=0.01)
    assert "at_known_lesions" in assessment.assumptions and "alignment_start" not in assessment.assumptions

    unaligned = archive.patient()
    archive.study(unaligned, DAY0, [Spot(A, 9.0)])
    archive.study(unaligned, DAY1, [faint])
    assert update_patient(factory, unaligned, MODEL).lungrads == "1"  # no landmark: the lesion is not found again


def test_running_the_step_again_changes_nothing(factory: sessionmaker[Session]) -> None:
    archive = Archive(factory)
    patient = archive.patient()
    archive.study(patient, DAY0, [Spot(A, 6.0), Spot(B, 5.0)])
    archive.study(patient, DAY1, [Spot(shifted(A), 7.0)], table_z_mm=SHIFT[2])
    update_patient(factory, patient, MODEL)
    before = snapshot(factory)
    again = update_patient(factory, patient, MODEL)
    assert (again.counts.inserted, again.counts.updated, again.counts.deleted) == (0, 0, 0)
    assert snapshot(factory) == before


def test_labels_stay_when_a_study_arrives_and_resolved_lesions_are_marked(factory: sessionmaker[Session]) -> None:
    archive = Archive(factory)
    patient = archive.patient()
    archive.study(patient, DAY0, [Spot(A, 6.0), Spot(B, 5.0)])
    archive.study(patient, DAY1, [Spot(shifted(B), 5.0), Spot(shifted(A), 6.0)], table_z_mm=SHIFT[2])
    update_patient(factory, patient, MODEL)
    with factory() as session:
        ids_before = {lesion.label: lesion.id for lesion in session.scalars(select(Lesion))}

    third = archive.study(patient, DAY2, [Spot(C, 6.0), Spot(A, 6.0)])  # B resolved, C new
    report = update_patient(factory, patient, MODEL)
    assert report.lungrads == "4A"  # a new solid nodule of 6 to < 8 mm
    assert labelled(factory, third[MODEL]) == {0: 3, 1: 1}
    with factory() as session:
        lesions = {lesion.label: lesion for lesion in session.scalars(select(Lesion))}
        status = session.scalars(select(PatientStatus)).one()
    assert {label: lesion.id for label, lesion in lesions.items() if label in ids_before} == ids_before
    assert {label: lesion.status for label, lesion in lesions.items()} == {1: "present", 2: "resolved", 3: "present"}
    assert status.n_lesions == 2


def test_each_model_keeps_its_own_rows(factory: sessionmaker[Session]) -> None:
    archive = Archive(factory)
    patient = archive.patient()
    archive.study(patient, DAY0, [Spot(A, 9.0)], models=(MODEL, OTHER_MODEL))
    archive.study(patient, DAY1, [Spot(shifted(A), 9.0)], models=(MODEL, OTHER_MODEL), table_z_mm=SHIFT[2])
    update_patient(factory, patient, OTHER_MODEL)
    other = snapshot(factory)
    update_patient(factory, patient, MODEL)
    update_patient(factory, patient, MODEL)
    with factory() as session:
        by_model = {
            model: sorted(label for (label,) in session.execute(select(Lesion.label).where(Lesion.model == model)))
            for model in (MODEL, OTHER_MODEL)
        }
        statuses = {row.model: row.lungrads for row in session.scalars(select(PatientStatus))}
        assessed = sorted(row.model for row in session.scalars(select(Assessment)))
    assert by_model == {MODEL: [1], OTHER_MODEL: [1]}
    assert statuses == {MODEL: "3", OTHER_MODEL: "3"}  # 9 mm solid: 4A at baseline, stable at 184 days: 3
    assert assessed == sorted([MODEL, MODEL, OTHER_MODEL, OTHER_MODEL])
    now = snapshot(factory)
    for table in ("lesions", "assessments", "status"):
        assert [row for row in now[table] if OTHER_MODEL in row] == [row for row in other[table] if OTHER_MODEL in row]


def test_an_unknown_patient_is_refused_with_its_id(factory: sessionmaker[Session]) -> None:
    with pytest.raises(LookupError, match="patient 4242"):
        update_patient(factory, 4242, MODEL)


def test_cli_follows_one_patient_by_key_or_every_patient(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from nightscan.cli import main

    engine = make_engine(sqlite_url)
    factory = make_sessionmaker(engine)
    archive = Archive(factory)
    first, second = archive.patient(), archive.patient("M")
    archive.study(first, DAY0, [Spot(A, 9.0)])
    archive.study(second, DAY0, [Spot(B, 5.0)], models=(MODEL, OTHER_MODEL))
    with factory() as session:
        key = session.get(Patient, first).patient_key
    engine.dispose()
    monkeypatch.setenv("NIGHTSCAN_DATABASE_URL", sqlite_url)
    runner = CliRunner()

    one = runner.invoke(main, ["follow-up", "--patient-key", key])
    assert one.exit_code == 0, one.output
    assert "followed 1 patient-model pair(s); latest Lung-RADS 4A: 1" in one.output
    every = runner.invoke(main, ["follow-up", "--all", "--model", MODEL])
    assert "followed 2 patient-model pair(s); latest Lung-RADS 2: 1, 4A: 1" in every.output
    assert "followed 3 patient-model pair(s)" in runner.invoke(main, ["follow-up", "--all"]).output
    assert runner.invoke(main, ["follow-up"]).exit_code == 2  # neither --patient-key nor --all
    unknown = runner.invoke(main, ["follow-up", "--patient-key", "NS9999"])
    assert unknown.exit_code == 2 and "no patient has this key" in unknown.output


def test_two_runs_for_one_patient_at_once_write_one_result(postgres_url: str) -> None:
    from concurrent.futures import ThreadPoolExecutor

    engine = make_engine(postgres_url)
    factory = make_sessionmaker(engine)
    archive = Archive(factory)
    patient = archive.patient()
    archive.study(patient, DAY0, [Spot(A, 6.0), Spot(B, 5.0)])
    archive.study(patient, DAY1, [Spot(shifted(A), 8.0), Spot(shifted(C), 5.0)], table_z_mm=SHIFT[2])
    with ThreadPoolExecutor(max_workers=4) as pool:  # two analyses done at once send the step twice, or more
        reports = list(pool.map(lambda _: update_patient(factory, patient, MODEL), range(4)))
    assert {report.lungrads for report in reports} == {"4B"}
    # the patient's lock serialises them: the first writes, the others find its rows and change nothing
    wrote = [report.counts.inserted + report.counts.updated > 0 for report in reports]
    assert sorted(wrote) == [False, False, False, True]
    with factory() as session:
        labels = sorted(label for (label,) in session.execute(select(Lesion.label)))
        assessed = session.scalars(select(Assessment)).all()
    engine.dispose()
    assert labels == [1, 2, 3] and len(assessed) == 2


def test_a_study_without_a_date_is_assessed_incomplete(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    factory = make_sessionmaker(engine)
    archive = Archive(factory)
    patient = archive.patient()
    dated = archive.study(patient, DAY0, [Spot(A, 9.0)])
    undated = archive.study(patient, None, [Spot(A, 9.0)])  # type: ignore[arg-type]
    report = update_patient(factory, patient, MODEL)
    with factory() as session:
        rows = {a.analysis_id: a for a in session.scalars(select(Assessment))}
        status = session.scalars(select(PatientStatus)).one()
    assert report.lungrads == "4A" and status.latest_analysis_id == dated[MODEL]
    assert rows[undated[MODEL]].lungrads == "0" and "no date" in rows[undated[MODEL]].reason
    assert labelled(factory, undated[MODEL]) == {0: None}
    engine.dispose()


def test_a_duplicate_finding_of_one_nodule_is_left_out(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    factory = make_sessionmaker(engine)
    archive = Archive(factory)
    patient = archive.patient()
    near = (A[0] + 0.5, A[1], A[2])  # the detector's second candidate on the same 15 mm nodule
    first = archive.study(patient, DAY0, [Spot(near, 14.8, score=0.985), Spot(A, 15.1, score=1.0)])
    second = archive.study(patient, DAY1, [Spot(shifted(A), 15.2)], table_z_mm=SHIFT[2])
    report = update_patient(factory, patient, MODEL)
    assert (report.nodules, report.lesions) == (2, 1)
    assert labelled(factory, first[MODEL]) == {0: None, 1: 1} and labelled(factory, second[MODEL]) == {0: 1}
    engine.dispose()


def test_a_spiculated_category_3_nodule_is_4x_and_raises_its_brock(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    factory = make_sessionmaker(engine)
    archive = Archive(factory)
    smooth_patient, spiculated_patient = archive.patient(), archive.patient()
    smooth = archive.study(smooth_patient, DAY0, [Spot(A, 7.0, spiculation=0.1)])
    spiculated = archive.study(spiculated_patient, DAY0, [Spot(A, 7.0, spiculation=SPICULATED_SCORE)])
    assert update_patient(factory, smooth_patient, MODEL).lungrads == "3"
    assert update_patient(factory, spiculated_patient, MODEL).lungrads == "4X"
    with factory() as session:
        rows = {a.analysis_id: a for a in session.scalars(select(Assessment))}
        brock = {f.analysis_id: f.lesion.brock_probability for f in session.scalars(select(Finding))}
    assert "spiculated -> 4X" in rows[spiculated[MODEL]].reason
    assert "spiculation" not in rows[spiculated[MODEL]].assumptions  # measured, not assumed
    assert brock[spiculated[MODEL]] > brock[smooth[MODEL]]
    engine.dispose()


def test_the_step_reads_a_lesions_spiculation_from_its_stored_looks(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    factory = make_sessionmaker(engine)
    archive = Archive(factory)
    patient = archive.patient()
    archive.study(patient, DAY0, [Spot(A, 15.0, spiculation=0.99)])
    assert update_patient(factory, patient, MODEL).lungrads == "4X"
    blurred = archive.study(patient, DAY1, [Spot(A, 18.0, spiculation=0.2)])  # growing: 4B, 4X if spiculated
    assert update_patient(factory, patient, MODEL).lungrads == "4X"
    with factory() as session:
        assessment = session.scalars(select(Assessment).where(Assessment.analysis_id == blurred[MODEL])).one()
    assert "spiculated -> 4X" in assessment.reason
    engine.dispose()
