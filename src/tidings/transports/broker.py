"""What a broker does for tidings (publish with confirmation, receive, acknowledge), and
``open_broker(url)``, the one place a broker URL is parsed.

A broker carries two kinds of destination: a *topic* (events: every service subscribed to it
receives a copy) and a *service* (commands, and outcomes sent back: one queue, one recipient).
Each implementation keeps the order of one stream's messages from publish to receive.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from tidings.errors import ConfigurationError
from tidings.transports.routes import validate_route_name


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message to publish: to a ``topic`` or a ``service``; ``stream`` orders it (a broker
    keeps the order of one stream's messages)."""

    id: str
    stream: str
    kind: Literal["topic", "service"]
    to: str
    headers: dict[str, str]
    body: bytes


@dataclass(slots=True)
class Delivery:
    """One message received, to be acknowledged once recorded (``token`` is the broker's)."""

    headers: dict[str, Any]
    body: bytes
    token: Any = field(default=None, repr=False)


class Broker(abc.ABC):
    """A connection to a message broker, as the relay and the inbox use it."""

    #: the URL it connects to (without a password)
    url: str
    #: True when messages given to ``publish`` calls made one after the other are stored in
    #: that order even while earlier calls wait for their confirmation (one ordered channel):
    #: the relay then publishes a stream's next batch without waiting for the previous one
    pipelines: bool = False

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect (raises ``BrokerUnavailable``)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Disconnect; messages received and not acknowledged are delivered again later."""

    @abc.abstractmethod
    async def publish(self, messages: Sequence[Outgoing]) -> None:
        """Publish ``messages``, keeping each stream's order, and return once the broker
        confirmed every one of them (stored, or routed to every queue bound). Raises
        ``BrokerError`` if any was refused or the confirmation was lost: then all may be
        published again."""

    @abc.abstractmethod
    async def prepare(self, service: str, topics: Sequence[str]) -> None:
        """Make what is sent to ``service`` and published to ``topics`` from now on wait for it
        on the broker (a queue, durable consumers), without receiving it yet."""

    @abc.abstractmethod
    async def listen(self, service: str, topics: Sequence[str]) -> None:
        """Start receiving what is sent to ``service`` and published to ``topics``."""

    @abc.abstractmethod
    async def unlisten(self) -> None:
        """Stop receiving; what was received and not acknowledged is delivered again."""

    @abc.abstractmethod
    async def receive(self, limit: int, timeout: float) -> list[Delivery]:
        """Up to ``limit`` messages received, in order: those there now, else waiting up to
        ``timeout`` seconds for the first (an empty list then)."""

    @abc.abstractmethod
    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        """Acknowledge ``deliveries`` (recorded): the broker forgets them."""


async def take(received: asyncio.Queue[Any], limit: int, timeout: float) -> list[Any]:
    """Up to ``limit`` items of ``received``: those there now, else the first to arrive within
    ``timeout`` seconds and any there with it."""
    if received.empty():
        if timeout <= 0:
            return []
        try:
            first = await asyncio.wait_for(received.get(), timeout)
        except TimeoutError:
            return []
    else:
        first = received.get_nowait()
    batch = [first]
    while len(batch) < limit and not received.empty():
        batch.append(received.get_nowait())
    return batch


def open_broker(url: str, *, namespace: str = "tidings", **options: Any) -> Broker:
    """A broker by URL: ``amqp://guest:guest@127.0.0.1:5672/`` (RabbitMQ, extra
    ``tidings[rabbitmq]``), ``nats://127.0.0.1:4222`` (NATS JetStream, ``tidings[nats]``),
    ``kafka://127.0.0.1:9092`` (Kafka, ``tidings[kafka]``).
    ``namespace`` prefixes every exchange, queue, stream and subject tidings makes on the
    broker; ``options`` go to the broker's class (``timeout``; NATS: ``ack_wait``)."""
    validate_route_name(namespace, "namespace")
    scheme = url.partition("://")[0].lower()
    if scheme in ("amqp", "amqps"):
        from tidings.transports.rabbitmq import RabbitMQ

        return RabbitMQ(url, namespace=namespace, **options)
    if scheme in ("nats", "tls"):
        from tidings.transports.nats import NATS

        return NATS(url, namespace=namespace, **options)
    if scheme == "kafka":
        from tidings.transports.kafka import Kafka

        return Kafka(url, namespace=namespace, **options)
    raise ConfigurationError(
        f"no transport for the URL {url.split('@')[-1]!r}: use amqp://user:password@host:5672/ "
        "(RabbitMQ), nats://host:4222 (NATS JetStream) or kafka://host:9092 (Kafka)"
    )
