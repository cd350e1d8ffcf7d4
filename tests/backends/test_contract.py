"""Every store we ship runs the whole backend contract suite."""

from __future__ import annotations

from pathlib import Path

import pytest

from tidings.backends.memory import MemoryStore
from tidings.backends.sqlite import SqliteStore
from tidings.store import Store
from tidings.testing.contract import DeliveryContract, LogContract, append, new_message
from tidings.testing.documents import DocumentContract
from tidings.testing.operations import OperationsContract


class TestMemoryStore(LogContract, DeliveryContract, OperationsContract, DocumentContract):
    async def make_store(self, tmp_path: Path) -> Store:
        return MemoryStore()


class TestSqliteStore(LogContract, DeliveryContract, OperationsContract, DocumentContract):
    async def make_store(self, tmp_path: Path) -> Store:
        return SqliteStore(str(tmp_path / "contract.db"))


class TestPostgresStore(LogContract, DeliveryContract, OperationsContract, DocumentContract):
    """On a real server (tests/conftest.py), in a schema of its own for each test."""

    @pytest.fixture(autouse=True)
    def _schema(self, postgres_url: str, pg_schema: str) -> None:
        self.postgres_url = postgres_url
        self.schema = pg_schema

    async def make_store(self, tmp_path: Path) -> Store:
        from tidings.backends.postgres import PostgresStore

        return PostgresStore(self.postgres_url, schema=self.schema)


@pytest.mark.parametrize("size", [1, 3])
async def test_sqlite_stores_sharing_a_file_never_lose_each_other_s_rows(
    tmp_path: Path, size: int
) -> None:
    # Each store plans on what it last committed; the other's rows make it wrong, and the
    # unique indexes must catch it without taking away anything the other one stored.
    here, there = SqliteStore(str(tmp_path / "s.db")), SqliteStore(str(tmp_path / "s.db"))
    await here.open()
    await there.open()
    try:
        await append(here, "a", new_message())
        await append(there, "b", *[new_message() for _ in range(size)])
        await append(here, "a", *[new_message() for _ in range(size)], expected_version=1)
        await append(there, "b", new_message(), expected_version=size)
        log = await here.read_all()
        assert [e.global_position for e in log] == list(range(1, 2 * size + 3))
        assert [e.stream_position for e in log if e.stream == "a"] == list(range(1, size + 2))
        assert [e.stream_position for e in log if e.stream == "b"] == list(range(1, size + 2))
    finally:
        await here.close()
        await there.close()
