"""A runner: one subscription in one worker — its batches and its held messages.

Its leases are :mod:`tidings.delivery.leases`; :mod:`tidings.delivery.worker` has the whole picture.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import msgspec

from tidings.context import Overlay, Services
from tidings.delivery.alerts import Alerts
from tidings.delivery.handling import OUTAGE, Batch, Handling, Route, failure
from tidings.delivery.leases import Leases
from tidings.delivery.marks import EDITS, edit_key, edited
from tidings.delivery.observer import Observer
from tidings.errors import DocumentConflict, LeaseLost, StoreError, WrongExpectedVersion
from tidings.messages import Envelope
from tidings.records import (
    DEAD,
    REPLAY,
    RETRYING,
    WAITING,
    CheckpointMove,
    DocumentWrite,
    Held,
    HeldDelete,
)
from tidings.store import Store

log = logging.getLogger("tidings.worker")

#: How many times a message is handled again after a document conflict before the conflict
#: counts as a failed attempt.
CONFLICTS = 20


@dataclass(frozen=True)
class Settings:
    """How a worker runs its subscriptions (see :class:`~tidings.delivery.worker.Worker`)."""

    worker_id: str
    lease_ttl: float
    batch_size: int
    replay_interval: float
    rng: random.Random
    #: told of handlings, leases held and lost (None: nobody watches)
    observer: Observer | None = None

    @property
    def slice_time(self) -> float:
        """How long a runner handles messages before it commits them: a third of the lease, so
        that a batch commits well within it and a lost lease costs one slice of work."""
        return self.lease_ttl / 3


class Runner:
    """Runs one subscription in one worker, on the partitions its :class:`Leases` hold (the
    worker's heartbeat claims them)."""

    def __init__(
        self,
        route: Route,
        store: Store,
        services: Services,
        alerts: Alerts,
        settings: Settings,
    ) -> None:
        self.route = route
        self.store = store
        self.services = services
        self.alerts = alerts
        self.settings = settings
        self.handling = Handling(route, services, settings.rng, settings.observer)
        #: streams whose later messages wait behind a held one (touched by the runner's task only)
        self.blocked: set[str] = set()
        self.wakeup = asyncio.Event()
        self.leases = Leases(
            route.name,
            route.partitions,
            route.start,
            store,
            settings.worker_id,
            settings.lease_ttl,
            self.wakeup,
            self._in_flight,
            settings.observer,
        )
        self.next_replay = 0.0
        self._busy = False
        #: a slice handled but not committed because the store was down: committed first when
        #: the store is back, so that its handlers do not run again
        self._unsent: Callable[[], Awaitable[None]] | None = None

    def _in_flight(self) -> bool:
        return self._busy or self._unsent is not None

    # --- one step -----------------------------------------------------------------------------

    async def step(self, *, replay: bool = False) -> bool:
        """Deliver one slice of a batch, and replay held streams that are due. Whether anything
        happened."""
        leases = self.leases
        if leases.claim_due:
            await leases.claim()
        if not leases.positions:
            self._unsent = None  # its leases are gone: the new holders handle it again
            return False
        await leases.settled()  # a claim in flight may still release partitions
        self._busy = True  # at once: no claim starts in between
        try:
            unsent, self._unsent = self._unsent, None
            if unsent is not None:
                await unsent()
                return True
            if leases.changed:
                leases.changed = False
                if self.route.policy.sequenced:
                    self.blocked = await self.store.held_streams(
                        self.route.name, list(leases.positions)
                    )
            did = await self.deliver_batch()
            if replay or time.monotonic() >= self.next_replay:
                self.next_replay = time.monotonic() + self.settings.replay_interval
                did = await self.replay_due() or did
        finally:
            self._busy = False
        return did

    async def deliver_batch(self) -> bool:
        """Read a batch and handle this runner's messages in it for at most one slice time; commit
        them with the checkpoints moved past the last one handled."""
        held = dict(self.leases.positions)
        envs = await self.store.read_all(
            after=min(held.values()),
            types=self.route.types,
            limit=self.settings.batch_size,
        )
        if not envs:
            return False
        mine = self.leases.mine(envs, held)
        last = envs[-1].global_position
        deadline = time.monotonic() + self.settings.slice_time
        blocked_before = set(self.blocked)
        batch = self._batch(overlay={})
        outage: BaseException | None = None
        for index, (env, partition) in enumerate(mine):
            if index and time.monotonic() >= deadline:
                # Everything before this message is handled: commit that, the rest comes next.
                mine, last = mine[:index], env.global_position - 1
                break
            if not held.keys() <= self.leases.positions.keys():
                # The heartbeat found a partition of this slice taken over: its commit will be
                # refused, so handle nothing more of it.
                mine, last = mine[:index], env.global_position - 1
                break
            if self.route.policy.sequenced and env.stream in self.blocked:
                batch.wait(env, partition)
                continue
            try:
                handled = await self.handling.handle(env, 0, immediate=True, overlay=batch.overlay)
            except OUTAGE as exc:
                # The store is down, not this message: keep what is handled, then pause.
                mine, last, outage = mine[:index], env.global_position - 1, exc
                break
            batch.add(handled, env, partition)
        batch.tx.checkpoints.extend(self.leases.moves(held, last))
        if batch.tx.checkpoints or batch.tx.held:
            await self._finish(batch, mine, held, last, blocked_before)
        if outage is not None:
            raise outage
        return True

    async def _finish(
        self,
        batch: Batch,
        mine: Sequence[tuple[Envelope, int]],
        held: dict[int, int],
        last: int,
        blocked_before: set[str],
    ) -> None:
        """Commit a handled slice; while the store is down, keep it to commit when it is back."""
        try:
            await self._commit(batch, len(mine))
        except OUTAGE:

            async def again() -> None:
                await self._finish(batch, mine, held, last, blocked_before)

            self._unsent = again
            raise
        except (WrongExpectedVersion, StoreError) as exc:
            # One handler's writes cannot be committed (a concurrent append, a refused row):
            # commit message by message, so that only that message is retried.
            log.info(
                "%s: batch commit failed (%s); committing one message at a time",
                self.route.name,
                exc,
            )
            self.blocked = blocked_before
            await self._one_by_one(mine, held, last)

    def _batch(self, overlay: Overlay | None = None) -> Batch:
        return Batch(self.route, self.services, self.blocked, overlay)

    async def _commit(self, batch: Batch, handled: int) -> bool:
        """Commit ``batch`` (of ``handled`` messages), fenced by its checkpoint moves: move the
        checkpoints, say what it held or released and fire its alerts; or, when the lease was
        lost, let the partitions go and return False."""
        try:
            await self.services.committer.commit(batch.tx)
        except LeaseLost:
            self.leases.lost(handled)
            return False
        self.leases.moved(batch.tx.checkpoints)
        self._say_held(batch)
        for alert in batch.alerts:
            await self.alerts.fire(alert)
        return True

    def _say_held(self, batch: Batch) -> None:
        name = self.route.name
        for h in batch.tx.held:
            where = f"{h.type} {h.message_id} (stream {h.stream!r}, position {h.global_position})"
            if h.status == DEAD:
                log.warning(
                    "%s: parked %s after %d attempt(s): %s", name, where, h.attempts, h.error
                )
            elif h.status == RETRYING:
                log.info(
                    "%s: holding %s for a retry in %.1fs after attempt %d: %s",
                    name,
                    where,
                    h.due_in or 0.0,
                    h.attempts,
                    h.error,
                )
            elif h.status == REPLAY:
                log.info("%s: %s is next in line for a replay", name, where)
            else:
                log.debug("%s: %s waits behind its stream's held message", name, where)
        for gone in batch.tx.unheld:
            log.info("%s: released the held message at position %d", name, gone.global_position)

    async def _one_by_one(
        self, mine: Sequence[tuple[Envelope, int]], held: dict[int, int], last: int
    ) -> None:
        for env, partition in mine:
            position = self.leases.positions.get(partition)
            if position is None:
                return
            move = CheckpointMove(
                self.route.name, partition, self.settings.worker_id, position, env.global_position
            )
            attempts = conflicts = 0
            while True:
                batch = self._batch()
                batch.tx.checkpoints.append(move)
                if self.route.policy.sequenced and env.stream in self.blocked:
                    batch.wait(env, partition)
                    if not await self._commit(batch, 0):
                        return
                    break
                handled = await self.handling.handle(env, attempts, immediate=True, overlay=None)
                batch.add(handled, env, partition)
                try:
                    if not await self._commit(batch, 1):
                        return
                except WrongExpectedVersion as exc:
                    if await self._again(exc, conflicts):
                        conflicts += 1
                        continue
                    attempts = handled.attempts
                    if not self.route.policy.gives_up(attempts, exc):
                        continue
                    batch = self._batch()
                    batch.tx.checkpoints.append(move)
                    batch.add(failure(attempts, exc, "", [], final=True), env, partition)
                    if not await self._commit(batch, 1):
                        return
                break
        positions = self.leases.positions
        moves = self.leases.moves({p: positions[p] for p in held if p in positions}, last)
        if moves:
            batch = self._batch()
            batch.tx.checkpoints.extend(moves)
            await self._commit(batch, 0)

    async def _again(self, conflict: WrongExpectedVersion, conflicts: int) -> bool:
        """Whether to handle a message again on fresh reads after ``conflict``: a document
        conflict (another partition wrote a document this handler read) is not the handler's
        failure, up to ``CONFLICTS`` times; after a short jittered pause, so that the writers
        of one document take turns."""
        if not isinstance(conflict, DocumentConflict) or conflicts >= CONFLICTS:
            return False
        log.debug("%s: %s; handling the message again", self.route.name, conflict)
        await asyncio.sleep(self.settings.rng.uniform(0, 0.002 * 2 ** min(conflicts, 5)))
        return True

    # --- held messages ------------------------------------------------------------------------

    async def replay_due(self) -> bool:
        sequenced = self.route.policy.sequenced
        streams = await self.store.due_streams(
            self.route.name, list(self.leases.positions), sequenced=sequenced
        )
        now = await self.store.now() if streams and not sequenced else 0.0
        for stream in streams:
            await self._replay(stream, sequenced, now)
        return bool(streams)

    async def _replay(self, stream: str, sequenced: bool, now: float) -> None:
        """Handle a stream's held messages again: in order, stopping at the first that fails
        (sequenced); or each that is due on its own (park and move on)."""
        rows = await self.store.held(subscription=self.route.name, stream=stream)
        for index, row in enumerate(rows):
            position = self.leases.positions.get(row.partition)
            if position is None:
                return
            if not sequenced:
                if not (
                    row.status == REPLAY or (row.status == RETRYING and (row.due_at or 0) <= now)
                ):
                    continue
            elif index == 0 and row.status == DEAD:
                return
            found = await self.store.read_all(after=row.global_position - 1, limit=1)
            if not found or found[0].global_position != row.global_position:
                log.error(
                    "%s: held message at %d is missing from the log",
                    self.route.name,
                    row.global_position,
                )
                return
            env = found[0]
            edit = await edited(self.store, self.route.name, env) if row.status == REPLAY else None
            if edit is not None:
                env = edit
            # A message's first turn, or an operator's retry after a repair, gets the whole retry
            # policy from the start (its earlier attempts stay in the history).
            fresh = row.status in (WAITING, REPLAY)
            stay = CheckpointMove(
                self.route.name, row.partition, self.settings.worker_id, position, position
            )
            conflicts = 0
            while True:
                handled = await self.handling.handle(
                    env, 0 if fresh else row.attempts, immediate=fresh, overlay=None
                )
                batch = self._batch()
                batch.tx.checkpoints.append(stay)
                batch.add(handled, env, row.partition, row.history)
                done = handled.ok or handled.refused is not None
                if done:
                    batch.tx.unheld.append(HeldDelete(self.route.name, row.global_position))
                    if edit is not None:
                        batch.tx.documents.append(DocumentWrite(EDITS, edit_key(row), None))
                    if sequenced:
                        # The next in line becomes due in the same transaction: if this worker
                        # stops here, whoever takes the partition over carries on from it.
                        batch.tx.held.extend(_next_in_line(rows, index))
                conflict: WrongExpectedVersion | None = None
                try:
                    if not await self._commit(batch, 1):
                        return
                except WrongExpectedVersion as exc:
                    conflict = exc
                if conflict is None:
                    break
                if await self._again(conflict, conflicts):
                    conflicts += 1
                    continue
                batch = self._batch()
                batch.tx.checkpoints.append(stay)
                failed = self.handling.failed(handled.attempts, conflict, "", [])
                batch.add(failed, env, row.partition, row.history)
                if not await self._commit(batch, 1):
                    return
                done = False
                break
            if sequenced and not done:
                return
        self.blocked.discard(stream)


def _next_in_line(rows: Sequence[Held], index: int) -> list[Held]:
    """The waiting message after ``rows[index]``, marked for replay (none if there is none)."""
    after = rows[index + 1 : index + 2]
    return [
        msgspec.structs.replace(h, status=REPLAY, due_in=None) for h in after if h.status == WAITING
    ]
