"""The inbox: records what arrives from the broker into this service's log, then acknowledges.

A batch of deliveries becomes one transaction: each message appended to its stream (the
store records a message id once, so a redelivered message is recorded once), each outcome of a
command this service sent written as its outcome. Only once that transaction is committed are
the deliveries acknowledged: a crash before leaves them with the broker, which delivers them
again. From the log, the worker delivers them like any other message. A message that is not a
CloudEvent tidings can record is kept, with its cause and raw bytes, as an ``InboxUnreadable``
event in ``$inbox-unreadable`` — never dropped.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import time
from collections.abc import Sequence

import msgspec

from tidings.committer import Committer
from tidings.delivery.replies import OutcomeReported
from tidings.errors import BrokerError, StoreError, Unreadable
from tidings.messages import Event, InternalStream, NewMessage, internal_stream
from tidings.records import AppendOp, Transaction
from tidings.transports.broker import Broker, Delivery
from tidings.transports.cloudevents import from_headers
from tidings.transports.routes import Routes

log = logging.getLogger("tidings.inbox")
UNREADABLE_STREAM = internal_stream("inbox-unreadable")
_encoder = msgspec.json.Encoder()
_outcome = msgspec.json.Decoder(OutcomeReported)


class InboxUnreadable(Event, type_name="tidings.InboxUnreadable"):
    """A message from the broker that could not be recorded as it is: why, its headers, and
    its raw bytes (base64)."""

    cause: str
    headers: dict[str, str]
    body_base64: str

    @property
    def body(self) -> bytes:
        """The raw bytes received."""
        return base64.b64decode(self.body_base64)


class Inbox:
    """Records deliveries from ``broker`` for service ``service`` into ``committer``'s store, up
    to ``batch_size`` a transaction. A batch smaller than that takes what else arrives first (a
    group commit): it looks again ``linger`` seconds later while more keep arriving,
    ``max_linger`` seconds at most, and commits as soon as a look finds fewer than two: a lone
    message waits one ``linger``, a flow gathers for up to ``max_linger``."""

    def __init__(
        self,
        service: str,
        committer: Committer,
        broker: Broker,
        routes: Routes,
        *,
        owner: str,
        batch_size: int = 500,
        linger: float = 0.001,
        max_linger: float = 0.02,
        lease_ttl: float = 10.0,
    ) -> None:
        self.service = service
        self.owner = owner
        self.lease_ttl = lease_ttl
        self.name = f"inbox:{service}"
        self.listening = False
        self._claimed_at: float | None = None
        self.linger = linger
        self.max_linger = max_linger
        self.committer = committer
        self.broker = broker
        self.routes = routes
        self.batch_size = batch_size
        #: deliveries recorded (redeliveries included) and kept as unreadable, since started
        self.received = 0
        self.unreadable = 0
        self._unrecorded: list[Delivery] = []
        #: the acknowledgement of the last batch recorded (each waits for the one before)
        self._acking: asyncio.Task[None] | None = None

    def transaction(self, deliveries: Sequence[Delivery]) -> Transaction:
        """What recording ``deliveries`` commits."""
        tx = Transaction()
        for delivery in deliveries:
            try:
                incoming = from_headers(delivery.headers, delivery.body)
                new = incoming.message
                if new.type == OutcomeReported.__type_name__ and new.kind == "event":
                    tx.outcomes.append(_outcome.decode(new.data).outcome())
                    continue
            except (Unreadable, msgspec.DecodeError, msgspec.ValidationError) as exc:
                tx.appends.append(AppendOp(UNREADABLE_STREAM, [_unreadable(delivery, exc)]))
                self.unreadable += 1
                continue
            if new.kind == "event" and not self.routes.accepts(new.type):
                continue
            tx.appends.append(AppendOp(InternalStream(incoming.stream), [new]))
        return tx

    async def step(self, timeout: float = 0.25) -> int:
        """Receive a batch, record it, start acknowledging it; returns how many were received.
        The next batch is received and recorded while the broker takes the acknowledgement
        (a round trip on Kafka); a failed one is raised by the next step. A batch the store
        failed to record is tried again before anything received after it."""
        if self._acking is not None and self._acking.done():
            acking, self._acking = self._acking, None
            acking.result()
        deliveries = self._unrecorded or await self.broker.receive(self.batch_size, timeout)
        if not deliveries:
            return 0
        if len(deliveries) < self.batch_size and not self._unrecorded:
            deliveries += await self._gather(self.batch_size - len(deliveries))
        self._unrecorded = deliveries
        tx = self.transaction(deliveries)
        if tx:
            await self.committer.commit(tx)
        self._unrecorded = []
        self._acking = asyncio.ensure_future(self._ack_after(self._acking, deliveries))
        self.received += len(deliveries)
        return len(deliveries)

    async def _ack_after(
        self, before: asyncio.Task[None] | None, deliveries: list[Delivery]
    ) -> None:
        """Acknowledge ``deliveries`` once the acknowledgement ``before`` them is done."""
        if before is not None:
            await before
        await self.broker.ack(deliveries)

    async def acknowledged(self) -> None:
        """Wait until what was recorded is acknowledged (raises what acknowledging raised)."""
        acking, self._acking = self._acking, None
        if acking is not None:
            await acking

    async def _gather(self, room: int) -> list[Delivery]:
        """Up to ``room`` more deliveries: looking a ``linger`` later while they keep arriving
        (two or more a look), ``max_linger`` at most."""
        more: list[Delivery] = []
        deadline = time.monotonic() + self.max_linger
        while len(more) < room and time.monotonic() < deadline:
            await asyncio.sleep(self.linger)
            got = await self.broker.receive(room - len(more), 0)
            more += got
            if len(got) < 2:  # not a flow: waiting longer would gain little
                break
        return more

    def reset(self) -> None:
        """Forget what was received and not recorded (the broker delivers it again after a
        reconnection)."""
        self._unrecorded = []

    async def claim(self) -> bool:
        """Take or renew the lease of ``inbox:<service>`` (every third of a lease at most):
        one process of a service receives at a time, so a stream arrives in order."""
        now = time.monotonic()
        if self._claimed_at is not None and now - self._claimed_at < self.lease_ttl / 3:
            return True
        store = self.committer.store
        await store.setup_subscription(self.name, 1, 0)
        held = await store.claim(self.name, self.owner, 1, self.lease_ttl)
        self._claimed_at = now if held else None
        return bool(held)

    async def run(self, stopping: asyncio.Event) -> None:
        """Record while this process holds the inbox's lease, until ``stopping`` is set; broker
        and store failures are waited out (what was received and not recorded is delivered
        again by the broker)."""
        failures = 0
        try:
            while not stopping.is_set():
                try:
                    if not await self.claim():
                        await self._stop_listening()
                        await _pause(stopping, self.lease_ttl / 3)
                        continue
                    if not self.listening:
                        topics = sorted(self.routes.subscriptions)
                        await self.broker.listen(self.service, topics)
                        self.listening = True
                    await self.step()
                except Exception as exc:
                    failures += 1
                    if failures == 1:
                        unexpected = not isinstance(exc, BrokerError | StoreError)
                        log.warning(
                            "inbox %s: %s; retrying", self.service, exc, exc_info=unexpected
                        )
                    self._claimed_at = None
                    if isinstance(exc, BrokerError):
                        # Listen afresh: a consumer the broker dropped delivers nothing more.
                        with contextlib.suppress(Exception):
                            await self._stop_listening()
                    await _pause(stopping, min(0.05 * 2**failures, 2.0))
                    continue
                if failures:
                    log.info("inbox %s records again", self.service)
                failures = 0
        finally:
            await self._stop_listening()

    async def _stop_listening(self) -> None:
        if self.listening:
            self.listening = False
            self.reset()
            with contextlib.suppress(Exception):
                await self.acknowledged()  # else delivered again: recorded once all the same
            await self.broker.unlisten()


async def _pause(stopping: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopping.wait(), timeout=seconds)


def _unreadable(delivery: Delivery, exc: Exception) -> NewMessage:
    headers = {
        str(k): v.decode(errors="replace") if isinstance(v, bytes) else str(v)
        for k, v in delivery.headers.items()
    }
    event = InboxUnreadable(
        cause=str(exc),
        headers=headers,
        body_base64=base64.b64encode(delivery.body).decode(),
    )
    # Named by its content: a redelivered unreadable message is recorded once.
    digest = hashlib.sha256(_encoder.encode([headers, event.body_base64])).hexdigest()
    return NewMessage(
        f"unreadable-{digest[:40]}",
        "event",
        InboxUnreadable.__type_name__,
        1,
        _encoder.encode(event),
    )
