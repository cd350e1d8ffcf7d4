"""The operator's view of subscriptions: their lag, who runs them, orphans, what the log holds
that nothing handles; and the audited actions reset and delete.

A subscription remembers the message types it was run with (a document in ``$subscriptions``):
a type it handled before that no class knows any more (a renamed class) is still read, and its
messages are dead-lettered with the cause instead of being skipped without a trace; and its lag
can be counted without the application at hand.
"""

from __future__ import annotations

import asyncio
import builtins
import dataclasses
import getpass
from collections.abc import Awaitable, Callable, Iterable, Sequence

import msgspec

from tidings.context import Services
from tidings.delivery.handling import Route
from tidings.delivery.leases import partition_of
from tidings.errors import (
    ConfigurationError,
    NotCaughtUp,
    SubscriptionNotFound,
    UnknownMessageType,
)
from tidings.records import (
    DEAD,
    REPLAY,
    RETRYING,
    WAITING,
    AuditEntry,
    DocumentWrite,
    PartitionInfo,
    Transaction,
)
from tidings.registry import Handlers
from tidings.store import Store

#: The collection of documents where each subscription's types are remembered.
TYPES = "$subscriptions"


class Remembered(msgspec.Struct, frozen=True):
    """The types a subscription runs with now, and every type it has handled."""

    types: list[str]
    handled: list[str]


class PartitionState(msgspec.Struct, frozen=True):
    """One partition: its checkpoint, lease, and the messages beyond its checkpoint."""

    info: PartitionInfo
    #: messages of the subscription's types beyond the checkpoint (None: types unknown)
    pending: int | None
    #: seconds since the oldest of them was recorded
    oldest_age: float | None
    #: who holds the lease now (None when nobody does, or it ran out)
    owner: str | None


class SubscriptionState(msgspec.Struct, frozen=True):
    """A subscription as an operator sees it.

    ``pending`` counts the messages of its own types beyond its checkpoints (None when its types
    are not known: no App given and none remembered); ``parked`` (retrying, dead, or queued for
    replay) and ``waiting`` (behind a parked message of their stream) are counted apart.
    ``state`` is ``running`` (a worker holds a lease), ``stopped``, or ``orphaned`` (the App
    given has no handler for it: it was renamed or removed; delete it, or reset it).
    """

    name: str
    partitions: list[PartitionState]
    types: list[str] | None
    pending: int | None
    oldest_age: float | None
    parked: int
    waiting: int
    workers: list[str]
    state: str


class Unhandled(msgspec.Struct, frozen=True):
    """Messages in the log nothing in the App handles: sent commands without a handler, or a
    type no class knows."""

    kind: str
    type: str
    count: int
    first_recorded_at: float
    reason: str


def actor_name(actor: str | None) -> str:
    """Who does an operator action: as given, else the user running the process."""
    if actor:
        return actor
    try:
        return getpass.getuser()
    except Exception:
        return "unknown"


def routes_of(handlers: Handlers) -> list[Route]:
    """The routes of an App's handlers: its subscribers and the handlers of sent commands."""
    routes = [Route.for_subscriber(s) for s in handlers.subscribers.values()]
    routes += [Route.for_command(h) for h in handlers.commands.values()]
    return routes


class Subscriptions:
    """``app.subscriptions``: list them with their lag; reset and delete them; report what
    nothing handles. ``judge`` says whether ``handlers`` are the application's own (else a
    subscription cannot be called orphaned, nor a type unknown). ``ready`` opens the store
    (when given)."""

    def __init__(
        self,
        store: Store,
        handlers: Handlers,
        services: Services,
        ready: Callable[[], Awaitable[object]] | None = None,
        *,
        judge: bool = True,
    ) -> None:
        self.store = store
        self.handlers = handlers
        self.services = services
        self.ready = ready
        self.judge = judge

    async def _ready(self) -> None:
        if self.ready is not None:
            await self.ready()

    def _unknown(self, type_name: str) -> bool:
        try:
            self.services.factory.registry.resolve(type_name)
        except UnknownMessageType:
            return True
        return False

    async def _remembered(self, name: str) -> Remembered | None:
        found = await self.store.get_document(TYPES, name)
        return None if found is None else msgspec.json.decode(found, type=Remembered)

    async def prepare(self, routes: Iterable[Route]) -> builtins.list[Route]:
        """Remember each route's types; return the routes, each also reading the types it
        handled before that no class knows any more (so that those are dead-lettered)."""
        await self._ready()
        prepared, writes = [], []
        for route in routes:
            before = await self._remembered(route.name)
            handled = set(before.handled) if before is not None else set()
            lost = tuple(sorted(t for t in handled - set(route.types) if self._unknown(t)))
            now = Remembered(list(route.types), sorted(handled | set(route.types)))
            if now != before:
                writes.append(DocumentWrite(TYPES, route.name, msgspec.json.encode(now)))
            prepared.append(dataclasses.replace(route, types=route.types + lost, lost=lost))
        if writes:
            await self.services.committer.commit(Transaction(documents=writes))
        return prepared

    async def unhandled(self) -> builtins.list[Unhandled]:
        """Sent commands no handler takes, and (with the App's own handlers) types no class
        knows: each with how many the log holds."""
        await self._ready()
        commands = {h.command.__type_name__ for h in self.handlers.commands.values()}
        commands |= {cls.__type_name__ for cls in self.handlers.elsewhere}
        if not self.judge:
            commands = {
                p.subscription.removeprefix("cmd:")
                for p in await self.store.partitions()
                if p.subscription.startswith("cmd:")
            }
        found = []
        for count in await self.store.type_counts():
            if count.kind == "command" and count.type not in commands:
                reason = "sent, and nothing handles this command type: register a handler"
            elif self.judge and self._unknown(count.type):
                reason = (
                    "no class has this type name: a renamed class keeps its stored name with "
                    "type_name=...; import or register the module that defines it"
                )
            else:
                continue
            found.append(
                Unhandled(count.kind, count.type, count.count, count.first_recorded_at, reason)
            )
        return found

    async def list(self, name: str | None = None) -> builtins.list[SubscriptionState]:
        """Every subscription (or one) with its partitions, lag, held counts and workers."""
        await self._ready()
        now = await self.store.now()
        routes = {r.name: r for r in routes_of(self.handlers)}
        held: dict[tuple[str, str], int] = {
            (sub, status): n for sub, status, n in await self.store.held_counts()
        }
        by_name: dict[str, builtins.list[PartitionInfo]] = {}
        for part in await self.store.partitions(name):
            by_name.setdefault(part.subscription, []).append(part)
        states = []
        for sub, parts in by_name.items():
            route = routes.get(sub)
            if route is not None:
                types: builtins.list[str] | None = list(route.types)
            else:
                remembered = await self._remembered(sub)
                types = remembered.types if remembered is not None else None
            known = route is not None or sub in self.handlers.relays
            states.append(await self._state(sub, parts, types, held, now, known))
        return states

    async def _state(
        self,
        name: str,
        parts: Sequence[PartitionInfo],
        types: builtins.list[str] | None,
        held: dict[tuple[str, str], int],
        now: float,
        registered: bool,
    ) -> SubscriptionState:
        pending: dict[int, int] = {p.partition: 0 for p in parts}
        oldest: dict[int, float] = {}
        if types is not None:
            checkpoints = {p.partition: p.position for p in parts}
            for row in await self.store.backlog(types, sorted(set(checkpoints.values()))):
                partition = partition_of(row.stream, len(parts))
                if row.after >= checkpoints[partition]:
                    pending[partition] += row.count
                    oldest[partition] = min(oldest.get(partition, row.oldest_at), row.oldest_at)
        states = []
        for p in parts:
            owner = p.owner if p.lease_expires is not None and p.lease_expires > now else None
            # recorded_at may be this process's clock and now the store's: never below zero
            age = max(0.0, now - oldest[p.partition]) if p.partition in oldest else None
            count = pending[p.partition] if types is not None else None
            states.append(PartitionState(p, count, age, owner))
        workers = sorted({s.owner for s in states if s.owner is not None})
        state = "running" if workers else "stopped"
        if self.judge and not registered:
            state = "orphaned"
        ages = [s.oldest_age for s in states if s.oldest_age is not None]
        return SubscriptionState(
            name,
            states,
            types,
            sum(pending.values()) if types is not None else None,
            max(ages) if ages else None,
            sum(held.get((name, status), 0) for status in (RETRYING, DEAD, REPLAY)),
            held.get((name, WAITING), 0),
            workers,
            state,
        )

    async def caught_up(self, name: str, position: int, timeout: float) -> None:
        """Return once the subscription has handled every message of its types up to the global
        ``position`` (none is beyond a checkpoint, or held for a retry); else ``NotCaughtUp``
        after ``timeout`` seconds, saying how far it got. Woken by commits of workers in this
        process; polls (5 ms doubling to 250 ms) for workers elsewhere."""
        await self._ready()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        poll = 0.005
        while True:
            behind = await self._behind(name, position)
            if behind is None:
                return
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise NotCaughtUp(
                    f"subscription {name!r} has not caught up with position {position} in "
                    f"{timeout}s: {behind}; is a worker running it? (`tidings subscriptions`)"
                )
            await self.services.committer.checkpoints_moved(min(poll, remaining))
            poll = min(poll * 2, 0.25)

    async def _behind(self, name: str, position: int) -> str | None:
        """How far the subscription is from having handled everything up to ``position``, or
        None when it has."""
        parts = await self.store.partitions(name)
        route = next((r for r in routes_of(self.handlers) if r.name == name), None)
        if not parts:
            if route is None:
                raise SubscriptionNotFound(
                    f"no subscription named {name!r}: give a subscriber's name (or 'cmd:<type>' "
                    "for a sent command's handler); see `tidings subscriptions`"
                )
            return "no worker has started it yet"
        held = [
            h
            for h in await self.store.held(subscription=name)
            if h.global_position <= position and h.status != DEAD
        ]
        checkpoints = {p.partition: p.position for p in parts}
        lowest = min(checkpoints.values())
        pending = 0
        if lowest < position:
            if route is not None:
                types: builtins.list[str] | None = builtins.list(route.types)
            else:
                remembered = await self._remembered(name)
                types = remembered.types if remembered is not None else None
            if types is None:
                pending = -1
            else:
                bounds = sorted({*checkpoints.values(), position})
                for row in await self.store.backlog(types, bounds):
                    partition = partition_of(row.stream, len(parts))
                    if checkpoints[partition] <= row.after < position:
                        pending += row.count
        if pending == 0 and not held:
            return None
        count = "some" if pending < 0 else str(pending)
        return (
            f"{count} message(s) up to it not handled yet and {len(held)} held for a retry; "
            f"its checkpoints are at {lowest}..{max(checkpoints.values())}"
        )

    async def reset(
        self,
        name: str,
        to: int | str,
        *,
        actor: str | None = None,
        force: bool = False,
    ) -> int:
        """Move the subscription's checkpoints ``to`` ``"start"`` (everything is delivered
        again), ``"end"`` (everything recorded so far is passed over) or a global position;
        held messages beyond it are dropped (they are delivered again). Refused while a worker
        runs it, unless ``force``. Returns the position."""
        await self._ready()
        last = await self.store.last_position()
        if to == "start":
            position = 0
        elif to == "end":
            position = last
        elif isinstance(to, int) and not isinstance(to, bool) and 0 <= to <= last:
            position = to
        else:
            raise ConfigurationError(
                f"reset {name!r} to {to!r}: give 'start', 'end' or a global position from 0 to "
                f"{last} (the log's last position)"
            )
        before = sorted({p.position for p in await self.store.partitions(name)})
        audit = AuditEntry(
            actor_name(actor),
            "subscription.reset",
            name,
            f"to {position} (checkpoints were {', '.join(map(str, before)) or 'none'})",
        )
        await self.store.reset_subscription(name, position, audit, force=force)
        return position

    async def delete(self, name: str, *, actor: str | None = None, force: bool = False) -> None:
        """Forget the subscription: its checkpoints, its held messages, the types it remembers.
        Refused while a worker runs it, unless ``force``. A worker that runs it again later
        starts it afresh."""
        await self._ready()
        audit = AuditEntry(actor_name(actor), "subscription.delete", name, "")
        await self.store.delete_subscription(name, audit, force=force)
        await self.services.committer.commit(
            Transaction(documents=[DocumentWrite(TYPES, name, None)])
        )

    async def unattended(self, names: Iterable[str]) -> builtins.list[str]:
        """Those of ``names`` no worker holds a lease on now (nothing replays their messages)."""
        await self._ready()
        now = await self.store.now()
        return [
            name
            for name in sorted(set(names))
            if not any(
                p.owner is not None and (p.lease_expires or 0) > now
                for p in await self.store.partitions(name)
            )
        ]
