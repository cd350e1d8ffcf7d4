"""The one group committer: concurrent commits share a write, a refused one fails alone, and a
lone caller neither waits for company nor keeps the loop to itself."""

from __future__ import annotations

import asyncio

import pytest

from tidings.backends._group import GroupCommitter
from tidings.backends._plan import Result
from tidings.errors import StoreError, StoreUnavailable
from tidings.records import Appended, AppendOp, Transaction
from tidings.testing.contract import new_message


def tx(stream: str) -> Transaction:
    return Transaction([AppendOp(stream, [new_message()])])


def appended(txs: list[Transaction]) -> list[Result]:
    return [([Appended(t.appends[0].stream, 1, n)], None) for n, t in enumerate(txs, 1)]


class Database:
    """A fake database: records each group written, and refuses transactions to ``bad``."""

    def __init__(self, *, now: bool = True) -> None:
        self.groups: list[list[str]] = []
        self.failure: Exception | None = None
        self.now = now

    def _write(self, txs: list[Transaction]) -> list[Result]:
        self.groups.append([t.appends[0].stream for t in txs])
        if self.failure is not None:
            raise self.failure
        if len(txs) > 1 and any(t.appends[0].stream == "bad" for t in txs):
            raise StoreError("a constraint failed; nothing was written")
        if txs[0].appends[0].stream == "bad":
            raise StoreError("refused")
        return appended(txs)

    async def write(self, txs: list[Transaction]) -> list[Result]:
        return self._write(txs)

    def write_now(self, txs: list[Transaction]) -> list[Result] | None:
        return self._write(txs) if self.now else None

    def committer(self) -> GroupCommitter:
        return GroupCommitter(self.write, write_now=self.write_now)


@pytest.mark.parametrize("now", [True, False])
async def test_concurrent_commits_share_one_write(now: bool) -> None:
    db = Database(now=now)
    committer = db.committer()
    done = await asyncio.gather(*(committer.commit(tx(f"s-{n}")) for n in range(5)))
    assert [d[0].stream for d in done] == [f"s-{n}" for n in range(5)]
    assert db.groups == [[f"s-{n}" for n in range(5)]]  # by write_now, or else by write
    await committer.close()


async def test_a_transaction_the_database_refuses_fails_alone() -> None:
    db = Database()
    committer = db.committer()
    results = await asyncio.gather(
        committer.commit(tx("a")), committer.commit(tx("bad")), committer.commit(tx("c")),
        return_exceptions=True,
    )  # fmt: skip
    assert isinstance(results[1], StoreError)
    assert [r[0].stream for r in (results[0], results[2])] == ["a", "c"]  # type: ignore[index]
    assert db.groups[-3:] == [["a"], ["bad"], ["c"]]  # written again one by one
    await committer.close()


async def test_an_unavailable_database_fails_the_whole_group_at_once() -> None:
    db = Database()
    db.failure = StoreUnavailable("gone")
    committer = db.committer()
    results = await asyncio.gather(
        *(committer.commit(tx(f"s-{n}")) for n in range(3)), return_exceptions=True
    )
    assert all(isinstance(r, StoreUnavailable) for r in results)
    assert all(len(group) == 3 for group in db.groups)  # never one by one
    await committer.close()


async def test_a_lone_caller_writes_at_once_but_lets_others_run() -> None:
    db = Database()
    committer = db.committer()
    ran = asyncio.Event()

    async def other() -> None:
        ran.set()

    for n in range(3):  # alone, group after group
        await committer.commit(tx(f"warm-{n}"))
    asyncio.get_running_loop().create_task(other())
    commits = 0
    while not ran.is_set():
        await committer.commit(tx(f"s-{commits}"))
        commits += 1
        assert commits <= 10, "a lone caller kept the event loop to itself"
    assert all(len(group) == 1 for group in db.groups)
    await committer.close()


async def test_a_caller_cancelled_while_its_group_forms_commits_nothing() -> None:
    db = Database()
    committer = db.committer()
    first = asyncio.ensure_future(committer.commit(tx("leaves")))
    await asyncio.sleep(0)  # it leads a group, waiting for others to join
    second = asyncio.ensure_future(committer.commit(tx("stays")))
    first.cancel()
    assert (await second)[0].stream == "stays"
    with pytest.raises(asyncio.CancelledError):
        await first
    assert db.groups == [["stays"]]
    await committer.close()
