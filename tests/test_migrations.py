"""The Alembic migrations build exactly the schema the SQLAlchemy models declare, on both databases."""

from __future__ import annotations

import subprocess
import sys

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from db.models import Base


def _differences(url: str) -> list[object]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            return list(compare_metadata(context, Base.metadata))
    finally:
        engine.dispose()


def test_postgres_schema_matches_models(postgres_url: str) -> None:
    assert _differences(postgres_url) == []


def test_sqlite_schema_matches_models(sqlite_url: str) -> None:
    assert _differences(sqlite_url) == []


def test_cli_db_upgrade_creates_every_table(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    subprocess.run(
        [sys.executable, "-m", "nightscan.cli", "db", "upgrade"],
        env={"NIGHTSCAN_DATABASE_URL": url, "PATH": ""},
        check=True,
        capture_output=True,
    )
    engine = create_engine(url)
    tables = set(inspect(engine).get_table_names())
    engine.dispose()
    assert set(Base.metadata.tables) <= tables
