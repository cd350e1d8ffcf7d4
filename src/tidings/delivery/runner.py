"""A runner: one subscription in one worker — its leases, its batches, its held messages.

See :mod:`tidings.delivery.worker` for the whole picture.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import msgspec

from tidings.context import Overlay, Services
from tidings.delivery.alerts import Alerts
from tidings.delivery.handling import Batch, Handling, Route, failure
from tidings.errors import LeaseLost, StoreError, WrongExpectedVersion
from tidings.messages import Envelope
from tidings.store import (
    DEAD,
    REPLAY,
    RETRYING,
    WAITING,
    CheckpointMove,
    Held,
    HeldDelete,
    Store,
)

log = logging.getLogger("tidings.worker")


def partition_of(stream: str, partitions: int) -> int:
    """The partition a stream belongs to (stable across processes and versions)."""
    return zlib.crc32(stream.encode()) % partitions


@dataclass(frozen=True)
class Settings:
    """How a worker runs its subscriptions (see :class:`~tidings.delivery.worker.Worker`)."""

    worker_id: str
    lease_ttl: float
    batch_size: int
    replay_interval: float
    rng: random.Random


class Runner:
    """Runs one subscription in one worker."""

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
        self.handling = Handling(route, services, settings.rng)
        self.positions: dict[int, int] = {}
        self.blocked: set[str] = set()
        self.wakeup = asyncio.Event()
        self.next_claim = 0.0
        self.next_replay = 0.0
        self._partition_of: dict[str, int] = {}

    # --- leases -----------------------------------------------------------------------------

    async def setup(self) -> None:
        start = 0 if self.route.start == "beginning" else await self.store.last_position()
        await self.store.setup_subscription(self.route.name, self.route.partitions, start)

    async def claim(self, *, alone: bool = False) -> None:
        """Renew this worker's leases and take its fair share of the partitions.

        A worker is alive while its heartbeat is younger than half the lease; a killed worker's
        leases run out at most one lease after its last renewal, and the next claim is timed
        for that moment, so its partitions are taken over within the lease time.
        """
        me, ttl = self.settings.worker_id, self.settings.lease_ttl
        live = 1 if alone else await self.store.heartbeat(me, ttl / 2)
        want = math.ceil(self.route.partitions / max(1, live))
        before = set(self.positions)
        self.positions = await self.store.claim(self.route.name, me, want, ttl)
        if set(self.positions) != before and self.route.policy.sequenced:
            self.blocked = await self.store.held_streams(self.route.name, list(self.positions))
        wait = ttl / 3
        if not alone:
            now = await self.store.now()
            others = [
                p.lease_expires
                for p in await self.store.partitions(self.route.name)
                if p.owner not in (None, me) and p.lease_expires is not None
            ]
            if others:
                wait = max(0.01, min(wait, min(others) - now + 0.01))
        self.next_claim = time.monotonic() + wait

    def _lost(self) -> None:
        log.warning("%s: lease lost; another worker has taken over", self.route.name)
        self.positions = {}
        self.next_claim = 0.0

    # --- one step -----------------------------------------------------------------------------

    async def step(self, *, replay: bool = False) -> bool:
        """Deliver one batch, and replay held streams that are due. Whether anything happened."""
        if not self.positions:
            return False
        did = await self.deliver_batch()
        if replay or time.monotonic() >= self.next_replay:
            self.next_replay = time.monotonic() + self.settings.replay_interval
            did = await self.replay_due() or did
        return did

    async def deliver_batch(self) -> bool:
        envs = await self.store.read_all(
            after=min(self.positions.values()),
            types=self.route.types,
            limit=self.settings.batch_size,
        )
        if not envs:
            return False
        mine = self._mine(envs)
        last = envs[-1].global_position
        blocked_before = set(self.blocked)
        batch = self._batch(overlay={})
        for env, partition in mine:
            if self.route.policy.sequenced and env.stream in self.blocked:
                batch.wait(env, partition)
                continue
            handled = await self.handling.handle(env, 0, immediate=True, overlay=batch.overlay)
            batch.add(handled, env, partition)
        batch.tx.checkpoints.extend(self._moves(last))
        try:
            await self._commit(batch)
        except (WrongExpectedVersion, StoreError) as exc:
            # One handler's writes cannot be committed (a concurrent append, a refused row):
            # commit message by message, so that only that message is retried.
            log.info(
                "%s: batch commit failed (%s); committing one message at a time",
                self.route.name,
                exc,
            )
            self.blocked = blocked_before
            await self._one_by_one(mine, last)
        return True

    def _mine(self, envs: Sequence[Envelope]) -> list[tuple[Envelope, int]]:
        """The messages of the partitions this worker holds, beyond their checkpoints."""
        parts = self.route.partitions
        positions = self.positions
        known = self._partition_of
        if len(known) > 100_000:
            known.clear()
        mine = []
        for env in envs:
            partition = known.get(env.stream)
            if partition is None:
                partition = known[env.stream] = partition_of(env.stream, parts)
            position = positions.get(partition)
            if position is not None and env.global_position > position:
                mine.append((env, partition))
        return mine

    def _moves(self, last: int) -> list[CheckpointMove]:
        return [
            CheckpointMove(self.route.name, p, self.settings.worker_id, pos, last)
            for p, pos in self.positions.items()
            if pos < last
        ]

    def _batch(self, overlay: Overlay | None = None) -> Batch:
        return Batch(self.route, self.services, self.blocked, overlay)

    async def _commit(self, batch: Batch) -> bool:
        """Commit ``batch``, fenced by its checkpoint moves: move the checkpoints and fire its
        alerts; or, when the lease was lost, let the partitions go and return False."""
        try:
            await self.services.committer.commit(batch.tx)
        except LeaseLost:
            self._lost()
            return False
        for move in batch.tx.checkpoints:
            self.positions[move.partition] = move.position
        for alert in batch.alerts:
            await self.alerts.fire(alert)
        return True

    async def _one_by_one(self, mine: Sequence[tuple[Envelope, int]], last: int) -> None:
        for env, partition in mine:
            if partition not in self.positions:
                return
            move = CheckpointMove(
                self.route.name,
                partition,
                self.settings.worker_id,
                self.positions[partition],
                env.global_position,
            )
            attempts = 0
            while True:
                batch = self._batch()
                batch.tx.checkpoints.append(move)
                if self.route.policy.sequenced and env.stream in self.blocked:
                    batch.wait(env, partition)
                    if not await self._commit(batch):
                        return
                    break
                handled = await self.handling.handle(env, attempts, immediate=True, overlay=None)
                batch.add(handled, env, partition)
                try:
                    if not await self._commit(batch):
                        return
                except WrongExpectedVersion as exc:
                    attempts = handled.attempts
                    if not self.route.policy.gives_up(attempts, exc):
                        continue
                    batch = self._batch()
                    batch.tx.checkpoints.append(move)
                    batch.add(failure(attempts, exc, "", [], final=True), env, partition)
                    if not await self._commit(batch):
                        return
                break
        moves = self._moves(last)
        if moves:
            batch = self._batch()
            batch.tx.checkpoints.extend(moves)
            await self._commit(batch)

    # --- held messages ------------------------------------------------------------------------

    async def replay_due(self) -> bool:
        sequenced = self.route.policy.sequenced
        streams = await self.store.due_streams(
            self.route.name, list(self.positions), sequenced=sequenced
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
            if row.partition not in self.positions:
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
            if row.status in (WAITING, REPLAY):
                # A message's first turn, or an operator's retry after a repair: the whole retry
                # policy from the start (its earlier attempts stay in the history).
                handled = await self.handling.handle(env, 0, immediate=True, overlay=None)
            else:
                handled = await self.handling.handle(
                    env, row.attempts, immediate=False, overlay=None
                )
            position = self.positions[row.partition]
            stay = CheckpointMove(
                self.route.name, row.partition, self.settings.worker_id, position, position
            )
            batch = self._batch()
            batch.tx.checkpoints.append(stay)
            batch.add(handled, env, row.partition, row.history)
            done = handled.ok or handled.refused is not None
            if done:
                batch.tx.unheld.append(HeldDelete(self.route.name, row.global_position))
                if sequenced:
                    # The next in line becomes due in the same transaction: if this worker stops
                    # here, whoever takes the partition over carries on from it.
                    batch.tx.held.extend(_next_in_line(rows, index))
            try:
                if not await self._commit(batch):
                    return
            except WrongExpectedVersion as exc:
                batch = self._batch()
                batch.tx.checkpoints.append(stay)
                failed = self.handling.failed(handled.attempts, exc, "", [])
                batch.add(failed, env, row.partition, row.history)
                if not await self._commit(batch):
                    return
                done = False
            if sequenced and not done:
                return
        self.blocked.discard(stream)


def _next_in_line(rows: Sequence[Held], index: int) -> list[Held]:
    """The waiting message after ``rows[index]``, marked for replay (none if there is none)."""
    after = rows[index + 1 : index + 2]
    return [
        msgspec.structs.replace(h, status=REPLAY, due_in=None) for h in after if h.status == WAITING
    ]
