"""``nightscan api``: serve the read API (uvicorn), and manage its bearer tokens (create, list, revoke)."""

from __future__ import annotations

import json
import logging

import click

from nightscan.settings import Settings

log = logging.getLogger("nightscan.api")

SCOPES = ("reports:read", "worklist:read", "audit:read")
"""The values of reports.tokens.Scope (not imported here: the CLI imports the reports package in commands)."""


@click.group("api", invoke_without_command=True)
@click.option("--host", default=None, help="Address to listen on (default: NIGHTSCAN_API_HOST, 127.0.0.1).")
@click.option("--port", type=click.IntRange(1, 65535), default=None, help="Port (default: NIGHTSCAN_API_PORT, 8765).")
@click.pass_context
def api(ctx: click.Context, host: str | None, port: int | None) -> None:
    """Serve the read API; `nightscan api token ...` manages its tokens.

    uvicorn's access log stays off: it would log raw paths, which may hold a PatientID. Each request is
    logged and recorded in api_audit by its route template instead.
    """
    if ctx.invoked_subcommand is not None:
        return
    import uvicorn

    from reports.api import create_app

    settings: Settings = ctx.obj
    host = host or settings.api_host
    port = port or settings.api_port
    log.info("read API on http://%s:%d (OpenAPI schema at /openapi.json)", host, port)
    uvicorn.run(create_app(settings), host=host, port=port, access_log=False, log_config=None)


@api.group("token")
def token() -> None:
    """Bearer tokens of the read API (stored as sha256 only)."""


@token.command("create")
@click.argument("name")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    required=True,
    type=click.Choice(SCOPES),
    help="What the token may read (repeatable): reports:read (every report), worklist:read, audit:read.",
)
@click.pass_obj
def token_create(settings: Settings, name: str, scopes: tuple[str, ...]) -> None:
    """Create a token NAME and print it, once: only its sha256 is kept."""
    from db.engine import transaction
    from nightscan.runtime import session_factory
    from reports.tokens import create_token

    with transaction(session_factory(settings)) as session:
        secret, info = create_token(session, name, scopes)
    click.echo(secret)
    click.echo(f"token {info.id} ({info.name}): {', '.join(sorted(s.value for s in info.scopes))}", err=True)
    click.echo("store it now: it is not shown again", err=True)


@token.command("list")
@click.option("--all", "include_revoked", is_flag=True, help="Include revoked tokens.")
@click.option("--json", "as_json", is_flag=True, help="JSON instead of a table.")
@click.pass_obj
def token_list(settings: Settings, include_revoked: bool, as_json: bool) -> None:
    """List tokens: id, name, scopes, created, revoked (never the token)."""
    from rich.console import Console
    from rich.table import Table

    from nightscan.runtime import session_factory
    from reports.tokens import list_tokens

    with session_factory(settings)() as session:
        tokens = list_tokens(session, include_revoked=include_revoked)
    if as_json:
        rows = [
            {
                "id": t.id,
                "name": t.name,
                "scopes": sorted(s.value for s in t.scopes),
                "created_at": t.created_at.isoformat(),
                "revoked_at": t.revoked_at.isoformat() if t.revoked_at else None,
            }
            for t in tokens
        ]
        click.echo(json.dumps(rows, indent=2))
        return
    table = Table(title="API tokens")
    for column in ("id", "name", "scopes", "created", "revoked"):
        table.add_column(column)
    for t in tokens:
        table.add_row(
            str(t.id),
            t.name,
            ", ".join(sorted(s.value for s in t.scopes)),
            f"{t.created_at:%Y-%m-%d %H:%M}",
            f"{t.revoked_at:%Y-%m-%d %H:%M}" if t.revoked_at else "",
        )
    Console().print(table)


@token.command("revoke")
@click.argument("token_id", type=int)
@click.pass_obj
def token_revoke(settings: Settings, token_id: int) -> None:
    """Revoke token TOKEN_ID: requests with it get 401 from now on."""
    from db.engine import transaction
    from nightscan.runtime import session_factory
    from reports.tokens import revoke_token

    try:
        with transaction(session_factory(settings)) as session:
            info = revoke_token(session, token_id)
    except LookupError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"token {info.id} ({info.name}) revoked at {info.revoked_at:%Y-%m-%d %H:%M:%S %Z}")
