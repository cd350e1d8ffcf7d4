"""The committer: commits transactions through the store and wakes whoever waits in this process."""

from __future__ import annotations

import asyncio

from tidings.store import Appended, Store, Transaction


class Committer:
    """Commits every transaction of one App, then wakes this process's waiters: the workers'
    wake-up events (the log grew, or a message was scheduled or held) and the callers waiting
    for a sent command's outcome. Workers in other processes poll, or listen to a ``ChangeFeed``.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self._wakeups: set[asyncio.Event] = set()
        self._outcome_waiters: dict[str, list[asyncio.Future[None]]] = {}

    async def commit(self, tx: Transaction) -> list[Appended]:
        """Commit ``tx`` atomically (with the store's errors), then wake whoever waits for it."""
        done = await self.store.commit(tx)
        if self._wakeups and (tx.appends or tx.scheduled or tx.held):
            for wakeup in self._wakeups:
                wakeup.set()
        for outcome in tx.outcomes:
            for waiter in self._outcome_waiters.pop(outcome.message_id, ()):
                if not waiter.done():
                    waiter.set_result(None)
        return done

    def add_wakeup(self, wakeup: asyncio.Event) -> None:
        """Set ``wakeup`` after every commit that appends, schedules or holds a message."""
        self._wakeups.add(wakeup)

    def discard_wakeup(self, wakeup: asyncio.Event) -> None:
        """Stop setting ``wakeup``."""
        self._wakeups.discard(wakeup)

    async def outcome_committed(self, message_id: str, timeout: float) -> None:
        """Return once an outcome of ``message_id`` is committed here, or after ``timeout``."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._outcome_waiters.setdefault(message_id, []).append(waiter)
        try:
            await asyncio.wait([waiter], timeout=timeout)
        finally:
            waiters = self._outcome_waiters.get(message_id)
            if waiters is not None and waiter in waiters:
                waiters.remove(waiter)
                if not waiters:
                    del self._outcome_waiters[message_id]
