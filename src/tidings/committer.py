"""The committer: commits transactions through the store and wakes whoever waits in this process."""

from __future__ import annotations

import asyncio

from tidings.records import Appended, Transaction
from tidings.store import Store


class Committer:
    """Commits every transaction of one App, then wakes this process's waiters: the workers'
    wake-up events (the log grew, or a message was scheduled or held) and the callers waiting
    for a sent command's outcome, and the callers waiting for a subscription to catch up. Workers
    in other processes poll, or listen to a ``ChangeFeed``.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        #: the highest global position a commit through this committer appended at (0: none)
        self.position = 0
        self._wakeups: set[asyncio.Event] = set()
        self._outcome_waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._checkpoint_waiters: set[asyncio.Future[None]] = set()

    async def commit(self, tx: Transaction) -> list[Appended]:
        """Commit ``tx`` atomically (with the store's errors), then wake whoever waits for it."""
        done = await self.store.commit(tx)
        for appended in done:
            self.position = max(self.position, appended.global_position)
        if self._wakeups and (tx.appends or tx.scheduled or tx.held):
            for wakeup in self._wakeups:
                wakeup.set()
        if tx.checkpoints and self._checkpoint_waiters:
            waiters, self._checkpoint_waiters = self._checkpoint_waiters, set()
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)
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

    async def checkpoints_moved(self, timeout: float) -> None:
        """Return once a commit here moves a checkpoint, or after ``timeout``."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._checkpoint_waiters.add(waiter)
        try:
            await asyncio.wait([waiter], timeout=timeout)
        finally:
            self._checkpoint_waiters.discard(waiter)
