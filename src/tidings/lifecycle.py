"""An App's store opened once, in the event loop it then belongs to until it is closed."""

from __future__ import annotations

import asyncio
import threading

from tidings.errors import StoreError
from tidings.store import Store


class Lifecycle:
    """Opens and closes a store for its ``owner`` (named in errors). From its opening to its
    closing the store belongs to the event loop that opened it: from another loop (another
    thread's, or a later ``asyncio.run``) opening it again raises ``StoreError`` at once."""

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self.opened = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = 0
        self._claim_lock = threading.Lock()
        self._open_lock: asyncio.Lock | None = None

    def ready(self) -> bool:
        """Whether the store is open, in the event loop running this code."""
        loop = self._loop
        return (
            self.opened
            and loop is not None
            and self._thread == threading.get_ident()
            and loop.is_running()
        )

    async def open(self, store: Store) -> None:
        """Open ``store`` in the running loop, once."""
        if self.ready():
            return
        self._claim()
        if self._open_lock is None:
            self._open_lock = asyncio.Lock()
        async with self._open_lock:
            if not self.opened:
                try:
                    await store.open()
                except BaseException:
                    self._release()
                    raise
                self.opened = True

    async def close(self, store: Store) -> None:
        """Close ``store`` (from its own loop); it may then be opened in any loop."""
        if self._loop is None:
            return
        self._claim()
        if self.opened:
            self.opened = False
            try:
                await store.close()
            finally:
                self._release()

    def _claim(self) -> None:
        """Make the running loop the owner, or raise ``StoreError`` if another loop is."""
        loop = asyncio.get_running_loop()
        with self._claim_lock:
            if self._loop is None:
                self._loop, self._thread = loop, threading.get_ident()
                return
            if self._loop is loop:
                return
            if self._thread != threading.get_ident() and not self._loop.is_closed():
                why = (
                    "which runs in another thread: build one App per thread, or hand the work "
                    "to the App's own loop (asyncio.run_coroutine_threadsafe)"
                )
            else:
                why = (
                    "which has ended (an earlier asyncio.run): close the App before its loop "
                    "ends (async with app: ...), then it opens again in the next one"
                )
        raise StoreError(f"{self.owner}: its store was opened in another event loop, {why}")

    def _release(self) -> None:
        with self._claim_lock:
            self._loop, self._thread, self._open_lock = None, 0, None
