"""Wake-ups from PostgreSQL's LISTEN/NOTIFY: a dedicated connection listening on the store's channel,
reconnected with backoff when it is lost."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import psycopg
from psycopg import sql

log = logging.getLogger("tidings.postgres")


class Listener:
    """Listens on ``channel``, whose payloads are the log's last global position after a commit.

    The connection is opened on the first :meth:`wait`, so a store that nobody waits on holds no
    connection for it.
    """

    def __init__(self, conninfo: str, channel: str) -> None:
        self._conninfo = conninfo
        self._listen = sql.SQL("LISTEN {}").format(sql.Identifier(channel))
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        self._position = 0

    async def wait(self, timeout: float) -> None:
        """Return at the next notification of a position not notified before, when the connection
        is (re)established (notifications may have been missed meanwhile), or after ``timeout``."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="tidings:postgres-listen"
            )
        changed = self._changed
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(changed.wait(), timeout)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def _signal(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def _run(self) -> None:
        delay = 0.05
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
                async with conn:
                    await conn.execute(self._listen)
                    self._signal()
                    delay = 0.05
                    async for note in conn.notifies():
                        position = int(note.payload)
                        if position > self._position:
                            self._position = position
                            self._signal()
            except (psycopg.Error, OSError, ValueError) as exc:
                log.info("PostgreSQL: listening for commits failed (%s); reconnecting", exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
