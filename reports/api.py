"""The read API (FastAPI): patients, timelines, studies, findings, the worklist, runs, models, the audit trail.

Built by :func:`create_app` (never at import). Every route is a GET that reads; the database session of
a request is read-only (on PostgreSQL the transaction is ``READ ONLY``), and nothing is committed.
Every request needs a bearer token (``Authorization: Bearer nst_...``) with the route's scope, except
the OpenAPI schema, its docs and ``/health``; no token, or an unknown or revoked one, gives 401, a
token without the scope 403. Every request, answered or refused, is recorded by :mod:`reports.audit`.

Patients are looked up by their real PatientID under ``/patients/{patient_id}``: the ID is turned into
its keyed hash on the way in (the indexer's :func:`nightscan.pseudonym.patient_key`) and is never
stored, logged or returned; ``/pseudonyms/{patient_key}`` reaches the same reports by the hash, as the
worklist gives it. Run the server with uvicorn's access log off (``nightscan api`` does), since that log
would carry the raw path.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import date, datetime
from typing import Annotated, Literal

from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from db.models import AnalysisStatus, Patient, RunStatus
from nightscan.pseudonym import patient_key
from nightscan.settings import Settings
from reports import records
from reports.audit import UNMATCHED_ROUTE, record_request
from reports.schemas import (
    MAX_LIMIT,
    MAX_OFFSET,
    AuditOut,
    FindingOut,
    ModelOut,
    Page,
    PatientOut,
    RunOut,
    StudyDetailOut,
    StudyOut,
    TimelineOut,
    WorklistItemOut,
)
from reports.tokens import Scope, TokenInfo, authenticate
from screening.types import LungRads, NoduleType

log = logging.getLogger(__name__)

PUBLIC_ROUTES = frozenset({"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc", "/health"})

_bearer = HTTPBearer(auto_error=False, description="A token made by `nightscan api token create`.")

Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description=f"Rows per page, 1 to {MAX_LIMIT}.")]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="Rows to skip.")]
ModelRef = Annotated[str | None, Query(max_length=128, description="Model name@version, e.g. nodule-detector@0.3.0.")]
DateFrom = Annotated[date | None, Query(description="Earliest study date, inclusive (YYYY-MM-DD).")]
LesionStatus = Literal["present", "resolved"]
EveryStudy = Annotated[bool, Query(description="Key images of each lesion at every study, not only its latest.")]
DateTo = Annotated[date | None, Query(description="Latest study date, inclusive (YYYY-MM-DD).")]


# --- dependencies ---------------------------------------------------------------------------------------


def _factory(request: Request) -> sessionmaker[Session]:
    return request.app.state.factory  # type: ignore[no-any-return]


def read_session(request: Request) -> Iterator[Session]:
    """A session for one request, in a read-only transaction that is rolled back at the end."""
    with _factory(request)() as session:
        if session.get_bind().dialect.name == "postgresql":
            session.execute(text("SET TRANSACTION READ ONLY"))
        try:
            yield session
        finally:
            session.rollback()


def require(scope: Scope) -> Callable[..., TokenInfo]:
    """A dependency that admits a request whose bearer token is active and allows ``scope``."""

    def check(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> TokenInfo:
        if credentials is None:
            raise HTTPException(401, "a bearer token is required", headers={"WWW-Authenticate": "Bearer"})
        with _factory(request)() as session:
            token = authenticate(session, credentials.credentials)
        if token is None:
            raise HTTPException(401, "the token is unknown or revoked", headers={"WWW-Authenticate": "Bearer"})
        request.state.token = token
        if not token.allows(scope):
            have = ", ".join(sorted(s.value for s in token.scopes))
            raise HTTPException(403, f"this route needs scope {scope.value!r}; the token has {have}")
        return token

    check.__name__ = f"require_{scope.name.lower()}"
    return check


Session_ = Annotated[Session, Depends(read_session)]


def _rows(request: Request, n: int) -> None:
    """Note how many records the response carries (for the audit row)."""
    request.state.rows = n


def _settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


def _patient(request: Request, session: Session, *, patient_id: str | None = None, key: str | None = None) -> Patient:
    """The patient with this real PatientID (hashed here) or this keyed hash; 404 if none; 422 if empty."""
    if patient_id is not None:
        try:
            key = patient_key(patient_id, _settings(request).pseudonym_key.get_secret_value())
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
    patient = records.patient_by_key(session, key or "")
    if patient is None:
        raise HTTPException(404, "no patient has this identifier")
    return patient


def _model_for(session: Session, patient: Patient, model: str | None) -> str:
    if model is not None:
        return model
    models = records.patient_models(session, patient.id)
    if not models:
        raise HTTPException(404, "the patient has no finished analysis")
    return models[0]


# --- the app ----------------------------------------------------------------------------------------------


def create_app(settings: Settings, factory: sessionmaker[Session] | None = None) -> FastAPI:
    """The read API on ``settings``' database (or on ``factory``'s sessions)."""
    if factory is None:
        from nightscan.runtime import session_factory

        factory = session_factory(settings)
    app = FastAPI(
        title="nightscan reports",
        version="1",
        description=(__doc__ or "").split("\n\n")[0],
        openapi_tags=[
            {"name": "patients", "description": "By real PatientID (hashed on the way in) or by pseudonym."},
            {"name": "results", "description": "Studies, findings and the worklist."},
            {"name": "operations", "description": "Scan runs, models, audit."},
        ],
    )
    app.state.settings = settings
    app.state.factory = factory

    @app.middleware("http")
    async def audit(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        start = time.perf_counter()
        request.state.token = None
        request.state.rows = None
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
        finally:
            route = request.scope.get("route")
            template = getattr(route, "path_format", None) or UNMATCHED_ROUTE
            try:
                await run_in_threadpool(
                    record_request,
                    factory,
                    token=request.state.token,
                    method=request.method,
                    route=template,
                    status_code=status,
                    rows=request.state.rows if status < 400 else None,
                    duration_ms=(time.perf_counter() - start) * 1000.0,
                )
            except Exception:
                log.exception(
                    "api %s %s: the audit row could not be written; the response is withheld", request.method, template
                )
                response = JSONResponse({"detail": "the audit trail is unavailable"}, status_code=503)
        return response

    _routes(app)
    return app


def _routes(app: FastAPI) -> None:
    reports_read = Depends(require(Scope.REPORTS_READ))

    @app.get("/health", tags=["operations"], summary="Liveness (no token needed)")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    # --- patients -----------------------------------------------------------------------------------------

    def timeline_of(request: Request, session: Session, patient: Patient, model: str | None) -> TimelineOut:
        result = records.timeline(session, patient, _model_for(session, patient, model))
        _rows(request, len(result.studies) + len(result.lesions))
        return result

    def studies_of(
        request: Request, session: Session, patient: Patient, limit: int, offset: int, model: str | None
    ) -> Page[StudyOut]:
        page = records.list_studies(session, records.Paging(limit, offset), patient_id=patient.id, model=model)
        _rows(request, len(page.items))
        return page

    def html_of(
        request: Request, session: Session, patient: Patient, model: str | None, every_study: bool
    ) -> HTMLResponse:
        from reports.html import patient_report_html

        page = patient_report_html(
            session, _settings(request), patient, _model_for(session, patient, model), every_study=every_study
        )
        _rows(request, 1)
        return HTMLResponse(page)

    @app.get(
        "/patients/{patient_id:path}/report.html",
        tags=["patients"],
        dependencies=[reports_read],
        response_class=HTMLResponse,
        summary="A patient's HTML report (growth plot, key images), by real PatientID",
    )
    def patient_report_page(
        request: Request, session: Session_, patient_id: str, model: ModelRef = None, every_study: EveryStudy = False
    ) -> HTMLResponse:
        return html_of(request, session, _patient(request, session, patient_id=patient_id), model, every_study)

    @app.get(
        "/pseudonyms/{patient_key}/report.html",
        tags=["patients"],
        dependencies=[reports_read],
        response_class=HTMLResponse,
    )
    def pseudonym_report_page(
        request: Request, session: Session_, patient_key: str, model: ModelRef = None, every_study: EveryStudy = False
    ) -> HTMLResponse:
        """A patient's HTML report, by the keyed hash of the PatientID."""
        return html_of(request, session, _patient(request, session, key=patient_key), model, every_study)

    @app.get(
        "/patients/{patient_id:path}/timeline",
        tags=["patients"],
        dependencies=[reports_read],
        summary="A patient's timeline, by real PatientID",
    )
    def patient_timeline(request: Request, session: Session_, patient_id: str, model: ModelRef = None) -> TimelineOut:
        return timeline_of(request, session, _patient(request, session, patient_id=patient_id), model)

    @app.get(
        "/patients/{patient_id:path}/studies",
        tags=["patients"],
        dependencies=[reports_read],
        summary="A patient's studies, by real PatientID",
    )
    def patient_studies(
        request: Request,
        session: Session_,
        patient_id: str,
        limit: Limit = 50,
        offset: Offset = 0,
        model: ModelRef = None,
    ) -> Page[StudyOut]:
        return studies_of(request, session, _patient(request, session, patient_id=patient_id), limit, offset, model)

    @app.get(
        "/patients/{patient_id:path}",
        tags=["patients"],
        dependencies=[reports_read],
        summary="A patient, by real PatientID (hashed on the way in)",
    )
    def patient(request: Request, session: Session_, patient_id: str) -> PatientOut:
        result = records.patient_summary(session, _patient(request, session, patient_id=patient_id))
        _rows(request, 1)
        return result

    @app.get("/pseudonyms/{patient_key}/timeline", tags=["patients"], dependencies=[reports_read])
    def pseudonym_timeline(
        request: Request, session: Session_, patient_key: str, model: ModelRef = None
    ) -> TimelineOut:
        """A patient's timeline, by the keyed hash of the PatientID (as the worklist gives it)."""
        return timeline_of(request, session, _patient(request, session, key=patient_key), model)

    @app.get("/pseudonyms/{patient_key}/studies", tags=["patients"], dependencies=[reports_read])
    def pseudonym_studies(
        request: Request,
        session: Session_,
        patient_key: str,
        limit: Limit = 50,
        offset: Offset = 0,
        model: ModelRef = None,
    ) -> Page[StudyOut]:
        """A patient's studies, by the keyed hash of the PatientID."""
        return studies_of(request, session, _patient(request, session, key=patient_key), limit, offset, model)

    @app.get("/pseudonyms/{patient_key}", tags=["patients"], dependencies=[reports_read])
    def pseudonym(request: Request, session: Session_, patient_key: str) -> PatientOut:
        """A patient, by the keyed hash of the PatientID."""
        result = records.patient_summary(session, _patient(request, session, key=patient_key))
        _rows(request, 1)
        return result

    # --- studies and findings -----------------------------------------------------------------------------

    @app.get("/studies", tags=["results"], dependencies=[reports_read])
    def studies(
        request: Request,
        session: Session_,
        limit: Limit = 50,
        offset: Offset = 0,
        model: ModelRef = None,
        status: Annotated[
            AnalysisStatus | None, Query(description="Keep studies with an analysis in this status.")
        ] = None,
        date_from: DateFrom = None,
        date_to: DateTo = None,
    ) -> Page[StudyOut]:
        """Studies, newest first, with their analyses."""
        page = records.list_studies(
            session, records.Paging(limit, offset), model=model, status=status, date_from=date_from, date_to=date_to
        )
        _rows(request, len(page.items))
        return page

    @app.get("/studies/{study_uid}", tags=["results"], dependencies=[reports_read])
    def study(request: Request, session: Session_, study_uid: str) -> StudyDetailOut:
        """One study by StudyInstanceUID: its series and analyses."""
        result = records.study_detail(session, study_uid)
        if result is None:
            raise HTTPException(404, f"no study has StudyInstanceUID {study_uid!r}")
        _rows(request, 1)
        return result

    def findings_page(
        request: Request, session: Session, limit: int, offset: int, **filters: object
    ) -> Page[FindingOut]:
        page = records.list_findings(session, records.Paging(limit, offset), **filters)  # type: ignore[arg-type]
        _rows(request, len(page.items))
        return page

    @app.get("/studies/{study_uid}/findings", tags=["results"], dependencies=[reports_read])
    def study_findings(
        request: Request,
        session: Session_,
        study_uid: str,
        limit: Limit = 50,
        offset: Offset = 0,
        model: ModelRef = None,
    ) -> Page[FindingOut]:
        """The findings of a study's done analyses (of one model, when given)."""
        return findings_page(request, session, limit, offset, study_uid=study_uid, model=model)

    @app.get("/analyses/{analysis_id}/findings", tags=["results"], dependencies=[reports_read])
    def analysis_findings(
        request: Request, session: Session_, analysis_id: int, limit: Limit = 50, offset: Offset = 0
    ) -> Page[FindingOut]:
        """The findings of one analysis."""
        return findings_page(request, session, limit, offset, analysis_id=analysis_id)

    @app.get("/findings", tags=["results"], dependencies=[reports_read])
    def findings(
        request: Request,
        session: Session_,
        limit: Limit = 50,
        offset: Offset = 0,
        model: ModelRef = None,
        nodule_type: Annotated[NoduleType | None, Query()] = None,
        label: Annotated[str | None, Query(max_length=32, description="The detector's label.")] = None,
        lesion_status: Annotated[
            Literal["present", "resolved"] | None, Query(description="Tracked lesions' status.")
        ] = None,
        min_diameter_mm: Annotated[float | None, Query(ge=0, description="Smallest diameter, mm.")] = None,
        max_diameter_mm: Annotated[float | None, Query(ge=0, description="Largest diameter, mm.")] = None,
        date_from: DateFrom = None,
        date_to: DateTo = None,
    ) -> Page[FindingOut]:
        """Findings across studies, newest first."""
        return findings_page(
            request,
            session,
            limit,
            offset,
            model=model,
            nodule_type=nodule_type.value if nodule_type else None,
            label=label,
            lesion_status=lesion_status,
            min_diameter_mm=min_diameter_mm,
            max_diameter_mm=max_diameter_mm,
            date_from=date_from,
            date_to=date_to,
        )

    # --- worklist -------------------------------------------------------------------------------------------

    @app.get("/worklist", tags=["results"], dependencies=[Depends(require(Scope.WORKLIST_READ))])
    def worklist(
        request: Request,
        session: Session_,
        limit: Limit = 50,
        offset: Offset = 0,
        model: ModelRef = None,
        min_category: Annotated[
            LungRads, Query(description="Keep patients whose latest Lung-RADS category is this or higher.")
        ] = LungRads.CAT4A,
        vdt_days: Annotated[
            float, Query(gt=0, le=36500, description="Keep patients with a lesion's VDT under this, days.")
        ] = 400.0,
        as_of: Annotated[date | None, Query(description="Follow-ups due before this date are overdue; today.")] = None,
    ) -> Page[WorklistItemOut]:
        """Patients who need attention, most urgent first (needs worklist:read or reports:read).

        Not counted: ``total`` is null; ``next_offset`` is set while more patients follow."""
        page = records.worklist_page(
            session,
            records.Paging(limit, offset),
            model=model or _settings(request).detector,
            today=as_of or date.today(),
            min_category=min_category,
            vdt_days=vdt_days,
        )
        _rows(request, len(page.items))
        return page

    # --- operations -----------------------------------------------------------------------------------------

    @app.get("/runs", tags=["operations"], dependencies=[reports_read])
    def runs(
        request: Request,
        session: Session_,
        limit: Limit = 50,
        offset: Offset = 0,
        status: Annotated[RunStatus | None, Query()] = None,
        source: Annotated[str | None, Query(max_length=1024, description="The archive URL, exactly.")] = None,
        started_from: Annotated[datetime | None, Query(description="Earliest start, ISO 8601.")] = None,
        started_to: Annotated[datetime | None, Query(description="Latest start, ISO 8601.")] = None,
    ) -> Page[RunOut]:
        """Scan runs, newest first."""
        page = records.list_runs(
            session,
            records.Paging(limit, offset),
            status=status,
            source=source,
            started_from=started_from,
            started_to=started_to,
        )
        _rows(request, len(page.items))
        return page

    @app.get("/runs/{run_id}", tags=["operations"], dependencies=[reports_read])
    def run(request: Request, session: Session_, run_id: int) -> RunOut:
        """One scan run."""
        result = records.run_detail(session, run_id)
        if result is None:
            raise HTTPException(404, f"no scan run has id {run_id}")
        _rows(request, 1)
        return result

    @app.get("/models", tags=["operations"], dependencies=[reports_read])
    def models(
        request: Request, name: Annotated[str | None, Query(max_length=128, description="A model name.")] = None
    ) -> list[ModelOut]:
        """The registered models with their weights hash and measured metrics."""
        result = records.list_models(name)
        _rows(request, len(result))
        return result

    @app.get("/audit", tags=["operations"], dependencies=[Depends(require(Scope.AUDIT_READ))])
    def audit_trail(
        request: Request,
        session: Session_,
        limit: Limit = 50,
        offset: Offset = 0,
        token_name: Annotated[str | None, Query(max_length=128)] = None,
        route: Annotated[str | None, Query(max_length=256, description="A route template, e.g. /worklist.")] = None,
        status_code: Annotated[int | None, Query(ge=100, le=599)] = None,
        at_from: Annotated[datetime | None, Query(description="Earliest request time, ISO 8601.")] = None,
        at_to: Annotated[datetime | None, Query(description="Latest request time, ISO 8601.")] = None,
    ) -> Page[AuditOut]:
        """The API's own audit trail, newest first (needs audit:read)."""
        page = records.list_audit(
            session,
            records.Paging(limit, offset),
            token_name=token_name,
            route=route,
            status_code=status_code,
            at_from=at_from,
            at_to=at_to,
        )
        _rows(request, len(page.items))
        return page
