"""Every store we ship runs the whole backend contract suite."""

from __future__ import annotations

from pathlib import Path

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
