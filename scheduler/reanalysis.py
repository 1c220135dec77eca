"""Re-analysis campaigns: plan a model version's analyses of the studies it has not seen yet.

``nightscan reanalyze --model NAME@VERSION [--patients ...] [--since DATE]`` plans (status planned)
one analysis of that model for each study of the chosen patients that has none; the nightly run
sends planned analyses of every model inside its window, studies that no model has analysed yet
first (``scheduler.planning``). Analyses of other versions are never touched: both versions'
results are kept, side by side, each under its own ``model``.

A campaign is not a table. Its analyses are rows of ``analyses`` with the model's name, their
``created_at`` and status; its progress is the count of that model's analyses by status
(:func:`progress`), whichever command planned them; what an operator asked for is in the log.
Running the same campaign again plans nothing (the unique (study, pipeline, model) key), so the
command is idempotent and safe against a concurrent scheduler (planning retries on conflict).

A campaign follows its patients' new studies while it runs (:func:`follow_new_studies`, called by each
scan): a model other than the scheduler's own with analyses still planned, queued or running is an active
campaign; a study of one of its patients indexed after the campaign began gets that model's analysis too.

The series: the one the study's current analysis used (its latest finished analysis of the pipeline,
else its latest of any status), so versions are compared on the same images; a study that no model
has analysed goes through the selection rules and the quiet time, like the scheduler's own planning.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from db.models import Analysis, AnalysisStatus, Patient, Study
from scheduler.planning import choose_series
from scheduler.selection import rules_for

log = logging.getLogger(__name__)

CHUNK = 1000  # studies (or patient keys) per query: bounded memory and bound parameters
MIN_KEY_PREFIX = 8  # hex characters of a patient key a person may type instead of all 64
_MODEL_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*@[A-Za-z0-9][A-Za-z0-9._+-]*$")
_HEX = re.compile(r"^[0-9a-f]+$")


def parse_model_ref(ref: str) -> str:
    """``ref`` if it reads ``name@version``; ValueError naming it otherwise."""
    if not isinstance(ref, str) or not _MODEL_REF.match(ref.strip()):
        raise ValueError(f"model must be NAME@VERSION (e.g. nodule-detector@0.3.0), got {ref!r}")
    return ref.strip()


def resolve_patients(session: Session, keys: Sequence[str]) -> list[int]:
    """Patient IDs for pseudonymous patient keys: full keys, or unique prefixes of at least 8 hex characters.

    ValueError names the first key that is malformed, unknown or ambiguous. Duplicates are dropped.
    """
    wanted: dict[str, None] = {}
    for raw in keys:
        key = raw.strip().lower()
        if not key:
            continue
        if len(key) < MIN_KEY_PREFIX or not _HEX.match(key):
            raise ValueError(f"a patient key is at least {MIN_KEY_PREFIX} hex characters, got {raw!r}")
        wanted[key] = None
    full = [k for k in wanted if len(k) == 64]
    prefixes = [k for k in wanted if len(k) < 64]
    found: dict[str, int] = {}
    for chunk in _chunks(full, CHUNK):
        query = select(Patient.patient_key, Patient.id).where(Patient.patient_key.in_(chunk))
        found.update(session.execute(query).all())
    missing = [k for k in full if k not in found]
    if missing:
        raise ValueError(f"no patient has the key {missing[0]!r} ({len(missing)} unknown keys in all)")
    ids = [found[k] for k in full]
    for prefix in prefixes:
        matches = session.scalars(select(Patient.id).where(Patient.patient_key.startswith(prefix)).limit(2)).all()
        if len(matches) != 1:
            what = "no patient" if not matches else "more than one patient"
            raise ValueError(f"{what} has a key starting with {prefix!r}; give more characters")
        ids.append(matches[0])
    return list(dict.fromkeys(ids))


@dataclass
class ReanalysisReport:
    """What planning a campaign found and did; counts are studies."""

    model: str
    pipeline: str
    in_scope: int = 0  # studies of the chosen patients (and dates)
    already: int = 0  # of them, with an analysis of this model already (any status)
    planned: list[int] = field(default_factory=list)  # the new analyses' IDs
    same_series: int = 0  # planned on the series of the study's current analysis
    by_rules: int = 0  # planned on the series the selection rules chose (no earlier analysis)
    waiting: int = 0  # series still changing (quiet time): planned by a later run
    no_series: int = 0  # no series qualifies


def plan_reanalysis(
    session: Session,
    model: str,
    *,
    pipeline: str,
    patient_ids: Sequence[int] | None = None,
    since: date | None = None,
    created_after: datetime | None = None,
    quiet_s: float,
    now: datetime,
) -> ReanalysisReport:
    """Plan an analysis by ``model`` for every study in scope that has none; nothing is committed here.

    Scope: the studies of ``patient_ids`` (None: every patient) dated ``since`` or later (None: any
    date; a study without a date is outside any ``since``), and first indexed after ``created_after`` (None:
    whenever). ``quiet_s`` (seconds) applies to studies
    planned by the rules. Existing analyses, of this model or any other, are left as they are.
    """
    model = parse_model_ref(model)
    rules = rules_for(pipeline)
    report = ReanalysisReport(model=model, pipeline=pipeline)
    for chunk in _study_chunks(session, patient_ids, since, created_after):
        report.in_scope += len(chunk)
        done = set(
            session.scalars(
                select(Analysis.study_id).where(
                    Analysis.study_id.in_(chunk), Analysis.pipeline == pipeline, Analysis.model == model
                )
            )
        )
        report.already += len(done)
        todo = [s for s in chunk if s not in done]
        if not todo:
            continue
        current = _current_series(session, todo, pipeline)
        rows = []
        for study_id in todo:
            series_id = current.get(study_id)
            if series_id is not None:
                report.same_series += 1
            else:
                choice = choose_series(session, study_id, pipeline, rules, quiet_s=quiet_s, now=now)
                if choice.decision is None:
                    report.no_series += 1
                    continue
                if choice.waiting:
                    report.waiting += 1
                    continue
                series_id = choice.decision.series_id
                report.by_rules += 1
            rows.append(
                {
                    "study_id": study_id,
                    "series_id": series_id,
                    "pipeline": pipeline,
                    "model": model,
                    "status": AnalysisStatus.PLANNED,
                    "attempts": 0,
                    "created_at": now,
                }
            )
        if rows:
            report.planned.extend(session.scalars(insert(Analysis).returning(Analysis.id), rows))
    log.info(
        "re-analysis by %s (%s): %d studies in scope, %d already had one, %d planned "
        "(%d on the current series, %d by the rules), %d waiting, %d without a usable series",
        model,
        pipeline,
        report.in_scope,
        report.already,
        len(report.planned),
        report.same_series,
        report.by_rules,
        report.waiting,
        report.no_series,
    )
    return report


def follow_new_studies(session: Session, *, pipeline: str, current_model: str, quiet_s: float, now: datetime) -> int:
    """Plan every active campaign's analyses of its patients' studies indexed since the campaign began.

    A campaign is active while its model (any but ``current_model``, which plans every study anyway) has
    analyses of ``pipeline`` planned, queued or running; it began when its first analysis was planned; its
    patients are those with an analysis of the model. Returns the number of analyses planned.
    """
    active = select(Analysis.model).where(
        Analysis.pipeline == pipeline,
        Analysis.model != current_model,
        Analysis.status.in_((AnalysisStatus.PLANNED, AnalysisStatus.QUEUED, AnalysisStatus.RUNNING)),
    )
    planned = 0
    for model in sorted(set(session.scalars(active.distinct()))):
        began = session.scalar(
            select(func.min(Analysis.created_at)).where(Analysis.pipeline == pipeline, Analysis.model == model)
        )
        in_campaign = (
            select(Study.patient_id)
            .join(Analysis, Analysis.study_id == Study.id)
            .where(Analysis.pipeline == pipeline, Analysis.model == model)
        )
        # only the campaign's patients with a study indexed since it began: few, whatever the campaign's size
        patients = list(
            session.scalars(
                select(Study.patient_id).where(Study.created_at > began, Study.patient_id.in_(in_campaign)).distinct()
            )
        )
        if not patients:
            continue
        report = plan_reanalysis(
            session, model, pipeline=pipeline, patient_ids=patients, created_after=began, quiet_s=quiet_s, now=now
        )
        planned += len(report.planned)
    return planned


def progress(session: Session, model: str, pipeline: str) -> dict[AnalysisStatus, int]:
    """How many analyses ``model`` has in each status (every status present, 0 where none)."""
    counts = dict(
        session.execute(
            select(Analysis.status, func.count())
            .where(Analysis.model == model, Analysis.pipeline == pipeline)
            .group_by(Analysis.status)
        ).all()
    )
    return {status: counts.get(status, 0) for status in AnalysisStatus}


def _study_chunks(
    session: Session, patient_ids: Sequence[int] | None, since: date | None, created_after: datetime | None = None
) -> Iterator[list[int]]:
    """Study IDs in scope, in chunks of at most CHUNK, in ID order."""
    groups: list[Sequence[int] | None] = [None] if patient_ids is None else list(_chunks(list(patient_ids), CHUNK))
    for group in groups:
        query = select(Study.id).order_by(Study.id)
        if group is not None:
            query = query.where(Study.patient_id.in_(group))
        if since is not None:
            query = query.where(Study.study_date >= since)
        if created_after is not None:
            query = query.where(Study.created_at > created_after)
        yield from _chunks(list(session.scalars(query)), CHUNK)


def _current_series(session: Session, study_ids: list[int], pipeline: str) -> dict[int, int]:
    """For each study with an analysis of ``pipeline``: the series of its latest done analysis, else its latest."""
    rows = session.execute(
        select(Analysis.study_id, Analysis.series_id, Analysis.status, Analysis.id).where(
            Analysis.study_id.in_(study_ids), Analysis.pipeline == pipeline
        )
    ).all()
    best: dict[int, tuple[bool, int, int]] = {}
    for study_id, series_id, status, analysis_id in rows:
        rank = (status == AnalysisStatus.DONE, analysis_id, series_id)
        if study_id not in best or rank > best[study_id]:
            best[study_id] = rank
    return {study_id: rank[2] for study_id, rank in best.items()}


def _chunks(items: list, size: int) -> Iterator[list]:  # type: ignore[type-arg]
    for start in range(0, len(items), size):
        yield items[start : start + size]
