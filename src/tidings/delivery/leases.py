"""A runner's leases: the partitions of its subscription it holds, and their checkpoints.

The worker's heartbeat calls :meth:`Leases.claim` every third of a lease, also while the runner
is in the middle of a slice; a claim then renews and takes partitions, but releases none until
the slice in flight is committed (the runner claims again between slices for that).
"""

from __future__ import annotations

import asyncio
import logging
import math
import zlib
from collections.abc import Callable, Iterable, Sequence

from tidings.delivery.marks import PAUSED
from tidings.delivery.observer import Observer
from tidings.messages import Envelope
from tidings.records import CheckpointMove, PartitionInfo
from tidings.store import Store

log = logging.getLogger("tidings.worker")


def partition_of(stream: str, partitions: int) -> int:
    """The partition a stream belongs to (stable across processes and versions)."""
    return zlib.crc32(stream.encode()) % partitions


class Leases:
    """The partitions one runner holds of subscription ``name`` (``partitions`` of them, from
    ``start``), claimed for ``worker_id``.

    ``in_flight()`` says whether the runner has a slice whose commit these leases fence (handled,
    or kept to commit after an outage): while it does, a claim releases nothing. ``wakeup`` is
    set when partitions are gained.
    """

    def __init__(
        self,
        name: str,
        partitions: int,
        start: str,
        store: Store,
        worker_id: str,
        lease_ttl: float,
        wakeup: asyncio.Event,
        in_flight: Callable[[], bool],
        observer: Observer | None = None,
    ) -> None:
        self.name = name
        self.partitions = partitions
        self.start = start
        self.store = store
        self.worker_id = worker_id
        self.lease_ttl = lease_ttl
        self.wakeup = wakeup
        self.in_flight = in_flight
        self.observer = observer
        #: the partitions held, and their checkpoints
        self.positions: dict[int, int] = {}
        #: how many workers were alive at the last heartbeat
        self.live = 1
        #: whether to claim before the next slice (a surplus to release, a lost lease)
        self.claim_due = False
        #: whether the partitions held changed since the runner last looked (it clears this)
        self.changed = True
        self._claiming = asyncio.Lock()
        self._partition_of: dict[str, int] = {}

    async def setup(self) -> None:
        """Create the subscription's partitions, from the log's beginning or (``start="now"``)
        its end, unless they exist."""
        position = 0 if self.start == "beginning" else await self.store.last_position()
        await self.store.setup_subscription(self.name, self.partitions, position)

    async def claim(self, live: int | None = None) -> float:
        """Renew these leases and take a fair share of the ``live`` workers' partitions.

        Returns the seconds until the next claim is due: a third of the lease, or sooner when
        another worker's lease runs out then, so that a killed worker's partitions are taken over
        within the lease time. While a slice is in flight nothing is released (its commit is
        fenced by these leases); the surplus goes when the slice is committed.
        """
        if live is not None:
            self.live = live
        me, ttl, name = self.worker_id, self.lease_ttl, self.name
        async with self._claiming:
            # A paused subscription (an operator's choice, docs/console.md) holds no partition.
            paused = await self.store.get_document(PAUSED, name) is not None
            fair = 0 if paused else math.ceil(self.partitions / max(1, self.live))
            want = max(fair, len(self.positions)) if self.in_flight() else fair
            before = {p.partition: p for p in await self.store.partitions(name)}
            claimed = await self.store.claim(name, me, want, ttl)
            self.claim_due = want > fair
            self._hold(claimed, before)
            now = await self.store.now()
        others = [
            p.lease_expires
            for n, p in before.items()
            if n not in claimed and p.owner not in (None, me) and p.lease_expires is not None
        ]
        return max(0.01, min([ttl / 3, *(e - now + 0.01 for e in others)]))

    async def settled(self) -> None:
        """Wait for a claim in flight (it may still release partitions) to finish."""
        async with self._claiming:
            pass

    def _hold(self, claimed: dict[int, int], before: dict[int, PartitionInfo]) -> None:
        """Make ``claimed`` the partitions held, and say which were lost or taken over."""
        me, name = self.worker_id, self.name
        lost = sorted(p for p in self.positions if p not in claimed and before[p].owner != me)
        if lost:
            log.warning(
                "%s: lease lost on partitions %s: %s took them over while this worker held them",
                name,
                lost,
                ", ".join(sorted({str(before[p].owner) for p in lost})),
            )
        taken = sorted(
            p for p in claimed if p not in self.positions and before[p].owner not in (None, me)
        )
        if taken:
            log.warning(
                "%s: took over partitions %s from %s, whose lease had run out",
                name,
                taken,
                ", ".join(sorted({str(before[p].owner) for p in taken})),
            )
        gained = set(claimed) - set(self.positions)
        if set(claimed) != set(self.positions):
            self.changed = True
        # A checkpoint only moves forward: a claim read before this runner's last commit must
        # not move it back.
        self.positions = {p: max(pos, self.positions.get(p, pos)) for p, pos in claimed.items()}
        if gained:
            self.wakeup.set()
        if self.observer is not None:
            if lost:
                self.observer.lease_lost(name, len(lost))
            self.observer.partitions_held(name, len(self.positions))

    def lost(self, handled: int) -> None:
        """A commit found the leases lost: let every partition go, and claim before going on."""
        log.warning(
            "%s: lease lost at commit; another worker has taken over, and will handle the %d "
            "message(s) of this slice again",
            self.name,
            handled,
        )
        if self.observer is not None:
            self.observer.lease_lost(self.name, len(self.positions))
            self.observer.partitions_held(self.name, 0)
        self.positions = {}
        self.claim_due = True

    def mine(self, envs: Sequence[Envelope], held: dict[int, int]) -> list[tuple[Envelope, int]]:
        """The messages of the partitions ``held``, beyond their checkpoints."""
        parts = self.partitions
        known = self._partition_of
        if len(known) > 100_000:
            known.clear()
        mine = []
        for env in envs:
            partition = known.get(env.stream)
            if partition is None:
                partition = known[env.stream] = partition_of(env.stream, parts)
            position = held.get(partition)
            if position is not None and env.global_position > position:
                mine.append((env, partition))
        return mine

    def moves(self, held: dict[int, int], last: int) -> list[CheckpointMove]:
        """The checkpoint moves of the partitions ``held`` up to ``last``, fenced by the leases."""
        return [
            CheckpointMove(self.name, p, self.worker_id, pos, last)
            for p, pos in held.items()
            if pos < last
        ]

    def moved(self, moves: Iterable[CheckpointMove]) -> None:
        """Take committed checkpoint ``moves`` into the positions of the partitions still held."""
        for move in moves:
            if move.partition in self.positions:
                self.positions[move.partition] = max(self.positions[move.partition], move.position)
