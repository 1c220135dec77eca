"""Re-analysis campaigns on hand-built rows, in PostgreSQL and SQLite: what is planned, on which series,
that a second run plans nothing, the --patients and --since scopes, that old results stay, the CLI,
and that the scheduler sends new studies before re-analyses."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select, update

from db.engine import make_engine, make_sessionmaker, transaction
from db.models import Analysis, AnalysisStatus, Finding, Patient, utcnow
from nightscan.cli import main
from nightscan.settings import Settings
from scheduler.nightly import run_night
from scheduler.planning import enqueue_planned, plan_analyses
from scheduler.reanalysis import follow_new_studies, parse_model_ref, plan_reanalysis, progress, resolve_patients
from tests.hand_built import add_analysis, add_finding, add_patient, add_series, add_study, key_of

V1 = "nodule-detector@0.2.0"
V2 = "nodule-detector@0.3.0"


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest) -> str:
    return request.getfixturevalue(f"{request.param}_url")


@dataclass
class World:
    """Patients ann (3 studies), bob (2; the newest has no analysis yet), cy (1, no date)."""

    factory: object
    ann: list[int]  # study IDs, oldest first
    bob: list[int]
    cy: list[int]
    bob_patient: int
    series: dict[int, int]  # study ID -> the series V1 analysed (or the only series)
    v1_findings: int


@pytest.fixture
def world(db_url: str) -> World:
    factory = make_sessionmaker(make_engine(db_url))
    with transaction(factory) as session:
        ann, bob, cy = (add_patient(session, n) for n in ("ann", "bob", "cy"))
        studies: dict[str, list[int]] = {"ann": [], "bob": [], "cy": []}
        series: dict[int, int] = {}
        for patient, name, dates in (
            (ann, "ann", [date(2024, 1, 10), date(2025, 1, 12), date(2026, 1, 15)]),
            (bob, "bob", [date(2025, 3, 1), date(2026, 3, 1)]),
            (cy, "cy", [None]),
        ):
            for day in dates:
                study, s = add_study(session, patient, day)
                studies[name].append(study.id)
                series[study.id] = s.id
                if (name, day) == ("bob", date(2026, 3, 1)):
                    add_series(session, study, slices=20, thickness_mm=5.0)  # the rules must pass this one over
                    continue  # a new study, not analysed by any model yet
                v1 = add_analysis(session, study, s, V1)
                add_finding(session, v1, (10.0, 20.0, 30.0), 6.0)
                if (name, day) == ("ann", date(2024, 1, 10)):
                    add_analysis(session, study, s, V2, AnalysisStatus.FAILED)  # V2 tried it already
        v1_findings = session.scalar(select(func.count()).select_from(Finding))
        bob_patient = bob.id
    return World(factory, studies["ann"], studies["bob"], studies["cy"], bob_patient, series, v1_findings)


def _plan(world: World, **scope: object):  # type: ignore[no-untyped-def]
    with transaction(world.factory) as session:
        return plan_reanalysis(session, V2, pipeline="lung-ct", quiet_s=300, now=utcnow(), **scope)


def _v2(world: World) -> dict[int, tuple[int, AnalysisStatus]]:
    with world.factory() as session:
        rows = session.execute(
            select(Analysis.study_id, Analysis.series_id, Analysis.status).where(Analysis.model == V2)
        )
        return {study: (series, status) for study, series, status in rows}


def test_plans_exactly_the_missing_analyses_on_the_current_series(world: World) -> None:
    report = _plan(world)
    studies = [*world.ann, *world.bob, *world.cy]
    assert (report.in_scope, report.already, len(report.planned)) == (len(studies), 1, len(studies) - 1)
    assert (report.same_series, report.by_rules, report.waiting, report.no_series) == (4, 1, 0, 0)
    v2 = _v2(world)
    assert set(v2) == set(studies)
    assert v2[world.ann[0]][1] == AnalysisStatus.FAILED  # the earlier try is left as it was
    for study in studies[1:]:
        assert v2[study] == (world.series[study], AnalysisStatus.PLANNED)


def test_a_second_run_plans_nothing(world: World) -> None:
    first = _plan(world)
    second = _plan(world)
    assert len(first.planned) == 5
    assert (len(second.planned), second.already, second.in_scope) == (0, 6, 6)
    with world.factory() as session:
        assert session.scalar(select(func.count()).select_from(Analysis).where(Analysis.model == V2)) == 6


def test_patients_and_since_restrict_the_scope(world: World) -> None:
    with world.factory() as session:
        ann = resolve_patients(session, [key_of("ann")])
        both = resolve_patients(session, [key_of("ann")[:10], key_of("bob").upper(), key_of("ann")])
    assert len(both) == 2  # a prefix and the full key of the same patient count once
    only_ann = _plan(world, patient_ids=ann)
    assert sorted(_v2(world)) == world.ann and len(only_ann.planned) == 2
    since = _plan(world, since=date(2025, 6, 1))  # ann's 2026 study is planned already; cy's has no date
    assert (since.in_scope, len(since.planned)) == (2, 1)
    assert set(_v2(world)) == {*world.ann, world.bob[1]}


def _follow(world: World, current_model: str = V1) -> int:
    with transaction(world.factory) as session:
        return follow_new_studies(session, pipeline="lung-ct", current_model=current_model, quiet_s=300, now=utcnow())


def test_a_running_campaign_follows_its_patients_new_studies(world: World) -> None:
    with world.factory() as session:
        ann = resolve_patients(session, [key_of("ann")])
    _plan(world, patient_ids=ann)
    assert _follow(world) == 0  # nothing new since the campaign began
    with transaction(world.factory) as session:
        ann_new, _ = add_study(session, session.get(Patient, ann[0]), date(2026, 11, 1))
        bob_new, _ = add_study(session, session.get(Patient, world.bob_patient), date(2026, 11, 2))
        ann_new_id, bob_new_id = ann_new.id, bob_new.id
    assert _follow(world, current_model=V2) == 0  # the scheduler's own model plans every study anyway
    assert _follow(world) == 1 and _follow(world) == 0
    v2 = _v2(world)
    assert v2[ann_new_id][1] == AnalysisStatus.PLANNED  # ann is in the campaign: her new study joins it
    assert bob_new_id not in v2  # bob is not
    with transaction(world.factory) as session:  # the campaign ends: every analysis done
        session.execute(update(Analysis).where(Analysis.model == V2).values(status=AnalysisStatus.DONE))
        later, _ = add_study(session, session.get(Patient, ann[0]), date(2026, 11, 20))
        later_id = later.id
    assert _follow(world) == 0 and later_id not in _v2(world)


def test_old_results_are_kept(world: World) -> None:
    with world.factory() as session:
        before = session.execute(select(Analysis.id, Analysis.status).where(Analysis.model == V1)).all()
    _plan(world)
    with world.factory() as session:
        after = session.execute(select(Analysis.id, Analysis.status).where(Analysis.model == V1)).all()
        assert sorted(after) == sorted(before) and {s for _, s in after} == {AnalysisStatus.DONE}
        assert session.scalar(select(func.count()).select_from(Finding)) == world.v1_findings
        counts = progress(session, V2, "lung-ct")
    assert counts[AnalysisStatus.PLANNED] == 5 and counts[AnalysisStatus.FAILED] == 1


def test_new_studies_are_sent_before_reanalyses(world: World) -> None:
    _plan(world)
    with transaction(world.factory) as session:  # the scheduler's own planning for its current model, V1
        new = plan_analyses(session, "lung-ct", V1, quiet_s=300, now=utcnow())
    assert len(new.planned) == 1
    sent: list[int] = []
    with world.factory() as session:
        limited = enqueue_planned(session, sent.append, max_outstanding=3)
        rest = enqueue_planned(session, sent.append)
        study_of = dict(session.execute(select(Analysis.id, Analysis.study_id)).all())
    assert (limited.sent, limited.remaining, limited.stopped) == (3, 3, "backpressure")
    assert (rest.sent, rest.remaining, rest.stopped) == (3, 0, "done")
    assert {study_of[i] for i in sent[:2]} == {world.bob[1]}  # bob's new study, by both models, first
    assert study_of[sent[2]] == world.ann[2]  # then re-analyses, the newest study first
    assert world.bob[1] not in {study_of[i] for i in sent[2:]} and len(set(sent)) == 6


def test_bad_patient_keys_and_models_name_the_value(world: World) -> None:
    with world.factory() as session:
        for keys, message in (
            (["abc"], "'abc'"),
            (["0" * 64], "'" + "0" * 64 + "'"),
            (["zzzzzzzzzz"], "'zzzzzzzzzz'"),
            ([key_of("dan")[:12]], repr(key_of("dan")[:12])),
        ):
            with pytest.raises(ValueError, match=message):
                resolve_patients(session, keys)
    with pytest.raises(ValueError, match="'detector'"):
        parse_model_ref("detector")


def test_cli_reanalyze_dry_run_then_patients_file(world: World, db_url: str, tmp_path) -> None:
    runner = CliRunner()
    env = {"NIGHTSCAN_DATABASE_URL": db_url, "NIGHTSCAN_LOG_LEVEL": "WARNING"}
    dry = runner.invoke(main, ["reanalyze", "--model", V2, "--patients", key_of("ann")[:12], "--dry-run"], env=env)
    assert dry.exit_code == 0, dry.output
    assert "would plan 2" in dry.output and len(_v2(world)) == 1
    keys = tmp_path / "keys.txt"
    keys.write_text(f"# campaign for two patients\n{key_of('ann')}\n{key_of('bob')}  # bob\n")
    run = runner.invoke(
        main, ["reanalyze", "--model", V2, "--patients-file", str(keys), "--since", "2025-01-01"], env=env
    )
    assert run.exit_code == 0, run.output
    assert "planned 4 (3 on the current series, 1 by the selection rules)" in run.output
    assert set(_v2(world)) == {world.ann[0], world.ann[1], world.ann[2], world.bob[0], world.bob[1]}
    unknown = runner.invoke(main, ["reanalyze", "--model", "nodule-detector@9.9.9"], env=env)
    assert unknown.exit_code == 2 and "nodule-detector@9.9.9" in unknown.output
    stranger = runner.invoke(main, ["reanalyze", "--model", V2, "--patients", "deadbeef00"], env=env)
    assert stranger.exit_code == 2 and "deadbeef00" in stranger.output


def test_the_nightly_run_sends_a_campaign_inside_its_window(world: World, db_url: str, tmp_path) -> None:
    _plan(world)
    archive = tmp_path / "empty-archive"
    archive.mkdir()
    settings = Settings(
        data_dir=tmp_path, database_url=db_url, archive_url=archive.as_uri(), detector=V1, series_quiet_s=300
    )
    sent: list[int] = []
    report = run_night(settings, world.factory, sent.append, now=datetime.now().astimezone())
    assert report is not None and (report.planned, report.enqueued, report.stopped) == (1, 6, "done")
    with world.factory() as session:
        models = dict(session.execute(select(Analysis.id, Analysis.model).where(Analysis.id.in_(sent))).all())
        queued = session.scalar(select(func.count()).select_from(Analysis).where(Analysis.status == "queued"))
    assert sorted(models.values()) == [V1] + [V2] * 5 and queued == 6
