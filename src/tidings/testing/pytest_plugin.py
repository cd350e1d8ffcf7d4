"""The pytest plugin (registered as ``tidings`` under ``pytest11``): fixtures that run an App.

Each fixture is a function of your App (the module-level one of production code): it runs the
App on a test store for the test and gives its own store back afterwards.

- ``tidings_harness(app)`` — the :class:`~tidings.testing.Harness`: memory store, manual clock;
- ``tidings_sqlite(app)`` — a SQLite file in the test's temporary directory;
- ``tidings_postgres(app)`` — a PostgreSQL schema made for the test and dropped after it
  (server: ``TIDINGS_TEST_POSTGRES``, default ``postgresql://postgres@127.0.0.1:5432/test``;
  skipped when it cannot be reached, failed when ``CI=true``);
- ``tidings_given`` — :func:`~tidings.testing.given`, the given/when/then of deciders.

An ``async def`` test that asks for one of them is run by pytest-asyncio without a marker
or ``asyncio_mode = "auto"``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tidings.app import App
from tidings.backends import open_store
from tidings.store import Store
from tidings.testing import Harness, given

POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
ASYNC_FIXTURES = frozenset(("tidings_harness", "tidings_sqlite", "tidings_postgres"))

try:
    import pytest_asyncio
except ImportError:  # pragma: no cover - depends on what is installed
    pytest_asyncio = None  # type: ignore[assignment]


@pytest.hookimpl(hookwrapper=True, trylast=True)
def pytest_pycollect_makeitem(collector: Any, name: str, obj: object) -> Generator[None, Any, None]:
    """Mark ``async def`` tests that use tidings' fixtures for pytest-asyncio (in its strict
    mode too), before it decides which tests are its own."""
    outcome = yield
    found = outcome.get_result()
    items = found if isinstance(found, list) else [found]
    for item in items:
        if (
            isinstance(item, pytest.Function)
            and ASYNC_FIXTURES.intersection(item.fixturenames)
            and item.get_closest_marker("asyncio") is None
        ):
            item.add_marker("asyncio")


class _Runs:
    """The Apps a fixture moved to a test store, given their own store back at teardown."""

    def __init__(self) -> None:
        self.runs: list[tuple[App, Store]] = []

    def move(self, app: App, store: Store) -> App:
        self.runs.append((app, app.store))
        app.store = store
        return app

    async def undo(self) -> None:
        while self.runs:
            app, own = self.runs.pop()
            await app.close()
            app.store = own


def _async_fixture(fn: Callable[..., Any]) -> Any:
    if pytest_asyncio is None:  # pragma: no cover - depends on what is installed

        def missing(*args: object, **kwargs: object) -> None:
            pytest.fail(f"{fn.__name__} needs pytest-asyncio: pip install pytest-asyncio")

        missing.__name__ = fn.__name__
        return pytest.fixture(missing)
    return pytest_asyncio.fixture(fn)


@_async_fixture
async def tidings_harness() -> AsyncIterator[Callable[[App], Harness]]:
    """``tidings_harness(app)``: ``app`` on a :class:`Harness` (memory store, manual clock)."""
    harnesses: list[Harness] = []

    def run(app: App) -> Harness:
        harnesses.append(Harness().run(app))
        return harnesses[-1]

    yield run
    for harness in reversed(harnesses):
        await harness.__aexit__()


@_async_fixture
async def tidings_sqlite(tmp_path: Path) -> AsyncIterator[Callable[[App], App]]:
    """``tidings_sqlite(app)``: ``app`` on a new SQLite file in the test's temporary directory."""
    runs = _Runs()
    files = iter(range(1_000_000))
    yield lambda app: runs.move(app, open_store(f"sqlite:///{tmp_path / f'{next(files)}.db'}"))
    await runs.undo()


@pytest.fixture
def tidings_postgres_schema() -> Iterator[tuple[str, str]]:
    """A PostgreSQL server's URL and a schema name for this test only (dropped after it)."""
    try:
        import psycopg
        from psycopg import sql
    except ImportError:
        _unavailable("psycopg is not installed (pip install 'tidings[postgres]')")
        raise
    url = os.environ.get("TIDINGS_TEST_POSTGRES", POSTGRES_URL)
    try:
        with psycopg.connect(url, connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        _unavailable(f"cannot connect to {url} (set TIDINGS_TEST_POSTGRES): {exc}")
    schema = f"test_{uuid.uuid4().hex[:16]}"
    yield url, schema
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@_async_fixture
async def tidings_postgres(
    tidings_postgres_schema: tuple[str, str],
) -> AsyncIterator[Callable[[App], App]]:
    """``tidings_postgres(app)``: ``app`` on a PostgreSQL schema of its own, dropped after."""
    from tidings.backends.postgres import PostgresStore

    url, schema = tidings_postgres_schema
    runs = _Runs()
    yield lambda app: runs.move(app, PostgresStore(url, schema=schema))
    await runs.undo()


@pytest.fixture
def tidings_given() -> Callable[..., Any]:
    """:func:`tidings.testing.given`: ``tidings_given(decider, events).when(cmd).then(events)``."""
    return given


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"PostgreSQL is required in CI: {reason}")
    pytest.skip(f"PostgreSQL tests skipped: {reason}")
