"""Every store we ship runs the whole backend contract suite."""

from __future__ import annotations

from pathlib import Path

import pytest

from tidings.backends.memory import MemoryStore
from tidings.backends.sqlite import SqliteStore
from tidings.store import Store
from tidings.testing.contract import DeliveryContract, LogContract


class TestMemoryStore(LogContract, DeliveryContract):
    async def make_store(self, tmp_path: Path) -> Store:
        return MemoryStore()


class TestSqliteStore(LogContract, DeliveryContract):
    async def make_store(self, tmp_path: Path) -> Store:
        return SqliteStore(str(tmp_path / "contract.db"))


class TestPostgresStore(LogContract, DeliveryContract):
    """On a real server (tests/conftest.py), in a schema of its own for each test."""

    @pytest.fixture(autouse=True)
    def _schema(self, postgres_url: str, pg_schema: str) -> None:
        self.postgres_url = postgres_url
        self.schema = pg_schema

    async def make_store(self, tmp_path: Path) -> Store:
        from tidings.backends.postgres import PostgresStore

        return PostgresStore(self.postgres_url, schema=self.schema)
