"""The read side the SQL stores share: each method runs one named query and makes records of its rows.

SQLite and PostgreSQL name the same queries in their ``queries.sql``, taking the same parameters;
what differs is how a list is passed (a JSON array for SQLite, an array for PostgreSQL), which
the database says (:meth:`Queries.array`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from tidings.backends._shared import held_from_row, release
from tidings.messages import Envelope
from tidings.records import (
    AuditEntry,
    Backlog,
    Document,
    Held,
    Outcome,
    PartitionInfo,
    TypeActivity,
    TypeCount,
)
from tidings.store import Store

#: a stream position beyond any stream's end: where reading backwards from the end starts
_END = 1 << 62
#: the most ids one query is given
_CHUNK = 5000

Params = Sequence[Any] | Mapping[str, Any]


def _prefix_end(prefix: str) -> str | bytes:
    """What every string starting with ``prefix`` sorts below, compared code point by code point
    (as UTF-8 bytes): the prefix with its last character's successor; for no prefix, or one
    ending in the last code point, a BLOB (SQLite sorts every BLOB above every text)."""
    if not prefix or prefix[-1] == chr(0x10FFFF):
        return b"\xff"
    last = ord(prefix[-1]) + 1
    if 0xD800 <= last <= 0xDFFF:  # surrogates are not characters: no string holds one
        last = 0xE000
    return prefix[:-1] + chr(last)


class Queries(Protocol):
    """A database the store runs its named queries on."""

    async def rows(self, name: str, params: Params = ()) -> list[Any]:
        """The rows of the named query."""
        ...

    async def scan(self, name: str, params: Params = ()) -> list[Any]:
        """The rows of a named query that reads the whole log, run so that it holds up nothing
        else of the process while it lasts."""
        ...

    def array(self, values: Iterable[Any]) -> Any:
        """``values`` as the database takes a list parameter."""
        ...


class SqlReads(Store):
    """The reads of a store over SQL, through ``self._db``."""

    _db: Queries

    # --- the log ------------------------------------------------------------------------------

    async def read_stream(
        self,
        stream: str,
        *,
        from_position: int | None = None,
        backwards: bool = False,
        limit: int | None = None,
    ) -> list[Envelope]:
        if backwards:
            start = _END if from_position is None else from_position
            rows = await self._db.rows("read_backwards", (stream, start, limit))
        else:
            start = 1 if from_position is None else from_position
            rows = await self._db.rows("read_forwards", (stream, start, limit))
        return [Envelope(*row) for row in rows]

    async def read_all(
        self,
        *,
        after: int = 0,
        types: Sequence[str] | None = None,
        limit: int = 1000,
    ) -> list[Envelope]:
        if types is None:
            rows = await self._db.rows("read_all", (after, limit))
        elif not types:
            return []
        else:
            rows = await self._db.rows("read_all_types", (after, self._db.array(types), limit))
        return [Envelope(*row) for row in rows]

    async def find(
        self,
        *,
        ids: Sequence[str] | None = None,
        correlation_id: str | None = None,
        causation_id: str | None = None,
        limit: int = 1000,
    ) -> list[Envelope]:
        if ids is not None:
            rows = await self._db.rows("find_ids", (self._db.array(ids), limit))
        elif correlation_id is not None:
            rows = await self._db.rows("find_correlated", (correlation_id, limit))
        elif causation_id is not None:
            rows = await self._db.rows("find_caused", (causation_id, limit))
        else:
            return []
        return [Envelope(*row) for row in rows]

    async def stream_version(self, stream: str) -> int:
        return int((await self._db.rows("stream_version", (stream,)))[0][0])

    async def last_position(self) -> int:
        return int((await self._db.rows("last_position"))[0][0])

    async def streams(
        self, *, prefix: str = "", limit: int = 100, internal: bool = False
    ) -> list[tuple[str, int]]:
        # SQLite bounds the prefix's streams by where they end; PostgreSQL's query leaves it.
        end = _prefix_end(prefix)
        params = {"prefix": prefix, "after": end, "internal": internal, "limit": limit}
        return [(s, int(v)) for s, v in await self._db.rows("streams", params)]

    async def type_counts(self) -> list[TypeCount]:
        return [TypeCount(*row) for row in await self._db.scan("type_counts")]

    async def arrivals(self) -> list[TypeActivity]:
        return [TypeActivity(*row) for row in await self._db.rows("arrivals")]

    async def backlog(self, types: Sequence[str], bounds: Sequence[int]) -> list[Backlog]:
        if not types or not bounds:
            return []
        params = (self._db.array(bounds), min(bounds), self._db.array(types))
        return [Backlog(*row) for row in await self._db.rows("backlog", params)]

    # --- subscriptions ------------------------------------------------------------------------

    async def now(self) -> float:
        return float((await self._db.rows("now"))[0][0])

    async def partitions(self, name: str | None = None) -> list[PartitionInfo]:
        return [PartitionInfo(*row) for row in await self._db.rows("partitions", (name, name))]

    # --- held messages ------------------------------------------------------------------------

    async def held(
        self,
        *,
        subscription: str | None = None,
        stream: str | None = None,
        status: str | None = None,
        id: int | None = None,
        limit: int = 1000,
    ) -> list[Held]:
        rows = await self._db.rows(
            "held", (subscription, subscription, stream, stream, status, status, id, id, limit)
        )
        return [held_from_row(row) for row in rows]

    async def held_summaries(
        self, *, subscription: str | None = None, status: str | None = None, limit: int = 100_000
    ) -> list[Held]:
        name = "held_summaries_any" if status is None else "held_summaries"
        params = {"status": status, "subscription": subscription, "limit": limit}
        return [held_from_row(row) for row in await self._db.rows(name, params)]

    async def held_tails(self, ids: Sequence[int]) -> dict[int, str]:
        found: dict[int, str] = {}
        for start in range(0, len(ids), _CHUNK):
            chunk = self._db.array(ids[start : start + _CHUNK])
            found.update((int(i), t or "") for i, t in await self._db.rows("held_tails", (chunk,)))
        return found

    async def held_streams(self, subscription: str, partitions: Sequence[int]) -> set[str]:
        if not partitions:
            return set()
        rows = await self._db.rows("held_streams", (subscription, self._db.array(partitions)))
        return {r[0] for r in rows}

    async def due_streams(
        self, subscription: str, partitions: Sequence[int], *, sequenced: bool = True
    ) -> list[str]:
        if not partitions:
            return []
        name = "due_streams_sequenced" if sequenced else "due_streams"
        rows = await self._db.rows(name, (subscription, self._db.array(partitions)))
        return [r[0] for r in rows]

    async def held_counts(self) -> list[tuple[str, str, int]]:
        return [(s, st, int(n)) for s, st, n in await self._db.rows("held_counts")]

    # --- outcomes, schedule, documents, audit -------------------------------------------------

    async def outcome(self, message_id: str) -> Outcome | None:
        rows = await self._db.rows("outcome", (message_id,))
        return Outcome(*rows[0]) if rows else None

    async def outcomes(self, *, status: str | None = None, limit: int = 100) -> list[Outcome]:
        if status is None:
            rows = await self._db.rows("outcomes", (limit,))
        else:
            rows = await self._db.rows("outcomes_by_status", (status, limit))
        return [Outcome(*row) for row in rows]

    async def outcome_counts(self) -> list[tuple[str, int]]:
        return [(str(s), int(n)) for s, n in await self._db.rows("outcome_counts")]

    async def release_due(self, limit: int = 500) -> int:
        rows = await self._db.rows("due_scheduled", (limit,))
        if not rows:
            return 0
        await self.commit(release(rows))
        return len(rows)

    async def next_due(self) -> float | None:
        found = (await self._db.rows("next_due"))[0][0]
        return None if found is None else max(0.0, float(found))

    async def document(self, collection: str, key: str) -> Document:
        rows = await self._db.rows("get_document", (collection, key))
        return Document(rows[0][0], rows[0][1]) if rows else Document(None, 0)

    async def documents(self, collection: str, *, limit: int = 1000) -> list[tuple[str, bytes]]:
        return [(k, d) for k, d in await self._db.rows("documents", (collection, limit))]

    async def audit_entries(self, *, limit: int = 100) -> list[AuditEntry]:
        return [AuditEntry(*row) for row in await self._db.rows("audit_entries", (limit,))]
