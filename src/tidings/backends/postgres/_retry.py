"""Trying an operation again while PostgreSQL cannot be reached: backoff, up to a deadline."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from psycopg_pool import PoolTimeout

from tidings.errors import StoreUnavailable

log = logging.getLogger("tidings.postgres")

#: The longest pause between two tries: the server is tried again at most this long after it
#: came back.
MAX_PAUSE = 0.5
#: How long one try waits for a pooled connection before the server is probed directly.
_TRY_WAIT = 1.0
_MIN_WAIT = 0.05

#: Connects to the server once, within the seconds given; returns why it cannot, or None.
Probe = Callable[[float], Awaitable[BaseException | None]]


class Retry:
    """The tries of one operation (``what``, as in "cannot {what}") for at most ``timeout``
    seconds in all, with pauses doubling from 20 ms to ``MAX_PAUSE``. When no pooled connection
    came within a try, ``probe`` connects to the server directly: it tells a busy pool (try again
    at once) from a server that is down (the reason, then a pause)."""

    def __init__(self, where: str, what: str, timeout: float, probe: Probe | None = None) -> None:
        self._where = where
        self._what = what
        self._timeout = timeout
        self._start = time.monotonic()
        self._deadline = self._start + timeout
        self._delay = 0.02
        self._probe = probe
        self._tries = 0

    def connection_wait(self) -> float:
        """How long this try may wait for a connection from the pool."""
        return min(max(self._deadline - time.monotonic(), _MIN_WAIT), _TRY_WAIT)

    async def pause(self, cause: BaseException | None, why: str | None = None) -> None:
        """Wait before the next try; raise ``StoreUnavailable`` instead once the deadline has
        passed (its message ``why``, or what could not be done and ``cause``)."""
        self._tries += 1
        if isinstance(cause, PoolTimeout) and self._probe is not None:
            reason = await self._probe(max(self._deadline - time.monotonic(), _MIN_WAIT))
            if reason is None and time.monotonic() < self._deadline:
                return  # the server answers: the pool is busy or reconnecting
            if reason is not None:
                cause = reason
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            waited = time.monotonic() - self._start
            message = why or f"cannot {self._what}: {_first_line(cause)}"
            raise StoreUnavailable(
                f"PostgreSQL at {self._where}: {message}; gave up after {waited:.1f}s and "
                f"{self._tries} {'try' if self._tries == 1 else 'tries'} (retry_timeout={self._timeout:g}s): check that the server "
                "is running and accepts connections, or raise retry_timeout"
            ) from cause
        level = logging.INFO if self._tries == 1 else logging.DEBUG
        log.log(
            level,
            "PostgreSQL at %s: cannot %s yet (%s); retrying for up to %.1fs",
            self._where,
            self._what,
            _first_line(cause) if cause is not None else why,
            remaining,
        )
        await asyncio.sleep(min(self._delay, remaining))
        self._delay = min(self._delay * 2, MAX_PAUSE)


def _first_line(error: BaseException | None) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
