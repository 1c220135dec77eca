"""The read API against real databases (PostgreSQL, and SQLite) with real tokens: auth, scopes, filters,
pagination, audit, the OpenAPI schema; and once through a real uvicorn server started by `nightscan api`."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, select

from db.engine import make_engine, make_sessionmaker, transaction
from db.models import ApiAudit
from models.registry import list_entries
from nightscan.settings import Settings
from reports.api import create_app
from reports.tokens import Scope, create_token, revoke_token
from tests.conftest import ROOT, free_port, settings_env, wait_for_port
from tests.reports_seed import MODEL, OTHER_MODEL, PATIENT_IDS, SECRET, TODAY, Seeded, seed

INJECTION = "' OR 1=1 --"
INJECTIONS = (INJECTION, "x' OR 'a'='a", '" OR ""="', "1; DROP TABLE findings; --", "%' OR '%'='")


class Api:
    """A TestClient on the app, with the seeded data and tokens of each scope."""

    def __init__(self, url: str, tmp_path: Path) -> None:
        self.url = url
        self.seeded: Seeded = seed(url)
        self.engine = make_engine(url)
        self.factory = make_sessionmaker(self.engine)
        self.settings = Settings(database_url=url, pseudonym_key=SECRET, data_dir=tmp_path)
        self.tokens: dict[str, str] = {}
        with transaction(self.factory) as session:
            for name, scopes in (
                ("reader", [Scope.REPORTS_READ]),
                ("worklist", [Scope.WORKLIST_READ]),
                ("auditor", [Scope.AUDIT_READ]),
                ("revoked", [Scope.REPORTS_READ, Scope.AUDIT_READ]),
            ):
                self.tokens[name], info = create_token(session, name, scopes)
                if name == "revoked":
                    revoke_token(session, info.id)
        self.client = TestClient(create_app(self.settings, self.factory))

    def get(self, path: str, who: str | None = "reader", **params: object) -> httpx.Response:
        """GET ``path`` with the token of ``who`` (None: no token) and query ``params``."""
        headers = {"Authorization": f"Bearer {self.tokens[who]}"} if who else {}
        return self.client.get(path, headers=headers, params=params)

    def ok(self, path: str, who: str = "reader", **params: object) -> dict:
        response = self.get(path, who, **params)
        assert response.status_code == 200, response.text
        return response.json()

    def audit(self) -> list[ApiAudit]:
        with self.factory() as session:
            return list(session.scalars(select(ApiAudit).order_by(ApiAudit.id)))


@pytest.fixture(params=["postgres", "sqlite"])
def api(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Api]:
    url = request.getfixturevalue("postgres_url" if request.param == "postgres" else "sqlite_url")
    a = Api(url, tmp_path)
    yield a
    a.client.close()
    a.engine.dispose()


@pytest.fixture
def pg_api(postgres_url: str, tmp_path: Path) -> Iterator[Api]:
    a = Api(postgres_url, tmp_path)
    yield a
    a.client.close()
    a.engine.dispose()


def patient_path(pid: str, tail: str = "") -> str:
    return f"/patients/{quote(pid, safe='')}{tail}"


READ_ROUTES = (
    patient_path("PAT-0001"),
    patient_path("PAT-0001", "/timeline"),
    patient_path("PAT-0001", "/studies"),
    "/studies",
    "/findings",
    "/runs",
    "/models",
    "/worklist",
    "/audit",
)


# --- authentication and scopes --------------------------------------------------------------------------


@pytest.mark.parametrize("route", READ_ROUTES)
def test_no_token_unknown_token_or_revoked_token_is_401(pg_api: Api, route: str) -> None:
    assert pg_api.get(route, who=None).status_code == 401
    assert pg_api.get(route, who=None).headers["www-authenticate"] == "Bearer"
    bad = pg_api.client.get(route, headers={"Authorization": "Bearer nst_not-a-token"})
    assert bad.status_code == 401
    assert pg_api.client.get(route, headers={"Authorization": "Basic dXNlcjpwYXNz"}).status_code == 401
    assert pg_api.get(route, who="revoked").status_code == 401


@pytest.mark.parametrize("route", [r for r in READ_ROUTES if r not in ("/worklist", "/audit")])
def test_worklist_and_audit_scopes_cannot_read_reports(pg_api: Api, route: str) -> None:
    assert pg_api.get(route, who="worklist").status_code == 403
    assert pg_api.get(route, who="auditor").status_code == 403
    assert pg_api.get(route, who="reader").status_code == 200


def test_each_scope_reaches_its_routes(pg_api: Api) -> None:
    assert pg_api.get("/worklist", who="worklist").status_code == 200
    assert pg_api.get("/worklist", who="reader").status_code == 200  # reports:read includes the worklist
    assert pg_api.get("/worklist", who="auditor").status_code == 403
    assert pg_api.get("/audit", who="auditor").status_code == 200
    response = pg_api.get("/audit", who="reader")  # the audit trail is not a report
    assert response.status_code == 403
    assert "audit:read" in response.json()["detail"]


def test_every_route_only_reads(pg_api: Api) -> None:
    methods = set()
    for route in pg_api.client.app.routes:
        methods |= getattr(route, "methods", set())
    assert methods <= {"GET", "HEAD"}
    assert (
        pg_api.client.post("/findings", headers={"Authorization": f"Bearer {pg_api.tokens['reader']}"}).status_code
        == 405
    )


# --- content ----------------------------------------------------------------------------------------------


def test_patient_by_real_id_and_by_pseudonym(api: Api) -> None:
    for pid in PATIENT_IDS:
        key = api.seeded.keys[pid]
        body = api.ok(patient_path(pid))
        assert body["patient_key"] == key
        assert body["n_studies"] == 2
        assert [s["model"] for s in body["status"]] == [MODEL]
        assert api.ok(f"/pseudonyms/{key}") == body
    assert api.get(patient_path("PAT-9999")).status_code == 404
    assert api.get(patient_path(" ")).status_code == 422  # an empty PatientID cannot be hashed


def test_timeline(api: Api) -> None:
    body = api.ok(patient_path("PAT-0001", "/timeline"))
    assert body["model"] == MODEL  # the latest model that analysed the patient
    assert [s["lungrads"] for s in body["studies"]] == ["2", "4A"]
    assert [s["study_date"] for s in body["studies"]] == ["2025-05-01", "2026-05-01"]
    assert body["risk"]["lungrads"] == "4A"
    (lesion,) = body["lesions"]
    assert lesion["label"] == "L1"
    assert [p["diameter_mm"] for p in lesion["points"]] == [6.0, 9.5]
    key = api.seeded.keys["PAT-0001"]
    assert api.ok(f"/pseudonyms/{key}/timeline") == body
    other = api.ok(patient_path("PAT-0001", "/timeline"), model=OTHER_MODEL)
    assert other["lesions"] == [] and other["risk"] is None
    assert api.ok(patient_path("PAT-0002", "/timeline"))["lesions"][1]["label"] == "L2"


def test_worklist_is_exactly_the_patients_that_need_attention(api: Api) -> None:
    body = api.ok("/worklist", who="worklist", as_of=TODAY.isoformat())
    keys = [item["patient_key"] for item in body["items"]]
    assert keys == [api.seeded.keys["PAT-0001"], api.seeded.keys["O'Brien/77"]]  # 4A first, then overdue
    assert body["items"][0]["reasons"][0] == "Lung-RADS 4A"
    # a day before O'Brien/77's follow-up fell due, only PAT-0001 is left
    early = api.ok("/worklist", as_of=date(2026, 9, 30).isoformat())
    assert [i["patient_key"] for i in early["items"]] == [api.seeded.keys["PAT-0001"]]
    assert api.ok("/worklist", model=OTHER_MODEL, as_of=TODAY.isoformat())["items"] == []
    assert api.get("/worklist", min_category="5").status_code == 422


def test_study_and_its_findings(api: Api) -> None:
    uid = api.seeded.studies[("PAT-0002", 1)]
    study = api.ok(f"/studies/{uid}")
    assert study["series"][0]["n_slices"] == 3
    assert [a["model"] for a in study["analyses"]] == [MODEL]
    findings = api.ok(f"/studies/{uid}/findings")
    assert [(f["lesion"], f["diameter_mm"]) for f in findings["items"]] == [("L1", 4.1), ("L2", 3.0)]
    first = api.seeded.studies[("PAT-0002", 0)]
    assert len(api.ok(f"/studies/{first}/findings")["items"]) == 3  # both models
    assert len(api.ok(f"/studies/{first}/findings", model=OTHER_MODEL)["items"]) == 1
    analysis = api.seeded.analyses[("PAT-0002", 1)]
    assert api.ok(f"/analyses/{analysis}/findings")["items"] == findings["items"]
    assert api.get("/studies/1.2.3.404").status_code == 404


def test_filters(api: Api) -> None:
    assert api.ok("/findings")["total"] == 8 + 3  # 8 tracked findings, 3 of the other model
    assert api.ok("/findings", model=OTHER_MODEL)["total"] == 3
    assert api.ok("/findings", nodule_type="solid")["total"] == 11
    assert api.ok("/findings", nodule_type="ground-glass")["total"] == 0
    assert api.ok("/findings", min_diameter_mm=5.0, max_diameter_mm=7.0)["total"] == 3  # 6.0, 5.0, 5.2
    assert api.ok("/findings", date_from="2026-01-01")["total"] == 4
    assert api.ok("/findings", date_from="2025-06-01", date_to="2025-07-01")["total"] == 3 + 2
    assert api.ok("/findings", lesion_status="present")["total"] == 8
    assert api.ok("/studies", date_from="2026-01-01")["total"] == 3
    assert api.ok("/studies", model=OTHER_MODEL)["total"] == 3
    assert api.ok("/studies", status="done")["total"] == 6
    assert api.ok("/studies", status="failed")["total"] == 0
    assert api.ok("/runs")["total"] == 2
    assert api.ok("/runs", status="finished", source="file:///archive")["total"] == 2
    assert api.ok("/runs", started_from="2026-11-25T00:00:00Z")["total"] == 1
    assert len(api.ok("/models")) >= 1
    classifiers = [e.ref for e in list_entries() if e.name == "nodule-classifier"]
    assert "nodule-classifier@0.1.0" in classifiers
    assert [m["ref"] for m in api.ok("/models", name="nodule-classifier")] == classifiers
    assert api.get("/findings", nodule_type="blob").status_code == 422
    assert api.get("/studies", date_from="yesterday").status_code == 422


STRING_FILTERS = (
    ("/findings", "model"),
    ("/findings", "label"),
    ("/studies", "model"),
    ("/runs", "source"),
    ("/worklist", "model"),
    (patient_path("PAT-0001", "/timeline"), "model"),
    (patient_path("PAT-0001", "/studies"), "model"),
    ("/models", "name"),
)
ENUM_FILTERS = (
    ("/findings", "nodule_type"),
    ("/findings", "lesion_status"),
    ("/studies", "status"),
    ("/runs", "status"),
    ("/worklist", "min_category"),
)


@pytest.mark.parametrize("value", INJECTIONS)
def test_injection_attempts_return_nothing_extra(api: Api, value: str) -> None:
    for route, name in STRING_FILTERS:
        response = api.get(route, who="reader", **{name: value})
        if route.endswith("/timeline"):
            body = response.json()
            assert body["lesions"] == [] and body["risk"] is None, (route, name)
            assert all(s["analysis_id"] is None for s in body["studies"]), (route, name)
            continue
        assert response.status_code == 200, (route, name, response.text)
        body = response.json()
        items = body if isinstance(body, list) else body["items"]
        assert items == [], (route, name)
    for route, name in ENUM_FILTERS:
        assert api.get(route, **{name: value}).status_code == 422, (route, name)
    audit_route = api.get("/audit", who="auditor", token_name=value, route=value)
    assert audit_route.status_code == 200 and audit_route.json()["items"] == []
    for path in (patient_path(value), patient_path(value, "/timeline"), f"/pseudonyms/{quote(value, safe='')}"):
        assert api.get(path).status_code == 404, path
    assert api.get(f"/studies/{quote(value, safe='')}").status_code == 404
    # the tables are still whole
    assert api.ok("/findings")["total"] == 11


def test_pagination(api: Api) -> None:
    whole = api.ok("/findings", limit=500)["items"]
    assert len(whole) == 11
    seen = []
    offset: int | None = 0
    pages = 0
    while offset is not None:
        page = api.ok("/findings", limit=4, offset=offset)
        assert page["limit"] == 4 and page["offset"] == offset and page["total"] == 11
        seen += page["items"]
        offset = page["next_offset"]
        pages += 1
    assert pages == 3 and seen == whole
    assert api.ok("/findings", offset=11)["items"] == []
    worklist = api.ok("/worklist", limit=1, as_of=TODAY.isoformat())
    assert len(worklist["items"]) == 1 and worklist["next_offset"] == 1 and worklist["total"] is None
    last = api.ok("/worklist", limit=1, offset=1, as_of=TODAY.isoformat())
    assert len(last["items"]) == 1 and last["next_offset"] is None
    for bad in ({"limit": 0}, {"limit": 501}, {"offset": -1}, {"offset": 1_000_001}, {"limit": "many"}):
        assert api.get("/findings", **bad).status_code == 422, bad


# --- audit and the schema ---------------------------------------------------------------------------------


def test_every_request_is_audited_without_the_patient_id(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    api.get(patient_path("O'Brien/77", "/timeline"))
    api.get(patient_path("PAT-0001"), who="worklist")
    api.get(patient_path("PAT-0002"), who=None)
    api.get("/findings", limit=2)
    api.get("/no/such/PAT-0002/route")
    rows = api.audit()
    got = [(r.token_name, r.method, r.route, r.status_code, r.rows) for r in rows]
    assert got == [
        ("reader", "GET", "/patients/{patient_id}/timeline", 200, 2 + 1),
        ("worklist", "GET", "/patients/{patient_id}", 403, None),
        (None, "GET", "/patients/{patient_id}", 401, None),
        ("reader", "GET", "/findings", 200, 2),
        (None, "GET", "<unmatched>", 404, None),
    ]
    assert all(r.duration_ms >= 0 and r.at is not None for r in rows)
    # what the server side logged (the test's own HTTP client, httpx, logs the URLs it requested)
    server_log = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("httpx"))
    dumped = json.dumps([[str(getattr(r, c.name)) for c in ApiAudit.__table__.columns] for r in rows])
    for pid in PATIENT_IDS:
        assert pid not in dumped
        assert pid not in server_log
        assert quote(pid, safe="") not in server_log
    assert "api GET /patients/{patient_id}/timeline -> 200" in server_log
    trail = api.ok("/audit", who="auditor", route="/findings")
    assert [i["rows"] for i in trail["items"]] == [2]


def test_openapi_schema_is_served(api: Api) -> None:
    response = api.client.get("/openapi.json")
    assert response.status_code == 200
    schema = response.json()
    assert {"/patients/{patient_id}/timeline", "/worklist", "/findings", "/runs", "/models", "/audit"} <= set(
        schema["paths"]
    )
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    limit = next(p for p in schema["paths"]["/findings"]["get"]["parameters"] if p["name"] == "limit")
    assert limit["schema"]["maximum"] == 500
    assert api.client.get("/docs").status_code == 200
    assert api.client.get("/health").json() == {"status": "ok"}


# --- a real server ----------------------------------------------------------------------------------------


def test_real_server_started_by_the_cli(postgres_url: str, tmp_path: Path) -> None:
    seeded = seed(postgres_url)
    port = free_port()
    settings = Settings(database_url=postgres_url, pseudonym_key=SECRET, data_dir=tmp_path, api_port=port)
    env = settings_env(settings)
    created = subprocess.run(
        [sys.executable, "-m", "nightscan.cli", "api", "token", "create", "nurse", "--scope", "worklist:read"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    token = created.stdout.strip()
    assert token.startswith("nst_") and token not in created.stderr
    listed = subprocess.run(
        [sys.executable, "-m", "nightscan.cli", "api", "token", "list", "--json"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    (entry,) = json.loads(listed.stdout)
    assert entry["name"] == "nurse" and entry["scopes"] == ["worklist:read"] and token not in listed.stdout
    log_path = tmp_path / "api.log"
    with log_path.open("wb") as log_file:
        server = subprocess.Popen(
            [sys.executable, "-m", "nightscan.cli", "api", "--host", "127.0.0.1"],
            env=env,
            cwd=ROOT,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        assert wait_for_port("127.0.0.1", port, 30), log_path.read_text()
        base = f"http://127.0.0.1:{port}"
        headers = {"Authorization": f"Bearer {token}"}
        worklist = httpx.get(f"{base}/worklist", params={"as_of": TODAY.isoformat()}, headers=headers, timeout=10)
        assert worklist.status_code == 200
        assert [i["patient_key"] for i in worklist.json()["items"]] == [
            seeded.keys["PAT-0001"],
            seeded.keys["O'Brien/77"],
        ]
        assert httpx.get(f"{base}/worklist", timeout=10).status_code == 401
        assert httpx.get(f"{base}{patient_path('PAT-0001')}", headers=headers, timeout=10).status_code == 403
        assert httpx.get(f"{base}/openapi.json", timeout=10).json()["info"]["title"] == "nightscan reports"
        revoked = subprocess.run(
            [sys.executable, "-m", "nightscan.cli", "api", "token", "revoke", str(entry["id"])],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        assert "revoked" in revoked.stdout
        assert httpx.get(f"{base}/worklist", headers=headers, timeout=10).status_code == 401
    finally:
        server.terminate()
        server.wait(timeout=30)
    log_text = log_path.read_text()
    assert "api GET /worklist -> 200" in log_text
    assert "PAT-0001" not in log_text and token not in log_text
    engine = create_engine(postgres_url)
    with engine.connect() as conn:
        routes = [tuple(r) for r in conn.execute(select(ApiAudit.route, ApiAudit.status_code).order_by(ApiAudit.id))]
    engine.dispose()
    assert routes[:3] == [("/worklist", 200), ("/worklist", 401), ("/patients/{patient_id}", 403)]


def test_request_sessions_are_read_only_on_postgres(pg_api: Api) -> None:
    from types import SimpleNamespace

    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    from reports.api import read_session

    sessions = read_session(SimpleNamespace(app=pg_api.client.app))  # type: ignore[arg-type]
    session = next(sessions)
    with pytest.raises(DBAPIError, match="read-only transaction"):
        session.execute(text("DELETE FROM findings"))
    sessions.close()
    assert pg_api.ok("/findings")["total"] == 11
