"""Fixtures for tests that need a real PostgreSQL server.

``TIDINGS_TEST_POSTGRES`` names the server (default: the local one, ``postgres`` user, database
``test``). When it cannot be reached the tests that need it are skipped, with the reason, on a
developer's machine, and fail in CI (``CI=true``), where PostgreSQL must be running.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import pytest

POSTGRES_URL = os.environ.get("TIDINGS_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"PostgreSQL is required in CI: {reason}")
    pytest.skip(f"PostgreSQL tests skipped: {reason}")


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The test server's URL, once it answers."""
    try:
        import psycopg
    except ImportError:
        _unavailable("psycopg is not installed (pip install -e '.[dev]')")
        raise
    try:
        with psycopg.connect(POSTGRES_URL, connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        _unavailable(f"cannot connect to {POSTGRES_URL} (set TIDINGS_TEST_POSTGRES): {exc}")
    return POSTGRES_URL


@pytest.fixture
def pg_schemas(postgres_url: str) -> Iterator[Callable[[], str]]:
    """``pg_schemas()``: a new schema name no other test uses, at each call (two services, two
    schemas); every one is dropped after the test."""
    import psycopg

    names: list[str] = []

    def make() -> str:
        names.append(f"test_{uuid.uuid4().hex[:16]}")
        return names[-1]

    yield make
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        for name in names:
            conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


@pytest.fixture
def pg_schema(pg_schemas: Callable[[], str]) -> str:
    """A schema name no other test uses; the schema is dropped after the test."""
    return pg_schemas()
