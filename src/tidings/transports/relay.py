"""The relay: carries committed messages from the log to the broker (the outbox, by construction).

It reads the log as a durable subscription does (``relay:<service>``, one partition, leased, so
one process relays at a time) and moves its checkpoint only past what the broker confirmed: a
relay killed between publishing and checkpointing publishes those messages again, and the
receiver's inbox records each message id once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from typing import Any

import msgspec

from tidings.committer import Committer
from tidings.delivery.replies import REPLY_PREFIX, OutcomeReported
from tidings.delivery.subscriptions import TYPES, Remembered
from tidings.errors import BrokerError, LeaseLost, StoreError
from tidings.messages import Envelope
from tidings.records import CheckpointMove, DocumentWrite, Transaction
from tidings.store import Store
from tidings.transports.broker import Broker, Outgoing
from tidings.transports.cloudevents import to_headers
from tidings.transports.routes import Routes

log = logging.getLogger("tidings.relay")
_encoder = msgspec.json.Encoder()


class Relay:
    """Relays ``routes``' events and commands, and the outcomes of other services' commands, from
    ``store``'s log to ``broker``, for service ``service``: up to ``in_flight`` batches of
    ``batch_size`` published at once, checkpointed in order as the broker confirms them — at
    once when nothing new was read, else every ``checkpoint_interval`` seconds at most (each
    checkpoint is a commit, which syncs the disk)."""

    def __init__(
        self,
        service: str,
        store: Store,
        committer: Committer,
        broker: Broker,
        routes: Routes,
        *,
        owner: str,
        batch_size: int = 500,
        lease_ttl: float = 10.0,
        in_flight: int = 16,
        checkpoint_interval: float = 0.05,
    ) -> None:
        self.service = service
        self.store = store
        self.committer = committer
        self.broker = broker
        self.routes = routes
        self.owner = owner
        self.batch_size = batch_size
        self.lease_ttl = lease_ttl
        self.in_flight = in_flight
        self.checkpoint_interval = checkpoint_interval
        self._checkpointed_at = 0.0
        self.name = f"relay:{service}"
        self.types = sorted({*routes.topics, *routes.owners, OutcomeReported.__type_name__})
        self.wakeup = asyncio.Event()
        #: the checkpoint while this relay holds the lease, else None
        self.position: int | None = None
        self._claimed_at = 0.0
        #: how many messages the broker confirmed (since this relay started)
        self.relayed = 0
        #: batches published and not yet checkpointed: (last position, confirmation, count)
        self._flight: deque[tuple[int, asyncio.Future[Any], int]] = deque()
        #: the last position read (ahead of the checkpoint while batches are in flight)
        self._read = 0
        #: each stream's last publishing task: the next one of that stream starts after it
        self._tails: dict[str, asyncio.Task[None]] = {}

    async def setup(self) -> None:
        """Create the relay's subscription (from the beginning of the log) if it is new, and
        remember its types (so that ``tidings subscriptions`` shows its lag)."""
        await self.store.setup_subscription(self.name, 1, 0)
        types = Remembered(self.types, self.types)
        if await self.store.get_document(TYPES, self.name) != _encoder.encode(types):
            write = DocumentWrite(TYPES, self.name, _encoder.encode(types))
            await self.committer.commit(Transaction(documents=[write]))

    async def claim(self) -> None:
        """Take or renew the lease (every third of a lease at most)."""
        now = time.monotonic()
        if self.position is not None and now - self._claimed_at < self.lease_ttl / 3:
            return
        held = await self.store.claim(self.name, self.owner, 1, self.lease_ttl)
        self.position = held.get(0)
        self._claimed_at = now

    def outgoing(self, env: Envelope) -> Outgoing | None:
        """Where ``env`` goes, as the broker publishes it (None: nowhere)."""
        headers = to_headers(env, self.service)
        topic = self.routes.topics.get(env.type)
        if topic is not None:
            return Outgoing(env.id, env.stream, "topic", topic, headers, env.data)
        owner = self.routes.owners.get(env.type)
        if owner is not None:
            return Outgoing(env.id, env.stream, "service", owner, headers, env.data)
        if env.type == OutcomeReported.__type_name__ and env.stream.startswith(REPLY_PREFIX):
            sender = env.stream[len(REPLY_PREFIX) :]
            return Outgoing(env.id, env.stream, "service", sender, headers, env.data)
        return None

    async def step(self) -> int:
        """Read the next batch and start publishing it, then checkpoint the oldest batches in
        flight that the broker confirmed (waiting for the oldest when ``in_flight`` are out; when
        nothing is left to read, for the oldest or for new messages, whichever comes first).
        Returns how many messages were read or confirmed (0: nothing to do, or another process
        holds the relay's lease). Raises ``BrokerError`` when a publish failed: every batch in
        flight is then read and published again."""
        await self.claim()
        if self.position is None:
            self._reset()
            return 0
        after = self._read if self._flight else self.position
        batch = await self.store.read_all(after=after, types=self.types, limit=self.batch_size)
        if batch:
            self._launch(batch)
        done = 0
        try:
            if self._flight and not batch and not self._flight[0][1].done():
                await self._confirmed_or_woken(self._flight[0][1])
            while self._flight and (
                len(self._flight) > self.in_flight
                or (self._flight[0][1].done() and (not batch or self._checkpoint_due()))
            ):
                done += await self._settle()
        except BaseException:
            self._reset()
            raise
        return done + len(batch)

    def _checkpoint_due(self) -> bool:
        return time.monotonic() - self._checkpointed_at >= self.checkpoint_interval

    async def _confirmed_or_woken(self, confirmed: asyncio.Future[Any]) -> None:
        """Wait until ``confirmed`` is done or a commit appended messages (then they are read
        and published while the broker confirms what is in flight)."""
        woken = asyncio.ensure_future(self.wakeup.wait())
        try:
            await asyncio.wait((confirmed, woken), return_when=asyncio.FIRST_COMPLETED)
        finally:
            woken.cancel()

    def _launch(self, batch: list[Envelope]) -> None:
        """Start publishing ``batch``: each stream's messages after that stream's earlier ones
        (at once on a broker that ``pipelines``, else once those were confirmed)."""
        if self.broker.pipelines:
            messages = [m for m in map(self.outgoing, batch) if m is not None]
            published = asyncio.ensure_future(self.broker.publish(messages))
            self._flight.append((batch[-1].global_position, published, len(messages)))
            self._read = batch[-1].global_position
            return
        chains: dict[str, list[Outgoing]] = {}
        for env in batch:
            message = self.outgoing(env)
            if message is not None:
                chains.setdefault(message.stream, []).append(message)
        tasks = []
        for stream, chain in chains.items():
            task = asyncio.create_task(self._publish_after(self._tails.get(stream), chain))
            self._tails[stream] = task
            tasks.append(task)
        confirmed: asyncio.Future[Any] = asyncio.gather(*tasks)
        self._flight.append((batch[-1].global_position, confirmed, sum(map(len, chains.values()))))
        self._read = batch[-1].global_position

    async def _publish_after(
        self, before: asyncio.Task[None] | None, chain: list[Outgoing]
    ) -> None:
        if before is not None:
            await before
        await self.broker.publish(chain)

    async def _settle(self) -> int:
        """Wait for the oldest batch in flight to be confirmed, then checkpoint it and the
        confirmed batches after it (one commit)."""
        await self._flight[0][1]
        settled = 0
        for _, confirmed, _ in self._flight:
            if not confirmed.done() or confirmed.cancelled() or confirmed.exception():
                break
            settled += 1
        end = self._flight[settled - 1][0]
        assert self.position is not None
        move = CheckpointMove(self.name, 0, self.owner, self.position, end)
        try:
            await self.committer.commit(Transaction(checkpoints=[move]))
        except LeaseLost:
            log.warning("relay %s lost its lease; another process relays", self.name)
            self.position = None
            self._reset()
            return 0
        self._checkpointed_at = time.monotonic()
        count = 0
        for _ in range(settled):
            count += self._flight.popleft()[2]
        self.position = end
        self.relayed += count
        for stream, task in list(self._tails.items()):
            if task.done():
                del self._tails[stream]
        return count

    def _reset(self) -> None:
        """Forget the batches in flight (they are read again from the checkpoint)."""
        for _, confirmed, _ in self._flight:
            confirmed.cancel()
        for task in self._tails.values():
            task.cancel()
        self._flight.clear()
        self._tails.clear()

    async def run(self, stopping: asyncio.Event, *, idle_poll: float = 0.25) -> None:
        """Relay until ``stopping`` is set; broker and store failures are waited out."""
        self.committer.add_wakeup(self.wakeup)
        idle, failures, ready = 0.005, 0, False
        try:
            while not stopping.is_set():
                self.wakeup.clear()
                try:
                    if not ready:
                        await self.setup()
                        ready = True
                    did = await self.step()
                except Exception as exc:
                    failures += 1
                    if failures == 1:
                        unexpected = not isinstance(exc, BrokerError | StoreError)
                        log.warning("relay %s: %s; retrying", self.name, exc, exc_info=unexpected)
                    self.position = None
                    await _pause(stopping, min(0.05 * 2**failures, 2.0))
                    continue
                if failures:
                    log.info("relay %s relays again", self.name)
                failures = 0
                if did:
                    idle = 0.005
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wakeup.wait(), timeout=idle)
                idle = min(idle * 2, idle_poll)
        finally:
            self._reset()  # what is in flight is published again from the checkpoint
            self.committer.discard_wakeup(self.wakeup)


async def _pause(stopping: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopping.wait(), timeout=seconds)
