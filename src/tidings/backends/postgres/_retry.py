"""Trying an operation again while PostgreSQL cannot be reached: backoff, up to a deadline."""

from __future__ import annotations

import asyncio
import logging
import time

from tidings.errors import StoreUnavailable

log = logging.getLogger("tidings.postgres")


class Retry:
    """The pauses between the tries of one operation (``what``, as in "cannot {what}"), doubling
    from 20 ms to 1 s, for at most ``timeout`` seconds in all."""

    def __init__(self, where: str, what: str, timeout: float) -> None:
        self._where = where
        self._what = what
        self._deadline = time.monotonic() + timeout
        self._delay = 0.02

    async def pause(self, cause: BaseException | None, why: str | None = None) -> None:
        """Wait before the next try; raise ``StoreUnavailable`` instead once the deadline would
        pass (its message ``why``, or what could not be done and ``cause``)."""
        if time.monotonic() + self._delay > self._deadline:
            message = why or f"cannot {self._what}: {cause}"
            raise StoreUnavailable(f"PostgreSQL at {self._where}: {message}") from cause
        log.info("PostgreSQL: cannot %s yet (%s); retrying", self._what, cause or why)
        await asyncio.sleep(self._delay)
        self._delay = min(self._delay * 2, 1.0)
