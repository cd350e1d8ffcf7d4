"""Routes: which events a service publishes to which topic, which commands go to which service,
and which topics (and event types) it subscribes to — declared in code, overridable by
configuration.

Event types and command types are keyed by their type names, so configuration (a JSON file, a
deployment's settings) can name them without importing their classes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from tidings.errors import ConfigurationError
from tidings.messages import Command, Event, Message, validate_type_name

#: A topic or service name: valid as an AMQP routing key, a NATS subject and a Kafka topic.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-]{0,99}(\.[A-Za-z0-9][A-Za-z0-9_\-]{0,99}){0,7}")


def validate_route_name(name: str, what: str) -> str:
    """Check a topic or service name: letters, digits, ``_ -``, in dot-separated parts."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigurationError(
            f"{what} name {name!r} is not allowed: use letters, digits, _ and -, in parts "
            "separated by dots (at most 8), for example 'cinema.events'"
        )
    return name


class Routes:
    """Where a service's messages go and what it takes in from other services.

    ``publish(SeatReserved, topic="cinema")``: these events of ours are relayed to a topic (every
    service subscribed to it receives them). ``send(RequestPayment, to="payments")``: these
    commands are carried out by another service (one queue: exactly one recipient). Commands this
    service handles arrive on its own queue without a route. ``subscribe("payments",
    PaymentReceived)``: record these events of that topic (all of its events without types).
    """

    def __init__(self) -> None:
        #: event type name -> topic
        self.topics: dict[str, str] = {}
        #: command type name -> the service that handles it
        self.owners: dict[str, str] = {}
        #: topic -> the event type names taken from it (``None``: all of them)
        self.subscriptions: dict[str, frozenset[str] | None] = {}
        #: the classes named in code (registered with the App, to decode them)
        self.classes: list[type[Message]] = []

    def publish(self, *events: type[Event], topic: str) -> Routes:
        """Relay these event types (this service's own) to ``topic``."""
        validate_route_name(topic, "topic")
        for cls in self._classes(events, Event, "publish"):
            self.topics[cls.__type_name__] = topic
        self._check()
        return self

    def send(self, *commands: type[Command], to: str) -> Routes:
        """Send these command types to service ``to``, which handles them."""
        validate_route_name(to, "service")
        for cls in self._classes(commands, Command, "send"):
            self.owners[cls.__type_name__] = to
        return self

    def subscribe(self, topic: str, *events: type[Event]) -> Routes:
        """Record the events of ``topic`` (only these types, when given) in this service's log."""
        validate_route_name(topic, "topic")
        names = frozenset(cls.__type_name__ for cls in self._classes(events, Event, "subscribe"))
        self._subscribe(topic, names or None)
        return self

    def _subscribe(self, topic: str, names: frozenset[str] | None) -> None:
        if topic in self.subscriptions:
            known = self.subscriptions[topic]
            names = None if known is None or names is None else known | names
        self.subscriptions[topic] = names
        self._check()

    def _classes(
        self, classes: Iterable[type[Message]], base: type[Message], verb: str
    ) -> list[type[Message]]:
        found = list(classes)
        for cls in found:
            if not (isinstance(cls, type) and issubclass(cls, base)):
                raise ConfigurationError(
                    f"routes.{verb} takes {base.__name__} classes, got {cls!r}: "
                    + (
                        "events are published to topics"
                        if base is Command
                        else "commands are sent to a service"
                    )
                )
        self.classes += found
        return found

    def _check(self) -> None:
        for topic, names in self.subscriptions.items():
            for name in names or ():
                if name in self.topics:
                    raise ConfigurationError(
                        f"{name} is both published by this service (to {self.topics[name]!r}) "
                        f"and taken in from topic {topic!r}: a service relays only its own events"
                    )

    def override(self, config: Mapping[str, Any]) -> Routes:
        """Change routes by configuration: ``{"publish": {"SeatReserved": "cinema"}, "send":
        {"RequestPayment": "payments"}, "subscribe": {"payments": ["PaymentReceived"]}}`` (a
        topic's list ``["*"]`` takes all its events). Keys not given keep their routes."""
        unknown = set(config) - {"publish", "send", "subscribe"}
        if unknown:
            raise ConfigurationError(
                f"routes configuration: unknown keys {sorted(unknown)}; use publish, send and "
                "subscribe"
            )
        for name, topic in _mapping(config, "publish").items():
            self.topics[validate_type_name(name)] = validate_route_name(str(topic), "topic")
        for name, service in _mapping(config, "send").items():
            self.owners[validate_type_name(name)] = validate_route_name(str(service), "service")
        for topic, names in _mapping(config, "subscribe").items():
            validate_route_name(topic, "topic")
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise ConfigurationError(
                    f"routes configuration: subscribe[{topic!r}] must be a list of event type "
                    "names (['*'] for all)"
                )
            chosen = None if "*" in names else frozenset(validate_type_name(n) for n in names)
            self.subscriptions.pop(topic, None)
            self._subscribe(topic, chosen)
        self._check()
        return self

    def load(self, path: str | Path) -> Routes:
        """Override routes from a JSON file (see :meth:`override`)."""
        try:
            config = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise ConfigurationError(f"cannot read routes from {path}: {exc}") from exc
        if not isinstance(config, dict):
            raise ConfigurationError(f"routes file {path}: want a JSON object")
        return self.override(config)

    def accepts(self, type_name: str) -> bool:
        """Whether an event of this type from a subscribed topic is recorded."""
        return any(names is None or type_name in names for names in self.subscriptions.values())


def _mapping(config: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = config.get(key, {})
    if not isinstance(value, Mapping):
        raise ConfigurationError(f"routes configuration: {key!r} must be an object")
    return value
