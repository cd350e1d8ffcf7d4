"""Kafka (aiokafka): acks=all with an idempotent producer, the tidings stream as the record key
(one stream, one partition: in order), offsets committed after the inbox committed. Headers
follow the CloudEvents Kafka binding (``ce_id``, ``ce_type``, ...).

On the cluster, for namespace ``ns``: a topic ``ns.ev.<topic>`` per tidings topic and
``ns.svc.<service>`` per service (commands and outcomes), created with ``partitions``
partitions when missing. A service reads its topics in the consumer group ``ns.<service>``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

from tidings.errors import BrokerError, BrokerUnavailable, MissingDependency
from tidings.transports.broker import Broker, Delivery, Outgoing

try:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import KafkaError, TopicAlreadyExistsError
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise MissingDependency(
        "the Kafka transport needs aiokafka: pip install 'tidings[kafka]'"
    ) from exc

_FAILURES = (KafkaError, ConnectionError, OSError, asyncio.TimeoutError, RuntimeError)


class Kafka(Broker):
    """A Kafka connection for one service (``kafka://host:9092``, several hosts separated by
    commas). ``idempotent`` turns on the idempotent producer (on by default; a broker that
    cannot give producer ids, such as tansu's memory storage, needs it off: the inbox still
    records each message id once). ``fetch_wait`` is how long the broker may hold a fetch
    before it answers with what it has: it bounds a message's wait on a broker that holds every
    fetch that long (tansu does, data there or not), and costs an idle consumer a fetch each
    time."""

    def __init__(
        self,
        url: str,
        *,
        namespace: str = "tidings",
        timeout: float = 10.0,
        partitions: int = 16,
        idempotent: bool = True,
        fetch_wait: float = 0.01,
    ) -> None:
        self.url = url
        self.servers = url.partition("://")[2].rstrip("/")
        self.namespace = namespace
        self.timeout = timeout
        self.partitions = partitions
        self.idempotent = idempotent
        self.fetch_wait = fetch_wait
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._topics: set[str] = set()

    def topic(self, kind: str, to: str) -> str:
        """The Kafka topic of a tidings topic (kind ``topic``) or of a service."""
        return f"{self.namespace}.{'ev' if kind == 'topic' else 'svc'}.{to}"

    async def open(self) -> None:
        if self._producer is not None:
            return
        producer = AIOKafkaProducer(
            bootstrap_servers=self.servers,
            acks="all",
            enable_idempotence=self.idempotent,
            request_timeout_ms=int(self.timeout * 1000),
        )
        try:
            await producer.start()
        except _FAILURES as exc:
            with contextlib.suppress(*_FAILURES):
                await producer.stop()
            raise BrokerUnavailable(f"cannot connect to Kafka at {self.servers}: {exc}") from exc
        self._producer = producer

    async def close(self) -> None:
        await self.unlisten()
        producer, self._producer = self._producer, None
        self._topics.clear()
        if producer is not None:
            with contextlib.suppress(*_FAILURES):
                await producer.stop()

    async def _create(self, topics: Sequence[str]) -> None:
        """Create the topics not known to exist yet."""
        missing = [t for t in topics if t not in self._topics]
        if not missing:
            return
        admin = AIOKafkaAdminClient(bootstrap_servers=self.servers)
        await admin.start()
        try:
            for topic in missing:
                with contextlib.suppress(TopicAlreadyExistsError):
                    await admin.create_topics([NewTopic(topic, self.partitions, 1)])
                self._topics.add(topic)
        finally:
            await admin.close()

    async def publish(self, messages: Sequence[Outgoing]) -> None:
        if self._producer is None:
            raise BrokerUnavailable(f"not connected to Kafka at {self.servers}: open it first")
        producer = self._producer
        try:
            await self._create(sorted({self.topic(m.kind, m.to) for m in messages}))
            sent = []
            # Sent in order and keyed by stream: one partition per stream keeps them in order.
            for message in messages:
                headers = [(_to_kafka(k), v.encode()) for k, v in message.headers.items()]
                sent.append(
                    await producer.send(
                        self.topic(message.kind, message.to),
                        message.body,
                        key=message.stream.encode(),
                        headers=headers,
                    )
                )
            await asyncio.wait_for(asyncio.gather(*sent), self.timeout)
        except Exception as exc:
            raise BrokerError(f"Kafka at {self.servers} did not acknowledge: {exc!r}") from exc

    def _topics_of(self, service: str, topics: Sequence[str]) -> list[str]:
        return [self.topic("service", service), *(self.topic("topic", t) for t in topics)]

    async def prepare(self, service: str, topics: Sequence[str]) -> None:
        try:
            await self._create(self._topics_of(service, topics))
        except _FAILURES as exc:
            raise BrokerUnavailable(
                f"cannot create topics on Kafka at {self.servers}: {exc}"
            ) from exc

    async def listen(self, service: str, topics: Sequence[str]) -> None:
        await self.unlisten()
        names = self._topics_of(service, topics)
        consumer = AIOKafkaConsumer(
            *names,
            bootstrap_servers=self.servers,
            group_id=f"{self.namespace}.{service}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=int(self.fetch_wait * 1000),
        )
        try:
            await self._create(names)
            await consumer.start()
        except _FAILURES as exc:
            with contextlib.suppress(*_FAILURES):
                await consumer.stop()
            raise BrokerUnavailable(f"cannot consume from Kafka at {self.servers}: {exc}") from exc
        self._consumer = consumer

    async def unlisten(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            with contextlib.suppress(*_FAILURES):
                await consumer.stop()

    async def receive(self, limit: int, timeout: float) -> list[Delivery]:
        consumer = self._consumer
        if consumer is None:
            return []
        try:
            found = await consumer.getmany(timeout_ms=int(timeout * 1000), max_records=limit)
        except _FAILURES as exc:
            raise BrokerError(f"Kafka at {self.servers}: receiving failed: {exc!r}") from exc
        out = []
        for tp, records in found.items():
            for record in records:
                headers: dict[str, Any] = {_from_kafka(k): v for k, v in record.headers or ()}
                out.append(Delivery(headers, record.value or b"", (tp, record.offset)))
        return out

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        consumer = self._consumer
        if consumer is None or not deliveries:
            return
        offsets: dict[TopicPartition, int] = {}
        for delivery in deliveries:
            tp, offset = delivery.token
            offsets[tp] = max(offsets.get(tp, 0), offset + 1)
        try:
            await consumer.commit(offsets)
        except _FAILURES as exc:
            raise BrokerError(f"Kafka at {self.servers} lost the commit: {exc!r}") from exc


def _to_kafka(header: str) -> str:
    """The Kafka binding's name of a CloudEvents header: ``ce_id`` for ``ce-id``."""
    return "ce_" + header[3:] if header.startswith("ce-") else header


def _from_kafka(header: str) -> str:
    return "ce-" + header[3:] if header.startswith("ce_") else header
