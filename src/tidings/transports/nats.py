"""NATS JetStream (nats-py): every publish acknowledged (PubAck) and deduplicated by the server
(``Nats-Msg-Id`` = the message id); a subject per stream partition, so one stream's messages
stay in one subject, in order. Different streams' messages are in flight together; a stream's
next message is sent once the one before it is acknowledged, so it cannot overtake one lost
with a connection. The connection buffers nothing while it reconnects.

On the server, for namespace ``ns``: one JetStream stream (``ns`` with dots as ``_``) over the
subjects ``ns.>``; events go to ``ns.ev.<topic>.<partition>``, commands and outcomes to
``ns.svc.<service>.<partition>``, the partition being the tidings stream's hash. A service
reads with durable pull consumers: ``<service>-cmd`` on its commands, ``<service>-ev-<topic>``
per subscribed topic, acknowledging each message after the inbox committed it. A pull request
is kept open on each consumer, so a message is handed over as it arrives, not once a batch fills.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Sequence
from typing import Any

from tidings.delivery.leases import partition_of
from tidings.errors import BrokerError, BrokerUnavailable, MissingDependency
from tidings.transports.broker import Broker, Delivery, Outgoing, take

try:
    import nats
    import nats.errors
    import nats.js.errors
    from nats.aio.client import Client
    from nats.aio.msg import Msg
    from nats.js import JetStreamContext, api
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise MissingDependency(
        "the NATS JetStream transport needs nats-py: pip install 'tidings[nats]'"
    ) from exc

log = logging.getLogger("tidings.transports")
#: how many subjects a topic's (or a service's) streams are spread over
PARTITIONS = 16
#: how many messages one pull request asks for, and for how long (seconds) it waits on the server
_PULL = 500
_PULL_EXPIRES = 5.0
_FAILURES = (nats.errors.Error, ConnectionError, OSError, asyncio.TimeoutError, RuntimeError)


class NATS(Broker):
    """A NATS JetStream connection for one service (``nats://host:4222``). ``ack_wait`` is how
    long a message received and not acknowledged (its consumer died) waits before it is
    delivered again."""

    def __init__(
        self,
        url: str,
        *,
        namespace: str = "tidings",
        timeout: float = 10.0,
        ack_wait: float = 30.0,
    ) -> None:
        self._url = url
        self.url = url.split("@")[-1]
        self.namespace = namespace
        self.stream = namespace.replace(".", "_")
        self.timeout = timeout
        self.ack_wait = ack_wait
        self._client: Client | None = None
        self._js: JetStreamContext | None = None
        self._received: asyncio.Queue[Msg] = asyncio.Queue(maxsize=2000)
        self._fetching: list[asyncio.Task[None]] = []

    def subject(self, kind: str, to: str, stream: str) -> str:
        """The subject a message of ``stream`` goes to (kind ``topic`` or ``service``)."""
        part = "ev" if kind == "topic" else "svc"
        return f"{self.namespace}.{part}.{to}.{partition_of(stream, PARTITIONS)}"

    async def open(self) -> None:
        if self._client is not None:
            return
        try:
            self._client = await nats.connect(
                self._url,
                connect_timeout=min(self.timeout, 5.0),
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                pending_size=0,
            )
            self._js = self._client.jetstream(timeout=self.timeout)
            try:
                await self._js.stream_info(self.stream)
            except nats.js.errors.NotFoundError:
                with contextlib.suppress(nats.js.errors.BadRequestError):
                    # BadRequest: another process created it first (checked below).
                    await self._js.add_stream(
                        name=self.stream,
                        subjects=[f"{self.namespace}.>"],
                        storage=api.StorageType.FILE,
                        duplicate_window=120.0,
                    )
                await self._js.stream_info(self.stream)
        except (*_FAILURES, nats.js.errors.Error) as exc:
            await self.close()
            raise BrokerUnavailable(f"cannot connect to NATS at {self.url}: {exc}") from exc

    async def close(self) -> None:
        await self.unlisten()
        client, self._client, self._js = self._client, None, None
        if client is not None:
            with contextlib.suppress(*_FAILURES):
                await client.close()

    def _jetstream(self) -> JetStreamContext:
        if self._js is None:
            raise BrokerUnavailable(f"not connected to NATS at {self.url}: open it first")
        return self._js

    async def publish(self, messages: Sequence[Outgoing]) -> None:
        """Publish ``messages``: different streams' together, a stream's next one only once the
        server acknowledged (stored) the one before it, so that none can overtake an earlier one
        lost with a connection (nats-py sends what it had not written yet after reconnecting)."""
        js = self._jetstream()
        chains: dict[str, list[Outgoing]] = {}
        for message in messages:
            chains.setdefault(message.stream, []).append(message)
        try:
            async with asyncio.TaskGroup() as group:
                for chain in chains.values():
                    group.create_task(self._publish_chain(js, chain))
        except* (*_FAILURES, nats.js.errors.Error) as failed:
            raise BrokerError(
                f"NATS at {self.url} did not acknowledge: {failed.exceptions[0]!r}"
            ) from failed.exceptions[0]

    async def _publish_chain(self, js: JetStreamContext, chain: list[Outgoing]) -> None:
        """Publish one stream's messages one after the other: each acknowledged before the next."""
        for message in chain:
            ack = await js.publish_async(
                self.subject(message.kind, message.to, message.stream),
                message.body,
                stream=self.stream,
                headers={**message.headers, "Nats-Msg-Id": message.id},
            )
            try:
                await asyncio.wait_for(ack, self.timeout)
            finally:
                ack.cancel()  # not acknowledged in time: the client forgets it

    def _consumers(self, service: str, topics: Sequence[str]) -> list[tuple[str, str]]:
        """(durable name, subject) of each consumer of ``service``."""
        wanted = [(f"{service}-cmd", f"{self.namespace}.svc.{service}.*")]
        wanted += [
            (f"{service}-ev-{topic.replace('.', '_')}", f"{self.namespace}.ev.{topic}.*")
            for topic in topics
        ]
        return wanted

    async def _consumer(self, durable: str, subject: str) -> None:
        """Create the durable pull consumer ``durable`` on ``subject`` if it is missing."""
        config = api.ConsumerConfig(
            ack_policy=api.AckPolicy.EXPLICIT, ack_wait=self.ack_wait, max_ack_pending=20_000
        )
        sub = await self._jetstream().pull_subscribe(
            subject, durable=durable, stream=self.stream, config=config
        )
        await sub.unsubscribe()

    async def prepare(self, service: str, topics: Sequence[str]) -> None:
        try:
            for durable, subject in self._consumers(service, topics):
                await self._consumer(durable, subject)
        except (*_FAILURES, nats.js.errors.Error) as exc:
            raise BrokerUnavailable(
                f"cannot create consumers on NATS at {self.url}: {exc}"
            ) from exc

    async def listen(self, service: str, topics: Sequence[str]) -> None:
        await self.unlisten()
        try:
            for durable, subject in self._consumers(service, topics):
                await self._consumer(durable, subject)
                self._fetching.append(asyncio.create_task(self._pull(durable)))
        except (*_FAILURES, nats.js.errors.Error) as exc:
            raise BrokerUnavailable(f"cannot consume from NATS at {self.url}: {exc}") from exc

    async def unlisten(self) -> None:
        for task in self._fetching:
            task.cancel()
        for task in self._fetching:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._fetching = []
        self._received = asyncio.Queue(maxsize=2000)

    async def _pull(self, durable: str) -> None:
        """Move one consumer's messages, in order, to the received queue as they arrive: one
        pull request for up to ``_PULL`` messages open at a time, renewed once it is fulfilled
        or over (the server's status message: expired, or refused)."""
        if self._client is None:
            raise BrokerUnavailable(f"not connected to NATS at {self.url}: open it first")
        client, over = self._client, asyncio.Event()
        left, refused = 0, 0

        async def arrived(message: Msg) -> None:
            nonlocal left, refused
            status = (message.headers or {}).get(api.Header.STATUS)
            if not status:
                left -= 1
                refused = 0
                await self._received.put(message)
                if left <= 0:
                    over.set()
            elif status != "100":  # not an idle heartbeat: the request is over
                refused = refused + 1 if status == "409" else 0
                over.set()

        request = json.dumps({"batch": _PULL, "expires": int(_PULL_EXPIRES * 1e9)}).encode()
        subject = f"{api.DEFAULT_PREFIX}.CONSUMER.MSG.NEXT.{self.stream}.{durable}"
        failures = 0
        sub = await client.subscribe(client.new_inbox(), cb=arrived)
        try:
            while True:
                over.clear()
                left = _PULL
                try:
                    await client.publish(subject, request, reply=sub.subject)
                except _FAILURES as exc:
                    failures += 1
                    if failures == 1:
                        log.warning("NATS at %s: pulling failed (%r); retrying", self.url, exc)
                    await asyncio.sleep(min(0.05 * 2**failures, 2.0))
                    continue
                failures = 0
                with contextlib.suppress(TimeoutError):
                    # A request lost with the connection has no status to end it.
                    await asyncio.wait_for(over.wait(), _PULL_EXPIRES + 1)
                if refused:  # e.g. the consumer was deleted: ask again, slower each time
                    await asyncio.sleep(min(0.05 * 2**refused, 2.0))
        finally:
            with contextlib.suppress(*_FAILURES):
                await sub.unsubscribe()

    async def receive(self, limit: int, timeout: float) -> list[Delivery]:
        batch = await take(self._received, limit, timeout)
        out = []
        for message in batch:
            headers: dict[str, Any] = dict(message.headers or {})
            headers.pop("Nats-Msg-Id", None)
            out.append(Delivery(headers, message.data, message))
        return out

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        try:
            for delivery in deliveries:
                await delivery.token.ack()
        except _FAILURES as exc:
            raise BrokerError(f"NATS at {self.url} lost the acknowledgement: {exc!r}") from exc
