"""The in-memory store: for unit tests and the test harness, with the same semantics as the others.

It keeps payloads encoded, exactly as a database would, so code tested against it behaves the same
on SQLite and PostgreSQL.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import msgspec

from tidings.backends._plan import Head, Plan, plan_group
from tidings.errors import (
    ConfigurationError,
    StoreClosed,
    SubscriptionInUse,
    SubscriptionNotFound,
)
from tidings.messages import RESERVED_PREFIX, Envelope
from tidings.records import (
    ANY,
    REPLAY,
    RETRYING,
    Appended,
    AppendOp,
    AuditEntry,
    Backlog,
    Document,
    Held,
    Outcome,
    PartitionInfo,
    Scheduled,
    Transaction,
    TypeCount,
)
from tidings.store import Store

_ABSENT = Document(None, 0)


class MemoryStore(Store):
    """A store that lives in this process's memory and is gone when it ends."""

    url = "memory://"

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        #: the store's clock (epoch seconds); the test harness gives it one it can move forward
        self._clock = clock
        self._log: list[Envelope] = []
        self._streams: dict[str, list[Envelope]] = {}
        #: stream -> version, and message id -> global position: kept by planning (see _head)
        self._versions: dict[str, int] = {}
        self._positions: dict[str, int] = {}
        self._plan_head = Head(0, 0.0, self._versions, self._positions, {})
        self._partitions: dict[tuple[str, int], PartitionInfo] = {}
        self._workers: dict[str, float] = {}
        self._held: dict[tuple[str, int], Held] = {}
        self._held_ids = 0
        self._outcomes: dict[str, Outcome] = {}
        #: collection -> key -> document (a deleted one kept, with no data, for its version)
        self._documents: dict[str, dict[str, Document]] = {}
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
        if self._closed:
            raise StoreClosed()
        plan = plan_group([tx], self._head(tx))
        ((appended, error),) = plan.results
        if error is not None:
            raise error
        assert appended is not None
        self._write(plan)
        return appended

    def _head(self, tx: Transaction) -> Head:
        """What planning ``tx`` needs to know of the store: one Head kept for the store, holding
        its own indexes of stream versions and message ids (which planning updates), and the
        partitions and documents ``tx`` touches (read again for each transaction that has any)."""
        head = self._plan_head
        head.top, head.now = len(self._log), self._clock()
        if tx.checkpoints:
            head.partitions = {
                key: (part.owner, part.position)
                for move in tx.checkpoints
                if (part := self._partitions.get(key := (move.subscription, move.partition)))
                is not None
            }
        if tx.documents:
            head.documents = {
                (doc.collection, doc.key): found.version
                for doc in tx.documents
                if (found := self._documents.get(doc.collection, {}).get(doc.key)) is not None
            }
        return head

    def _write(self, plan: Plan) -> None:
        now = plan.now
        for gp, stream, sp, mid, kind, type_, version, data, corr, cause, headers, at in plan.rows:
            env = Envelope(
                mid, kind, type_, version, stream, sp, gp, at, data, corr, cause, headers
            )
            self._log.append(env)
            found = self._streams.get(stream)
            if found is None:
                self._streams[stream] = [env]
            else:
                found.append(env)
        if not plan.applied:  # the rest of a plan comes only from transactions of more than appends
            return
        for key, position in plan.checkpoints.items():
            self._partitions[key] = msgspec.structs.replace(
                self._partitions[key], position=position
            )
        for outcome in plan.outcomes.values():
            self._outcomes[outcome.message_id] = msgspec.structs.replace(outcome, updated_at=now)
        for (collection, name), (data, version) in plan.documents.items():
            self._documents.setdefault(collection, {})[name] = Document(data, version)
        for tx in plan.applied:
            self._apply_rest(tx, now)

    def _apply_rest(self, tx: Transaction, now: float) -> None:
        """What a transaction holds besides appends, checkpoints, outcomes and documents."""
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

    async def streams(
        self, *, prefix: str = "", limit: int = 100, internal: bool = False
    ) -> list[tuple[str, int]]:
        self._check_open()
        names = sorted(
            s
            for s in self._streams
            if s.startswith(prefix) and (internal or not s.startswith(RESERVED_PREFIX))
        )[:limit]
        return [(s, len(self._streams[s])) for s in names]

    async def type_counts(self) -> list[TypeCount]:
        self._check_open()
        found: dict[tuple[str, str], TypeCount] = {}
        for env in self._log:
            key = (env.kind, env.type)
            seen = found.get(key)
            found[key] = (
                TypeCount(env.kind, env.type, 1, env.global_position, env.recorded_at)
                if seen is None
                else msgspec.structs.replace(seen, count=seen.count + 1)
            )
        return list(found.values())

    async def backlog(self, types: Sequence[str], bounds: Sequence[int]) -> list[Backlog]:
        self._check_open()
        if not types or not bounds:
            return []
        wanted, spans = set(types), sorted(set(bounds))
        found: dict[tuple[str, int], Backlog] = {}
        for env in self._log[spans[0] :]:
            if env.type not in wanted:
                continue
            after = max(b for b in spans if b < env.global_position)
            seen = found.get((env.stream, after))
            found[(env.stream, after)] = (
                Backlog(env.stream, after, 1, env.recorded_at)
                if seen is None
                else msgspec.structs.replace(seen, count=seen.count + 1)
            )
        return list(found.values())

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

    def _operate(self, name: str, audit: AuditEntry, force: bool) -> list[tuple[str, int]]:
        """The subscription's partition keys, checked for an operator's action; ``audit`` written."""
        keys = [key for key in self._partitions if key[0] == name]
        if not keys:
            raise SubscriptionNotFound(
                f"no subscription named {name!r}; see `tidings subscriptions`"
            )
        now = self._clock()
        owners = {
            p.owner
            for key in keys
            if (p := self._partitions[key]).owner is not None and (p.lease_expires or 0) > now
        }
        if owners and not force:
            raise SubscriptionInUse(
                f"subscription {name!r} is run by {', '.join(sorted(owners))}: stop it first, "
                "or force it"
            )
        self._apply_rest(Transaction(audit=[audit]), now)
        return keys

    async def reset_subscription(
        self, name: str, position: int, audit: AuditEntry, *, force: bool = False
    ) -> None:
        self._check_open()
        for key in self._operate(name, audit, force):
            self._partitions[key] = msgspec.structs.replace(
                self._partitions[key], position=position
            )
        for sub, gp in list(self._held):
            if sub == name and gp > position:
                del self._held[(sub, gp)]

    async def delete_subscription(
        self, name: str, audit: AuditEntry, *, force: bool = False
    ) -> None:
        self._check_open()
        for key in self._operate(name, audit, force):
            del self._partitions[key]
        for key in [k for k in self._held if k[0] == name]:
            del self._held[key]

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

    async def held_counts(self) -> list[tuple[str, str, int]]:
        self._check_open()
        counts: dict[tuple[str, str], int] = {}
        for h in self._held.values():
            counts[(h.subscription, h.status)] = counts.get((h.subscription, h.status), 0) + 1
        return [(sub, status, n) for (sub, status), n in sorted(counts.items())]

    # --- outcomes, schedule, documents, audit -----------------------------------------------------

    async def outcome(self, message_id: str) -> Outcome | None:
        self._check_open()
        return self._outcomes.get(message_id)

    async def outcomes(self, *, status: str | None = None, limit: int = 100) -> list[Outcome]:
        self._check_open()
        found = [o for o in self._outcomes.values() if status is None or o.status == status]
        return sorted(found, key=lambda o: o.updated_at, reverse=True)[:limit]

    async def outcome_counts(self) -> list[tuple[str, int]]:
        self._check_open()
        counts: dict[str, int] = {}
        for o in self._outcomes.values():
            counts[o.status] = counts.get(o.status, 0) + 1
        return sorted(counts.items())

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

    async def document(self, collection: str, key: str) -> Document:
        self._check_open()
        return self._documents.get(collection, {}).get(key, _ABSENT)

    async def documents(self, collection: str, *, limit: int = 1000) -> list[tuple[str, bytes]]:
        self._check_open()
        found = self._documents.get(collection, {})
        return [(k, d.data) for k, d in sorted(found.items()) if d.data is not None][:limit]

    async def audit_entries(self, *, limit: int = 100) -> list[AuditEntry]:
        self._check_open()
        return list(reversed(self._audit))[:limit]
