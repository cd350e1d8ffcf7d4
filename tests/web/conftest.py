"""The web tests' stores: a SQLite file, or a PostgreSQL schema of its own."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh store: a SQLite file, or a PostgreSQL schema of its own."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'cinema.db'}"
    base = request.getfixturevalue("postgres_url")
    schema = request.getfixturevalue("pg_schema")
    return f"{base}?schema={schema}"
