"""Bearer tokens of the read API: created once, stored only as their sha256, each with a set of scopes.

A token is shown to its owner once, when it is created; the database keeps its sha256 (a token is
32 random bytes, so a plain hash is enough: there is nothing to guess). A revoked token stays in the
table, so the audit rows that name it keep their meaning.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import ApiToken, utcnow
from nightscan.enums import to_enum

log = logging.getLogger(__name__)

TOKEN_PREFIX = "nst_"  # noqa: S105 (a prefix, not a secret)
"""Every token starts with this, so a leaked one is easy to recognise (secret scanners, logs)."""


class Scope(StrEnum):
    """What a token may read.

    ``reports:read`` covers every report (patients, timelines, studies, findings, the worklist, runs,
    models); ``worklist:read`` the worklist only; ``audit:read`` the audit trail of the API itself, which
    ``reports:read`` does not include (who read what is not a report).
    """

    REPORTS_READ = "reports:read"
    WORKLIST_READ = "worklist:read"
    AUDIT_READ = "audit:read"


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """A token as the API and the CLI see it: never the token itself."""

    id: int
    name: str
    scopes: frozenset[Scope]
    created_at: datetime
    revoked_at: datetime | None

    def allows(self, scope: Scope) -> bool:
        """True when the token carries ``scope``; ``reports:read`` also allows ``worklist:read``."""
        if scope in self.scopes:
            return True
        return scope is Scope.WORKLIST_READ and Scope.REPORTS_READ in self.scopes


def token_sha256(token: str) -> str:
    """The hex sha256 of a token's UTF-8 bytes: what the database stores."""
    return hashlib.sha256(token.encode()).hexdigest()


def _info(row: ApiToken) -> TokenInfo:
    return TokenInfo(
        id=row.id,
        name=row.name,
        scopes=frozenset(Scope(s) for s in row.scopes),
        created_at=row.created_at,
        revoked_at=row.revoked_at,
    )


def create_token(session: Session, name: str, scopes: Iterable[Scope | str]) -> tuple[str, TokenInfo]:
    """Create a token named ``name`` with ``scopes``; returns the token (show it once) and its record.

    Raises ValueError for an empty name, no scope or an unknown scope (naming it).
    """
    name = name.strip()
    if not name or len(name) > 128:
        raise ValueError(f"name must be 1 to 128 characters, got {name!r}")
    wanted = sorted({to_enum(Scope, s, "scope") for s in scopes})
    if not wanted:
        raise ValueError(f"a token needs at least one scope: one of {', '.join(s.value for s in Scope)}")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(name=name, token_sha256=token_sha256(token), scopes=[s.value for s in wanted], created_at=utcnow())
    session.add(row)
    session.flush()
    log.info("API token %d (%s) created with scopes %s", row.id, name, ", ".join(row.scopes))
    return token, _info(row)


def authenticate(session: Session, token: str) -> TokenInfo | None:
    """The record of an active token, or None when the token is unknown or revoked."""
    row = session.scalar(select(ApiToken).where(ApiToken.token_sha256 == token_sha256(token)))
    if row is None or row.revoked_at is not None:
        return None
    return _info(row)


def list_tokens(session: Session, *, include_revoked: bool = False) -> list[TokenInfo]:
    """Every token, oldest first; revoked ones only with ``include_revoked``."""
    query = select(ApiToken).order_by(ApiToken.id)
    if not include_revoked:
        query = query.where(ApiToken.revoked_at.is_(None))
    return [_info(row) for row in session.scalars(query)]


def revoke_token(session: Session, token_id: int) -> TokenInfo:
    """Revoke token ``token_id`` (again revoking a revoked one changes nothing); LookupError if it does not exist."""
    row = session.get(ApiToken, token_id)
    if row is None:
        raise LookupError(f"no API token has id {token_id}")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        log.info("API token %d (%s) revoked", row.id, row.name)
    return _info(row)
