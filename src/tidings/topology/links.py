"""Where an App's broker routes are (``app.connect(broker, routes)``): the topics and service
queues it sends to and receives from, named as its broker names them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from tidings.delivery.replies import OutcomeReported

if TYPE_CHECKING:
    from tidings.app import App
    from tidings.transports import Broker, Link

#: the AsyncAPI protocol of each broker tidings ships, by the module of its class
PROTOCOLS = {
    "tidings.transports.rabbitmq": "amqp",
    "tidings.transports.nats": "nats",
    "tidings.transports.kafka": "kafka",
}


class Channel(msgspec.Struct, frozen=True):
    """One route on the broker: what the App sends there or receives from there."""

    #: ``send`` or ``receive``
    action: str
    #: ``topic`` (events, every subscribed service gets a copy) or ``service`` (its one queue)
    kind: str
    #: the topic or the service
    name: str
    #: the type names carried (``None``: every event of the topic)
    types: list[str] | None
    #: where it is on the broker: a routing key, a subject (``{partition}``: one of 16), a topic
    address: str
    #: AsyncAPI channel bindings for the broker's protocol
    bindings: dict[str, Any] = {}


class BrokerLink(msgspec.Struct, frozen=True):
    """An App's link to a broker: the broker, and the App's channels on it."""

    service: str
    protocol: str
    #: host (and port) without credentials
    host: str
    namespace: str | None
    channels: list[Channel]
    #: the subscription names of its relay and of its inbox's lease
    relay: str
    inbox: str

    def consumed(self) -> list[str]:
        """Where its inbox receives from, as the broker names it (on RabbitMQ: its queue, and
        each topic as ``exchange/routing key`` bound to it)."""
        found = []
        for c in self.channels:
            if c.action == "receive":
                exchange = c.bindings.get("amqp", {}).get("exchange", {}).get("name")
                found.append(c.address if exchange is None else f"{exchange}/{c.address}")
        return found


def protocol_of(broker: Broker) -> str:
    """``amqp``, ``nats``, ``kafka``, or the scheme of the URL of another broker."""
    found = PROTOCOLS.get(type(broker).__module__)
    return found or broker.url.partition("://")[0] or type(broker).__name__.lower()


def _host(url: str) -> str:
    rest = url.partition("://")[2] or url
    return rest.rpartition("@")[2].partition("/")[0] or "localhost"


def _address(broker: Broker, protocol: str, kind: str, name: str) -> tuple[str, dict[str, Any]]:
    """Where a topic or a service's queue is on ``broker``, with its AsyncAPI bindings."""
    b: Any = broker
    if protocol == "amqp":
        exchange = b.events_exchange if kind == "topic" else b.commands_exchange
        return name, {
            "amqp": {
                "is": "routingKey",
                "exchange": {"name": exchange, "type": "topic" if kind == "topic" else "direct"},
                "bindingVersion": "0.3.0",
            }
        }
    if protocol == "nats":
        subject = str(b.subject(kind, name, "")).rpartition(".")[0]
        return subject + ".{partition}", {}
    if protocol == "kafka":
        topic = str(b.topic(kind, name))
        return topic, {
            "kafka": {"topic": topic, "partitions": b.partitions, "bindingVersion": "0.5.0"}
        }
    return name, {}


def _queue(broker: Broker, protocol: str, service: str) -> tuple[str, dict[str, Any]]:
    """Where a service receives its commands (and outcomes), with its bindings."""
    if protocol == "amqp":
        queue = str(getattr(broker, "queue_name")(service))  # noqa: B009 - RabbitMQ's
        return queue, {
            "amqp": {
                "is": "queue",
                "queue": {"name": queue, "durable": True, "exclusive": False},
                "bindingVersion": "0.3.0",
            }
        }
    return _address(broker, protocol, "service", service)


def describe(link: Link, handled: list[str]) -> BrokerLink:
    """``link`` with its channels; ``handled``: the command types its App handles."""
    broker, routes, service = link.broker, link.routes, link.app.name
    protocol = protocol_of(broker)
    channels: list[Channel] = []
    by_topic: dict[str, list[str]] = {}
    for type_name, topic in routes.topics.items():
        by_topic.setdefault(topic, []).append(type_name)
    for topic, names in sorted(by_topic.items()):
        channels.append(
            Channel(
                "send", "topic", topic, sorted(names), *_address(broker, protocol, "topic", topic)
            )
        )
    by_owner: dict[str, list[str]] = {}
    for type_name, owner in routes.owners.items():
        by_owner.setdefault(owner, []).append(type_name)
    for owner, names in sorted(by_owner.items()):
        channels.append(
            Channel(
                "send",
                "service",
                owner,
                sorted(names),
                *_address(broker, protocol, "service", owner),
            )
        )
    received = sorted(handled) + ([OutcomeReported.__type_name__] if routes.owners else [])
    channels.append(
        Channel("receive", "service", service, received, *_queue(broker, protocol, service))
    )
    for topic, taken in sorted(routes.subscriptions.items()):
        types = None if taken is None else sorted(taken)
        channels.append(
            Channel("receive", "topic", topic, types, *_address(broker, protocol, "topic", topic))
        )
    return BrokerLink(
        service,
        protocol,
        _host(broker.url),
        getattr(broker, "namespace", None),
        channels,
        link.relay.name,
        link.inbox.name,
    )


def links_of(app: App) -> list[BrokerLink]:
    """Every link of ``app`` (``app.connect``), described."""
    handled = sorted(cls.__type_name__ for cls in app.handlers.commands)
    return [describe(link, handled) for link in app.links]
