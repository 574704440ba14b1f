"""Alembic revisions up and down on the test's database kind, and in step with the models."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url

from app.db import Base, make_engine
from app.migrate import downgrade, upgrade


@pytest.fixture
def scratch_url(database_url: str, tmp_path: Path) -> Iterator[str]:
    """An empty database of the same kind as the suite's."""
    if database_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'migrations.db'}"
        return
    admin = create_engine(database_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text("DROP DATABASE IF EXISTS roamsign_migrations"))
        connection.execute(text("CREATE DATABASE roamsign_migrations"))
    yield (
        make_url(database_url)
        .set(database="roamsign_migrations")
        .render_as_string(hide_password=False)
    )
    with admin.connect() as connection:
        connection.execute(text("DROP DATABASE IF EXISTS roamsign_migrations WITH (FORCE)"))
    admin.dispose()


def tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def test_upgrade_downgrade_upgrade(scratch_url: str) -> None:
    upgrade(scratch_url)
    assert tables(scratch_url) == set(Base.metadata.tables)
    downgrade(scratch_url, "base")
    assert tables(scratch_url) == set()
    upgrade(scratch_url)
    assert tables(scratch_url) == set(Base.metadata.tables)


def test_migrations_match_the_models(scratch_url: str) -> None:
    upgrade(scratch_url)
    engine = make_engine(scratch_url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            differences = compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()
    assert differences == [], "the models changed without a migration: add an Alembic revision"
