"""The nightly run: claim the night in SQL, then scan and keep the queue fed until the window closes.

Celery beat starts it (``nightscan beat``); cron can too (``nightscan nightly``). Two schedulers may
start the same night: the night is a unique (source, night) row of ``scan_runs``, so one claims it
and the other stops at once. What the window leaves planned, the next night sends first.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import date, datetime, time, timedelta

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from db.engine import transaction
from db.models import RunStatus, ScanRun
from nightscan.settings import Settings
from scheduler.scan import ScanReport, scan

log = logging.getLogger(__name__)


def parse_clock(text: str, argument: str) -> time:
    """``HH:MM`` as a time of day; ValueError naming ``argument`` and the text otherwise."""
    try:
        hour, minute = (int(v) for v in text.split(":"))
        return time(hour, minute)
    except ValueError:
        raise ValueError(f"{argument} must be HH:MM, got {text!r}") from None


def night_of(moment: datetime, night_end: time) -> date:
    """The night a moment belongs to, named by the date it starts (02:00 on the 3rd is the night of the 2nd)."""
    local = moment.astimezone()
    return local.date() - timedelta(days=1) if local.time() < night_end else local.date()


def window_end(moment: datetime, night_end: time) -> datetime:
    """The next ``night_end`` after ``moment``, local time, timezone-aware."""
    local = moment.astimezone()
    end = local.replace(hour=night_end.hour, minute=night_end.minute, second=0, microsecond=0)
    return end if end > local else end + timedelta(days=1)


def claim_night(factory: sessionmaker[Session], source: str, night: date, until: datetime | None) -> int | None:
    """Insert the run of ``night`` for ``source``; its ID, or None when another scheduler has it."""
    try:
        with transaction(factory) as session:
            run = ScanRun(source=source, night=night, status=RunStatus.RUNNING, until=until)
            session.add(run)
        return run.id
    except IntegrityError:
        log.info("the night of %s is already claimed for %s", night, source)
        return None


def run_night(
    settings: Settings,
    factory: sessionmaker[Session],
    send: Callable[[int], None],
    *,
    now: datetime | None = None,
    ingest: Callable[[int, str, list[list[str | int]]], None] | None = None,
) -> ScanReport | None:
    """Claim tonight for the configured archive and run it until the window closes; None if already claimed."""
    moment = now or datetime.now().astimezone()
    end = parse_clock(settings.night_end, "night_end")
    source = settings.resolved_archive_url
    until = window_end(moment, end)
    run_id = claim_night(factory, source, night_of(moment, end), until)
    if run_id is None:
        return None
    return scan(source, settings, factory, send, until=until, wait_while_full=True, run_id=run_id, ingest=ingest)
