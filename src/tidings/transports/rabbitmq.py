"""RabbitMQ (aio-pika): publisher confirms, one durable queue per service with a single active
consumer, so a service receives in the order published.

On the broker, for namespace ``ns``: a topic exchange ``ns.events`` (routing key: the topic), a
direct exchange ``ns.commands`` (routing key: the service) and a durable queue ``ns.<service>``
bound to both, declared with ``x-single-active-consumer``: several worker processes of a service
may consume, one at a time, so order is kept; the inbox's store does the parallel work after.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any, cast

from tidings.errors import BrokerError, BrokerUnavailable, MissingDependency
from tidings.transports.broker import Broker, Delivery, Outgoing, take

try:
    import aio_pika
    import aiormq
    from aio_pika.abc import (
        AbstractChannel,
        AbstractExchange,
        AbstractIncomingMessage,
        AbstractQueue,
        AbstractRobustConnection,
    )
    from aio_pika.exceptions import AMQPError
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise MissingDependency(
        "the RabbitMQ transport needs aio-pika: pip install 'tidings[rabbitmq]'"
    ) from exc

log = logging.getLogger("tidings.transports")
_PERSISTENT = int(aio_pika.DeliveryMode.PERSISTENT)
#: what a failing connection or channel raises (a closed channel: RuntimeError)
_FAILURES = (AMQPError, ConnectionError, OSError, asyncio.TimeoutError, RuntimeError)


class RabbitMQ(Broker):
    """A RabbitMQ connection for one service (``amqp://user:password@host:5672/vhost``)."""

    pipelines = True

    def __init__(self, url: str, *, namespace: str = "tidings", timeout: float = 10.0) -> None:
        self._url = url
        self.url = url.split("@")[-1] if "@" in url else url
        self.namespace = namespace
        self.timeout = timeout
        self._connection: AbstractRobustConnection | None = None
        self._publishing: AbstractChannel | None = None
        self._exchanges: dict[str, AbstractExchange] = {}
        self._queues: set[str] = set()
        self._received: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        self._consuming: AbstractChannel | None = None
        self._prefetch = 1000
        self._starting = asyncio.Lock()

    def queue_name(self, service: str) -> str:
        """The queue of a service."""
        return f"{self.namespace}.{service}"

    @property
    def events_exchange(self) -> str:
        """The topic exchange events are published to."""
        return f"{self.namespace}.events"

    @property
    def commands_exchange(self) -> str:
        """The direct exchange commands and outcomes are sent to."""
        return f"{self.namespace}.commands"

    async def open(self) -> None:
        if self._connection is not None:
            return
        try:
            self._connection = await aio_pika.connect_robust(self._url, timeout=self.timeout)
            self._publishing = await self._connection.channel(
                publisher_confirms=True, on_return_raises=True
            )
            await self._declare_exchanges(self._publishing)
        except _FAILURES as exc:
            await self.close()
            raise BrokerUnavailable(f"cannot connect to RabbitMQ at {self.url}: {exc}") from exc

    async def _declare_exchanges(self, channel: AbstractChannel) -> None:
        self._exchanges["topic"] = await channel.declare_exchange(
            self.events_exchange, aio_pika.ExchangeType.TOPIC, durable=True
        )
        self._exchanges["service"] = await channel.declare_exchange(
            self.commands_exchange, aio_pika.ExchangeType.DIRECT, durable=True
        )

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        self._publishing, self._consuming = None, None
        self._exchanges.clear()
        self._queues.clear()
        self._received = asyncio.Queue()
        if connection is not None:
            await connection.close()

    async def _service_queue(self, channel: AbstractChannel, service: str) -> AbstractQueue:
        """Declare (idempotently) the queue of ``service`` and bind it to its commands."""
        queue = await channel.declare_queue(
            self.queue_name(service),
            durable=True,
            arguments={"x-single-active-consumer": True},
        )
        await queue.bind(self.commands_exchange, routing_key=service)
        self._queues.add(service)
        return queue

    def _channel(self) -> AbstractChannel:
        if self._publishing is None:
            raise BrokerUnavailable(f"not connected to RabbitMQ at {self.url}: open it first")
        return self._publishing

    async def publish(self, messages: Sequence[Outgoing]) -> None:
        """Publish ``messages`` on the one publishing channel and wait for every confirmation.

        Each publish puts its frames on the connection's write queue at its first step (the
        channel's lock is free then: no publish waits for the socket to drain while holding it,
        ``wait=False``), so they go out in the order given, in one write, and one channel's
        messages keep their order in a queue. ``_starting`` keeps calls in the order they were
        made while one declares a queue first, so a later call's messages never overtake an
        earlier call's (``pipelines``)."""
        publishing: list[asyncio.Future[Any]] = []
        try:
            async with self._starting:
                channel = cast(aiormq.Channel, await self._channel().get_underlay_channel())
                for service in {m.to for m in messages if m.kind == "service"} - self._queues:
                    # A command sent before its service ever started waits in its queue.
                    await self._service_queue(self._channel(), service)
                publishing = [asyncio.ensure_future(self._start(channel, m)) for m in messages]
            confirmations = await asyncio.gather(*publishing)
        except Exception as exc:
            for task in publishing:
                task.cancel()
            raise BrokerError(f"RabbitMQ at {self.url} did not confirm: {exc!r}") from exc
        except BaseException:
            for task in publishing:
                task.cancel()
            raise
        tags: list[int] = [getattr(c, "delivery_tag", 0) for c in confirmations]
        if tags != sorted(tags):
            # What the docstring relies on did not hold: say so loudly (never seen).
            log.error(
                "RabbitMQ at %s: messages went out of order (delivery tags %s)", self.url, tags
            )

    def _start(self, channel: aiormq.Channel, message: Outgoing) -> Any:
        """The publish of ``message`` (a coroutine: it starts when scheduled)."""
        headers: dict[str, Any] = dict(message.headers)
        content_type = headers.pop("content-type", "application/json")
        properties = aiormq.spec.Basic.Properties(
            content_type=content_type,
            headers=headers,
            message_id=message.id,
            delivery_mode=_PERSISTENT,
        )
        return channel.basic_publish(
            message.body,
            exchange=self.events_exchange if message.kind == "topic" else self.commands_exchange,
            routing_key=message.to,
            properties=properties,
            mandatory=message.kind == "service",
            timeout=self.timeout,
            wait=False,
        )

    async def prepare(self, service: str, topics: Sequence[str]) -> None:
        try:
            queue = await self._service_queue(self._channel(), service)
            for topic in topics:
                await queue.bind(self.events_exchange, routing_key=topic)
        except _FAILURES as exc:
            raise BrokerUnavailable(
                f"cannot declare queues on RabbitMQ at {self.url}: {exc}"
            ) from exc

    async def listen(self, service: str, topics: Sequence[str]) -> None:
        if self._connection is None:
            raise BrokerUnavailable(f"not connected to RabbitMQ at {self.url}: open it first")
        await self.unlisten()
        try:
            channel = await self._connection.channel()
            self._consuming = channel
            await channel.set_qos(prefetch_count=self._prefetch)
            queue = await self._service_queue(channel, service)
            for topic in topics:
                await queue.bind(self.events_exchange, routing_key=topic)
            await queue.consume(self._received.put)
        except _FAILURES as exc:
            raise BrokerUnavailable(f"cannot consume from RabbitMQ at {self.url}: {exc}") from exc

    async def unlisten(self) -> None:
        channel, self._consuming = self._consuming, None
        self._received = asyncio.Queue()
        if channel is not None:
            # Closing the channel gives what it received and did not acknowledge back.
            with contextlib.suppress(*_FAILURES):
                await channel.close()

    async def receive(self, limit: int, timeout: float) -> list[Delivery]:
        batch = await take(self._received, limit, timeout)
        out = []
        for message in batch:
            headers: dict[str, Any] = dict(message.headers or {})
            if message.content_type:
                headers["content-type"] = message.content_type
            out.append(Delivery(headers, message.body, message))
        return out

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        if not deliveries:
            return
        last: AbstractIncomingMessage = deliveries[-1].token
        try:
            # One frame acknowledges the batch: the deliveries came on one channel, in order.
            await last.ack(multiple=True)
        except _FAILURES as exc:
            raise BrokerError(f"RabbitMQ at {self.url} lost the acknowledgement: {exc}") from exc
