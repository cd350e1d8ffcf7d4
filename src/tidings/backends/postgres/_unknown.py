"""Commits whose outcome is unknown: the connection broke while their COMMIT may have been in flight.

The server is asked (``pg_xact_status``) whether the transaction id committed. While it still says
"in progress" (it has not yet noticed that the client is gone, and would wait for it), the old
session is ended, so that the answer becomes final: committed, or aborted and safe to commit again.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from tidings.backends._plan import Result
from tidings.backends.postgres._retry import Retry


class UnknownOutcome(Exception):
    """The connection was lost while a group's COMMIT may have been in flight."""

    def __init__(self, xid: int, pid: int, results: list[Result]) -> None:
        super().__init__(f"transaction {xid}: outcome unknown")
        self.xid = xid
        self.pid = pid
        #: what the group's transactions would have returned, had the COMMIT been acknowledged
        self.results = results


async def committed(
    pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]],
    queries: dict[str, bytes],
    unknown: UnknownOutcome,
    retry: Retry,
) -> bool:
    """Whether the transaction of ``unknown`` committed; ``StoreUnavailable`` if that cannot be
    told before ``retry`` gives up."""
    while True:
        cause: BaseException | None = None
        try:
            async with pool.connection(timeout=retry.connection_wait()) as conn:
                cur = await conn.execute(queries["xact_status"], (str(unknown.xid),))
                found = await cur.fetchone()
                status = found[0] if found else None
                if status == "committed":
                    return True
                if status != "in progress":
                    return False
                # backend_xid is the 32-bit form of the transaction id.
                await conn.execute(
                    queries["end_backend"], (unknown.pid, str(unknown.xid & 0xFFFFFFFF))
                )
        except psycopg.OperationalError as exc:
            cause = exc
        await retry.pause(
            cause,
            "the connection was lost during a commit and whether it committed cannot be told "
            f"yet ({cause or 'it is still in progress'}); commit again: stored message ids and "
            "fenced checkpoints make that safe",
        )
