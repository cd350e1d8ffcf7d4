"""Group commit: the transactions that concurrent callers commit are written together."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable

from tidings.backends._plan import Result
from tidings.backends._shared import settle
from tidings.errors import StoreClosed, StoreError, StoreUnavailable
from tidings.records import Appended, Transaction

_Pending = tuple[Transaction, "asyncio.Future[list[Appended]]"]

#: Writes a group of transactions in one database transaction: each one's result, in order. It
#: raises only when nothing of the group was written.
Write = Callable[[list[Transaction]], Awaitable[list[Result]]]
#: Writes a group within the call, as ``Write`` does; or writes nothing and returns None (or
#: raises) when it cannot do so without waiting, and then ``Write`` is awaited instead.
WriteNow = Callable[[list[Transaction]], list[Result] | None]


class GroupCommitter:
    """Collects the transactions committed in one event loop and hands them to ``write`` in groups.

    The first commit leads a group: it lets every callback that is ready already run (one
    ``asyncio.sleep(0)``), so every caller that reaches ``commit`` in the same loop iteration
    joins, then writes the group itself with ``write_now`` when given, or else in a flush task
    with ``write``. Commits that arrive while a group is being written form the next one, written
    by the flush task.

    A lone caller (the last groups were each of one transaction) writes at once, without the
    loop iteration, which costs a sequential caller about a tenth of its commit; every
    ``_LOOK``-th commit it still waits one, to let others run and join. Without ``write_now``
    it awaits ``write`` in its own task rather than waking a flush task and being woken by it;
    commits arriving meanwhile form the next group, written by a flush task.

    A transaction that ``write`` refuses fails alone. When ``write`` raises for a group of several
    transactions, each is written again alone, so that one whose data the database refuses fails
    alone too; ``StoreUnavailable`` (the database itself failed) fails the whole group at once.

    It belongs to one event loop, which must run in the thread it is given in: ``loop``, or else
    the loop of its first commit.
    """

    _LOOK = 8

    def __init__(
        self,
        write: Write,
        *,
        write_now: WriteNow | None = None,
        limit: int = 512,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self._write = write
        self._write_now = write_now
        self._limit = limit
        self._pending: list[_Pending] = []
        #: whether a caller leads the group forming now
        self._leading = False
        #: groups of one transaction in a row, and commits since one waited for others
        self._alone = 0
        self._unseen = 0
        self._flusher: asyncio.Task[None] | None = None
        #: set while a lone caller writes in its own task; done when it has
        self._writing: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = 0
        if loop is not None:
            self._bind(loop)
        self._closed = False

    def _bind(self, loop: asyncio.AbstractEventLoop) -> asyncio.AbstractEventLoop:
        """Belong to ``loop``, which runs in this thread."""
        self._loop, self._thread = loop, threading.get_ident()
        return loop

    async def commit(self, tx: Transaction) -> list[Appended]:
        """Commit ``tx`` with whatever else is committed meanwhile; its appends, or its error."""
        if self._closed:
            raise StoreClosed()
        loop = self._loop
        if loop is None:
            loop = self._bind(asyncio.get_running_loop())
        # A thread runs one loop at a time: this one runs here when it runs in this thread.
        # (asyncio.get_running_loop() would ask the system for the process id on Python 3.11.)
        elif threading.get_ident() != self._thread or not loop.is_running():
            raise StoreError(
                "this store was opened in another event loop: open one App per event loop "
                "(or per thread), and use it only there"
            )
        idle = not self._leading and self._flusher is None and self._writing is None
        if idle and self._alone >= 2 and self._unseen < self._LOOK:
            self._unseen += 1
            if self._write_now is None:
                return await self._write_alone(tx, loop)
            written = self._written_now([tx])
            if written is not None:
                ((done, error),) = written
                if error is not None:
                    raise error
                assert done is not None
                return done
        fut: asyncio.Future[list[Appended]] = loop.create_future()
        self._pending.append((tx, fut))
        if not idle:
            return await fut  # a group is forming or being written: it, or the next, takes this
        self._unseen = 0
        if self._write_now is None:
            self._flusher = loop.create_task(self._flush())
            return await fut
        self._leading = True
        try:
            await asyncio.sleep(0)  # every caller ready to run now joins this group
        except BaseException:
            # Nothing is written yet: this caller leaves.
            self._pending = [entry for entry in self._pending if entry[1] is not fut]
            raise
        finally:
            self._leading = False
            self._lead(loop)
        return await fut

    async def _write_alone(
        self, tx: Transaction, loop: asyncio.AbstractEventLoop
    ) -> list[Appended]:
        """Write a lone caller's ``tx`` in the caller's task; then hand what arrived meanwhile
        to a flush task."""
        writing = self._writing = loop.create_future()
        try:
            ((done, error),) = await self._results([tx])
        finally:
            self._writing = None
            writing.set_result(None)
            if self._pending and self._flusher is None:
                self._flusher = loop.create_task(self._flush())
        self._alone += 1
        if error is not None:
            raise error
        assert done is not None
        return done

    def _lead(self, loop: asyncio.AbstractEventLoop) -> None:
        """Write the first group within this call, if ``write_now`` can; leave the rest to a
        flush task."""
        if self._closed:
            self._fail_pending()
            return
        group = self._pending[: self._limit]
        results = self._written_now([tx for tx, _ in group]) if group else None
        if results is not None:
            del self._pending[: len(group)]
            for (_, fut), (done, error) in zip(group, results, strict=True):
                settle(fut, done, error)
        if self._pending:
            self._flusher = loop.create_task(self._flush())

    def _written_now(self, txs: list[Transaction]) -> list[Result] | None:
        """``write_now``'s results, or None when it wrote nothing (the flush task writes the
        group then, and tells why it could not)."""
        assert self._write_now is not None
        try:
            results = self._write_now(txs)
        except Exception:
            return None
        if results is not None:
            self._alone = self._alone + 1 if len(txs) == 1 else 0
        return results

    async def _flush(self) -> None:
        try:
            while self._pending:
                group = self._pending[: self._limit]
                del self._pending[: self._limit]
                try:
                    results = await self._results([tx for tx, _ in group])
                except Exception as exc:
                    for _, fut in group:
                        settle(fut, None, exc)
                    continue
                except BaseException:
                    for _, fut in group:
                        fut.cancel()
                    raise
                for (_, fut), (done, error) in zip(group, results, strict=True):
                    settle(fut, done, error)
                self._alone = self._alone + 1 if len(group) == 1 else 0
        finally:
            self._flusher = None
            if self._pending and self._closed:
                self._fail_pending()

    async def _results(self, txs: list[Transaction]) -> list[Result]:
        try:
            return await self._write(txs)
        except StoreUnavailable:
            raise
        except Exception as exc:
            if len(txs) == 1:
                return [(None, exc)]
        return [result for tx in txs for result in await self._results([tx])]

    def _fail_pending(self) -> None:
        pending, self._pending = self._pending, []
        for _, fut in pending:
            settle(fut, None, StoreClosed())

    async def close(self) -> None:
        """Let the group being written finish; fail what has not been written yet."""
        self._closed = True
        if self._writing is not None:
            await asyncio.wait([self._writing])  # a lone caller's write finishes
        flusher = self._flusher
        if flusher is not None and flusher is not asyncio.current_task():
            pending, self._pending = self._pending, []
            try:
                await asyncio.wait([flusher])
            finally:
                self._pending[:0] = pending
        self._fail_pending()
        self._loop = None
