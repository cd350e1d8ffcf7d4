"""Group commit: the transactions that concurrent callers commit are written together."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from tidings.backends._plan import Result
from tidings.backends._shared import settle
from tidings.errors import StoreClosed, StoreError, StoreUnavailable
from tidings.store import Appended, Transaction

#: Writes a group of transactions in one database transaction: each one's result, in order. It
#: raises only when nothing of the group was written.
Write = Callable[[list[Transaction]], Awaitable[list[Result]]]


class GroupCommitter:
    """Collects the transactions committed in one event loop and hands them to ``write`` in groups.

    The first commit starts a flush task; asyncio runs it after every callback that is ready
    already, so every caller that reaches ``commit`` in the same loop iteration joins its group.
    Commits that arrive while a group is being written form the next one. A transaction that
    ``write`` refuses fails alone. When ``write`` raises for a group of several transactions,
    each is written again alone, so that one whose data the database refuses fails alone too;
    ``StoreUnavailable`` (the database itself failed) fails the whole group at once.

    It belongs to one event loop: ``loop``, or else the loop of its first commit.
    """

    def __init__(
        self, write: Write, *, limit: int = 512, loop: asyncio.AbstractEventLoop | None = None
    ) -> None:
        self._write = write
        self._limit = limit
        self._pending: list[tuple[Transaction, asyncio.Future[list[Appended]]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._loop = loop
        self._closed = False

    async def commit(self, tx: Transaction) -> list[Appended]:
        """Commit ``tx`` with whatever else is committed meanwhile; its appends, or its error."""
        if self._closed:
            raise StoreClosed()
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif loop is not self._loop:
            raise StoreError(
                "this store was opened in another event loop: open one App per event loop "
                "(or per thread), and use it only there"
            )
        fut: asyncio.Future[list[Appended]] = loop.create_future()
        self._pending.append((tx, fut))
        if self._flusher is None:
            self._flusher = loop.create_task(self._flush())
        return await fut

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
        flusher = self._flusher
        if flusher is not None and flusher is not asyncio.current_task():
            pending, self._pending = self._pending, []
            try:
                await asyncio.wait([flusher])
            finally:
                self._pending[:0] = pending
        self._fail_pending()
        self._loop = None
