"""The in-memory store: for unit tests and the test harness, with the same semantics as the others.

It keeps payloads encoded, exactly as a database would, so code tested against it behaves the same
on SQLite and PostgreSQL.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Sequence

import msgspec

from tidings.errors import ConfigurationError, LeaseLost, StoreClosed, WrongExpectedVersion
from tidings.messages import Envelope, NewMessage
from tidings.store import (
    ANY,
    REPLAY,
    RETRYING,
    Appended,
    AppendOp,
    AuditEntry,
    Held,
    Outcome,
    PartitionInfo,
    Scheduled,
    Store,
    Transaction,
)


class _IdIndex:
    """Message id to envelope, for an append to find the ids already stored.

    Ids made by :func:`~tidings.uuid7` arrive in increasing order, and those are kept in two lists
    (appended to, searched by bisection) instead of a dict: hashing a hundred thousand new ids into
    a dict costs an append more than everything else it does. An id that arrives out of order (one
    chosen by the caller, say) goes to a dict. Either way an id newer than every id stored is known
    to be new without a search.
    """

    __slots__ = ("_envs", "_ids", "_last", "_others")

    def __init__(self) -> None:
        self._ids: list[str] = []
        self._envs: list[Envelope] = []
        self._last = ""
        self._others: dict[str, Envelope] = {}

    def get(self, message_id: str) -> Envelope | None:
        if message_id > self._last:
            return None
        found = self._others.get(message_id)
        if found is None:
            ids = self._ids
            i = bisect_left(ids, message_id)
            if i < len(ids) and ids[i] == message_id:
                found = self._envs[i]
        return found

    def __contains__(self, message_id: str) -> bool:
        return self.get(message_id) is not None

    def fresh(self, messages: Sequence[NewMessage]) -> Sequence[NewMessage]:
        """The messages whose ids are not stored yet."""
        return [m for m in messages if m.id > self._last or m.id not in self]

    def add(self, env: Envelope) -> None:
        """Index ``env``, whose id is not stored yet."""
        message_id = env.id
        if message_id > self._last:
            self._ids.append(message_id)
            self._envs.append(env)
            self._last = message_id
        else:
            self._others[message_id] = env


class MemoryStore(Store):
    """A store that lives in this process's memory and is gone when it ends."""

    url = "memory://"

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        #: the store's clock (epoch seconds); the test harness gives it one it can move forward
        self._clock = clock
        self._log: list[Envelope] = []
        self._streams: dict[str, list[Envelope]] = {}
        self._by_id = _IdIndex()
        self._partitions: dict[tuple[str, int], PartitionInfo] = {}
        self._workers: dict[str, float] = {}
        self._held: dict[tuple[str, int], Held] = {}
        self._held_ids = 0
        self._outcomes: dict[str, Outcome] = {}
        self._documents: dict[str, dict[str, bytes]] = {}
        self._scheduled: dict[str, tuple[float, Scheduled]] = {}
        self._audit: list[AuditEntry] = []
        self._closed = False

    async def open(self) -> None:
        self._closed = False

    async def close(self) -> None:
        self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosed()

    async def commit(self, tx: Transaction) -> list[Appended]:
        return self.commit_now(tx)

    def commit_now(self, tx: Transaction) -> list[Appended]:
        """Every commit here is done at once: nothing in it waits."""
        if self._closed:
            raise StoreClosed()
        now = self._clock()
        appends = tx.appends
        # tx.beyond_appends(), written out: a call more shows in an invoke's time
        rest = bool(
            tx.checkpoints
            or tx.held
            or tx.unheld
            or tx.outcomes
            or tx.documents
            or tx.scheduled
            or tx.unscheduled
            or tx.audit
        )
        if len(appends) != 1 or (rest and tx.checkpoints):
            results = self._append_staged(tx, now)
        else:
            # The common case: one append is all there is to validate, so once it is validated
            # it is applied directly, with nothing to stage. (The envelopes are built here as in
            # _append_staged, written out rather than shared: a call per message shows here.)
            op = appends[0]
            stream = op.stream
            messages = op.messages
            by_id = self._by_id
            found = self._streams.get(stream)
            version = len(found) if found is not None else 0
            if len(messages) == 1:  # by_id.fresh(messages), written out: a call shows here
                first = messages[0].id
                new = first > by_id._last or first not in by_id  # the first test is the usual
                fresh = messages if new else ()
            else:
                fresh = by_id.fresh(messages)
            if not fresh and messages:
                known = by_id.get(messages[-1].id)
                assert known is not None
                results = [Appended(stream, version, known.global_position)]
            else:
                expected = op.expected_version
                if expected != ANY and expected != version:
                    raise WrongExpectedVersion(stream, expected, version)
                log = self._log
                position = len(log)
                if fresh:
                    if found is None:
                        found = self._streams[stream] = []
                    for m in fresh:
                        version += 1
                        position += 1
                        env = Envelope(
                            m.id,
                            m.kind,
                            m.type,
                            m.version,
                            stream,
                            version,
                            position,
                            now,
                            m.data,
                            m.correlation_id,
                            m.causation_id,
                            m.headers,
                        )
                        log.append(env)
                        found.append(env)
                        # by_id.add(env), written out: a call shows here
                        if m.id > by_id._last:
                            by_id._ids.append(m.id)
                            by_id._envs.append(env)
                            by_id._last = m.id
                        else:
                            by_id._others[m.id] = env
                results = [Appended(stream, version, position)]
        if rest:
            self._apply_rest(tx, now)
        return results

    def _append_staged(self, tx: Transaction, now: float) -> list[Appended]:
        """Validate every append and checkpoint before changing anything, so that a failed
        commit leaves no trace; then apply the appends."""
        by_id = self._by_id
        streams = self._streams
        versions: dict[str, int] = {}
        position = len(self._log)
        staged: list[Envelope] = []
        results: list[Appended] = []
        for op in tx.appends:
            stream = op.stream
            messages = op.messages
            version = versions.get(stream)
            if version is None:
                version = len(streams.get(stream, ()))
            fresh = by_id.fresh(messages)
            if not fresh and messages:
                known = by_id.get(messages[-1].id)
                assert known is not None
                results.append(Appended(stream, version, known.global_position))
                continue
            if op.expected_version != ANY and op.expected_version != version:
                raise WrongExpectedVersion(stream, op.expected_version, version)
            for m in fresh:
                version += 1
                position += 1
                staged.append(
                    Envelope(
                        m.id,
                        m.kind,
                        m.type,
                        m.version,
                        stream,
                        version,
                        position,
                        now,
                        m.data,
                        m.correlation_id,
                        m.causation_id,
                        m.headers,
                    )
                )
            versions[stream] = version
            results.append(Appended(stream, version, position))
        for move in tx.checkpoints:
            part = self._partitions.get((move.subscription, move.partition))
            if part is None or part.owner != move.owner or part.position != move.expected:
                raise LeaseLost()
        log = self._log
        for env in staged:
            log.append(env)
            found = streams.get(env.stream)
            if found is None:
                streams[env.stream] = [env]
            else:
                found.append(env)
            by_id.add(env)
        return results

    def _apply_rest(self, tx: Transaction, now: float) -> None:
        for move in tx.checkpoints:
            key = (move.subscription, move.partition)
            self._partitions[key] = msgspec.structs.replace(
                self._partitions[key], position=move.position
            )
        for held in tx.held:
            key = (held.subscription, held.global_position)
            old = self._held.get(key)
            if old is None:
                self._held_ids += 1
            row = msgspec.structs.replace(
                held,
                id=old.id if old is not None else self._held_ids,
                due_at=now + held.due_in if held.due_in is not None else None,
                due_in=None,
                first_failed_at=(old.first_failed_at if old is not None else None)
                or held.first_failed_at,
            )
            self._held[key] = row
        for gone in tx.unheld:
            self._held.pop((gone.subscription, gone.global_position), None)
        for outcome in tx.outcomes:
            self._outcomes[outcome.message_id] = msgspec.structs.replace(outcome, updated_at=now)
        for doc in tx.documents:
            collection = self._documents.setdefault(doc.collection, {})
            if doc.data is None:
                collection.pop(doc.key, None)
            else:
                collection[doc.key] = doc.data
        for item in tx.scheduled:
            due = item.at if item.at is not None else now + (item.delay or 0.0)
            self._scheduled[item.message.id] = (due, item)
        for message_id in tx.unscheduled:
            self._scheduled.pop(message_id, None)
        for entry in tx.audit:
            self._audit.append(msgspec.structs.replace(entry, at=now, id=len(self._audit) + 1))

    async def read_stream(
        self,
        stream: str,
        *,
        from_position: int | None = None,
        backwards: bool = False,
        limit: int | None = None,
    ) -> list[Envelope]:
        self._check_open()
        messages = self._streams.get(stream, [])
        if backwards:
            end = len(messages) if from_position is None else min(from_position, len(messages))
            selected = messages[:end][::-1]
        else:
            start = 1 if from_position is None else max(from_position, 1)
            selected = messages[start - 1 :]
        return selected[:limit] if limit is not None else list(selected)

    async def read_all(
        self,
        *,
        after: int = 0,
        types: Sequence[str] | None = None,
        limit: int = 1000,
    ) -> list[Envelope]:
        self._check_open()
        wanted = set(types) if types is not None else None
        out: list[Envelope] = []
        log = self._log
        for index in range(max(after, 0), len(log)):
            env = log[index]
            if wanted is None or env.type in wanted:
                out.append(env)
                if len(out) >= limit:
                    break
        return out

    async def stream_version(self, stream: str) -> int:
        self._check_open()
        return len(self._streams.get(stream, ()))

    async def last_position(self) -> int:
        self._check_open()
        return len(self._log)

    async def streams(self, *, prefix: str = "", limit: int = 100) -> list[tuple[str, int]]:
        self._check_open()
        names = sorted(s for s in self._streams if s.startswith(prefix))[:limit]
        return [(s, len(self._streams[s])) for s in names]

    # --- subscriptions ----------------------------------------------------------------------------

    async def now(self) -> float:
        return self._clock()

    async def setup_subscription(self, name: str, partitions: int, position: int) -> None:
        self._check_open()
        existing = [p for (sub, _), p in self._partitions.items() if sub == name]
        if existing:
            if existing[0].partitions != partitions:
                raise ConfigurationError(
                    f"subscription {name!r} has {existing[0].partitions} partitions, not {partitions}"
                )
            return
        for n in range(partitions):
            self._partitions[(name, n)] = PartitionInfo(name, n, partitions, position, None, None)

    async def heartbeat(self, worker: str, ttl: float) -> int:
        self._check_open()
        now = self._clock()
        self._workers[worker] = now
        return sum(1 for seen in self._workers.values() if seen > now - ttl)

    async def claim(self, name: str, worker: str, want: int, ttl: float) -> dict[int, int]:
        self._check_open()
        now = self._clock()
        mine = sorted(
            n for (sub, n), p in self._partitions.items() if sub == name and p.owner == worker
        )
        for n in mine[want:]:
            self._partitions[(name, n)] = msgspec.structs.replace(
                self._partitions[(name, n)], owner=None, lease_expires=None
            )
        mine = mine[:want]
        for (sub, n), p in sorted(self._partitions.items()):
            if sub != name or len(mine) >= want or n in mine:
                continue
            if p.owner is None or (p.lease_expires or 0) < now:
                mine.append(n)
        held = {}
        for n in mine:
            p = self._partitions[(name, n)]
            self._partitions[(name, n)] = msgspec.structs.replace(
                p, owner=worker, lease_expires=now + ttl
            )
            held[n] = p.position
        return held

    async def release(self, worker: str) -> None:
        for key, p in list(self._partitions.items()):
            if p.owner == worker:
                self._partitions[key] = msgspec.structs.replace(p, owner=None, lease_expires=None)
        self._workers.pop(worker, None)

    async def partitions(self, name: str | None = None) -> list[PartitionInfo]:
        self._check_open()
        return [p for key, p in sorted(self._partitions.items()) if name is None or key[0] == name]

    # --- held messages ----------------------------------------------------------------------------

    async def held(
        self,
        *,
        subscription: str | None = None,
        stream: str | None = None,
        status: str | None = None,
        id: int | None = None,
        limit: int = 1000,
    ) -> list[Held]:
        self._check_open()
        rows = [
            h
            for _, h in sorted(self._held.items())
            if (subscription is None or h.subscription == subscription)
            and (stream is None or h.stream == stream)
            and (status is None or h.status == status)
            and (id is None or h.id == id)
        ]
        return rows[:limit]

    async def held_streams(self, subscription: str, partitions: Sequence[int]) -> set[str]:
        self._check_open()
        wanted = set(partitions)
        return {
            h.stream
            for h in self._held.values()
            if h.subscription == subscription and h.partition in wanted
        }

    async def due_streams(
        self, subscription: str, partitions: Sequence[int], *, sequenced: bool = True
    ) -> list[str]:
        self._check_open()
        wanted = set(partitions)
        now = self._clock()
        seen: set[str] = set()
        due: list[str] = []
        for _, h in sorted(self._held.items()):
            if h.subscription != subscription or h.partition not in wanted:
                continue
            if sequenced and h.stream in seen:
                continue
            seen.add(h.stream)
            ready = h.status == REPLAY or (h.status == RETRYING and (h.due_at or 0) <= now)
            if ready and h.stream not in due:
                due.append(h.stream)
        return due

    # --- outcomes, schedule, documents, audit -----------------------------------------------------

    async def outcome(self, message_id: str) -> Outcome | None:
        self._check_open()
        return self._outcomes.get(message_id)

    async def release_due(self, limit: int = 500) -> int:
        self._check_open()
        now = self._clock()
        due = sorted((at, mid) for mid, (at, _) in self._scheduled.items() if at <= now)[:limit]
        if not due:
            return 0
        tx = Transaction(unscheduled=[mid for _, mid in due])
        for _, mid in due:
            item = self._scheduled[mid][1]
            tx.appends.append(AppendOp(item.stream, [item.message], ANY))
        await self.commit(tx)
        return len(due)

    async def next_due(self) -> float | None:
        self._check_open()
        if not self._scheduled:
            return None
        return max(0.0, min(at for at, _ in self._scheduled.values()) - self._clock())

    async def get_document(self, collection: str, key: str) -> bytes | None:
        self._check_open()
        return self._documents.get(collection, {}).get(key)

    async def documents(self, collection: str, *, limit: int = 1000) -> list[tuple[str, bytes]]:
        self._check_open()
        return sorted(self._documents.get(collection, {}).items())[:limit]

    async def audit_entries(self, *, limit: int = 100) -> list[AuditEntry]:
        self._check_open()
        return list(reversed(self._audit))[:limit]
