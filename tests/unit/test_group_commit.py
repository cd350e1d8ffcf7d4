"""The one group committer: concurrent commits share a write, a refused one fails alone, and a
lone caller neither waits for company nor keeps the loop to itself."""

from __future__ import annotations

import asyncio

import pytest

from tidings.backends._group import GroupCommitter
from tidings.backends._plan import Result
from tidings.errors import StoreClosed, StoreError, StoreUnavailable
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


class SlowDatabase(Database):
    """A database whose writes wait until ``go`` is set; each write notes the task it ran in."""

    def __init__(self) -> None:
        super().__init__(now=False)
        self.go = asyncio.Event()
        self.go.set()
        self.writing = asyncio.Event()
        self.tasks: list[asyncio.Task[object] | None] = []

    async def write(self, txs: list[Transaction]) -> list[Result]:
        self.tasks.append(asyncio.current_task())
        self.writing.set()
        await self.go.wait()
        return self._write(txs)

    def committer(self) -> GroupCommitter:
        return GroupCommitter(self.write)  # no write_now: PostgreSQL's case


async def lone_write_held(
    db: SlowDatabase, stream: str
) -> tuple[GroupCommitter, asyncio.Future[list[Appended]]]:
    """A committer whose lone caller, after two groups of one, is writing ``stream`` in its own
    task, held there until ``db.go`` is set."""
    committer = db.committer()
    for n in range(2):
        await committer.commit(tx(f"warm-{n}"))
    db.go.clear()
    db.writing.clear()
    lone = asyncio.ensure_future(committer.commit(tx(stream)))
    await asyncio.wait_for(db.writing.wait(), 5)
    return committer, lone


async def test_without_write_now_a_lone_caller_writes_in_its_own_task() -> None:
    db = SlowDatabase()
    committer = db.committer()
    for n in range(3):
        await committer.commit(tx(f"s-{n}"))
    me = asyncio.current_task()
    # The first two groups are written by a flush task; once alone, the caller writes itself.
    assert db.tasks[0] is not me and db.tasks[1] is not me and db.tasks[2] is me
    # Others run meanwhile: every _LOOK-th commit still goes through a flush task.
    for n in range(3, 3 + 2 * GroupCommitter._LOOK):
        await committer.commit(tx(f"s-{n}"))
    assert any(task is not me for task in db.tasks[3:])
    assert all(len(group) == 1 for group in db.groups)
    await committer.close()


async def test_commits_arriving_while_a_lone_caller_writes_form_the_next_group() -> None:
    db = SlowDatabase()
    committer, lone = await lone_write_held(db, "lone")
    others = [asyncio.ensure_future(committer.commit(tx(f"other-{n}"))) for n in range(3)]
    await asyncio.sleep(0)  # they queue behind the write in progress
    assert db.groups == [["warm-0"], ["warm-1"]]
    db.go.set()
    assert (await lone)[0].stream == "lone"
    assert [(await o)[0].stream for o in others] == ["other-0", "other-1", "other-2"]
    assert db.groups[2:] == [["lone"], ["other-0", "other-1", "other-2"]]
    await committer.close()


async def test_a_lone_caller_cancelled_while_writing_leaves_the_committer_working() -> None:
    db = SlowDatabase()
    committer, lone = await lone_write_held(db, "cancelled")
    waiting = asyncio.ensure_future(committer.commit(tx("waits")))
    await asyncio.sleep(0)
    lone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await lone
    db.go.set()
    # What waited behind the cancelled write is written, and the committer goes on.
    assert (await asyncio.wait_for(waiting, 5))[0].stream == "waits"
    assert (await committer.commit(tx("after")))[0].stream == "after"
    await committer.close()


async def test_close_waits_for_a_lone_callers_write() -> None:
    db = SlowDatabase()
    committer, lone = await lone_write_held(db, "lone")
    closing = asyncio.ensure_future(committer.close())
    await asyncio.sleep(0)
    assert not closing.done()  # the write in progress finishes first
    db.go.set()
    await asyncio.wait_for(closing, 5)
    assert (await lone)[0].stream == "lone"
    with pytest.raises(StoreClosed):
        await committer.commit(tx("late"))
