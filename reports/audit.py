"""The audit trail of the read API: one row and one log line per request, naming the token, never a patient.

A request is recorded by its route template (``/patients/{patient_id}``), never by its raw path, which
may hold a real PatientID; the log line carries the same fields as the row.
"""

from __future__ import annotations

import logging

from sqlalchemy.orm import Session, sessionmaker

from db.engine import transaction
from db.models import ApiAudit, utcnow
from reports.tokens import TokenInfo

log = logging.getLogger(__name__)

UNMATCHED_ROUTE = "<unmatched>"
"""What is recorded for a request that matched no route (its raw path is not recorded)."""


def record_request(
    factory: sessionmaker[Session],
    *,
    token: TokenInfo | None,
    method: str,
    route: str,
    status_code: int,
    rows: int | None,
    duration_ms: float,
) -> int:
    """Write one audit row and log it; returns the row's id. ``duration_ms`` in milliseconds."""
    with transaction(factory) as session:
        row = ApiAudit(
            token_id=token.id if token else None,
            token_name=token.name if token else None,
            method=method[:8],
            route=route[:256],
            status_code=status_code,
            rows=rows,
            duration_ms=duration_ms,
            at=utcnow(),
        )
        session.add(row)
        session.flush()
        audit_id = row.id
    log.info(
        "api %s %s -> %d, %s rows, %.1f ms, token %s (audit %d)",
        method,
        route,
        status_code,
        "no" if rows is None else rows,
        duration_ms,
        f"{token.id} ({token.name})" if token else "none",
        audit_id,
    )
    return audit_id
