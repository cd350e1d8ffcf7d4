"""An App's AsyncAPI 3.0 document: a channel per message type, the App's operations on them,
the messages with their JSON Schemas (from msgspec), CloudEvents headers and correlation ids;
for a connected App, its broker as a server and its routes as channels with their bindings."""

from __future__ import annotations

import re
import types
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import msgspec

from tidings.messages import Message
from tidings.topology.links import BrokerLink
from tidings.topology.model import MessageType, Topology, explore

if TYPE_CHECKING:
    from tidings.app import App

SCHEMAS = "#/components/schemas/{name}"

#: the CloudEvents 1.0 attributes a message carries when it crosses a broker (binary mode: each
#: protocol binding prefixes them, ``ce_`` for Kafka, ``cloudEvents:`` for AMQP)
CLOUDEVENTS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "specversion": {"type": "string", "const": "1.0"},
        "id": {"type": "string", "description": "The message id (UUIDv7): the dedup key."},
        "source": {"type": "string", "description": "The App that recorded it."},
        "type": {"type": "string", "description": "The message's type name."},
        "time": {"type": "string", "format": "date-time"},
        "datacontenttype": {"type": "string", "const": "application/json"},
        "correlationid": {"type": "string", "description": "The conversation it belongs to."},
        "causationid": {"type": "string", "description": "The message that caused it."},
    },
    "required": ["specversion", "id", "source", "type"],
}


def _key(text: str) -> str:
    """``text`` as an AsyncAPI component or channel key."""
    return re.sub(r"[^\w.\-]", "_", text)


def server(url: str) -> dict[str, Any]:
    """The store as an AsyncAPI server (its credentials left out)."""
    parts = urlsplit(url)
    protocol = parts.scheme or "memory"
    host = parts.hostname or "localhost"
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    found: dict[str, Any] = {
        "host": host,
        "protocol": protocol,
        "description": "The store: the log every message is recorded in, and delivered from.",
    }
    path = parts.path[1:] if parts.path.startswith("//") else parts.path  # sqlite:////abs.db
    if path and path != "/":
        found["pathname"] = path
    return found


def document(
    app: App, modules: Iterable[types.ModuleType] = (), *, version: str = "1.0.0"
) -> dict[str, Any]:
    """The AsyncAPI 3.0.0 document of ``app`` (JSON values)."""
    topology, classes = explore(app, modules)
    return from_topology(topology, classes, version=version)


def from_topology(
    topology: Topology, classes: dict[str, type[Message]], *, version: str = "1.0.0"
) -> dict[str, Any]:
    """The AsyncAPI document of a topology whose message classes are ``classes``."""
    shown = [m for m in topology.messages if not m.internal or _touched(topology, m)]
    _, schemas = msgspec.json.schema_components(
        [classes[m.type_name] for m in shown], ref_template=SCHEMAS
    )
    channels: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for m in shown:
        key = _key(m.type_name)
        messages[key] = _message(m, key)
        channels[key] = _channel(m, key)
    servers = {"store": server(topology.store)}
    operations = _operations(topology, shown)
    if topology.links:
        for channel in channels.values():
            channel["servers"] = [{"$ref": "#/servers/store"}]
        for number, link in enumerate(topology.links):
            name = "broker" if number == 0 else f"broker{number + 1}"
            servers[name] = _broker(link)
            _routes(topology, link, name, shown, channels, operations)
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": topology.app,
            "version": version,
            "description": f"The commands and events of the tidings App {topology.app!r}.",
        },
        "defaultContentType": "application/json",
        "servers": servers,
        "channels": channels,
        "operations": operations,
        "components": {
            "schemas": schemas,
            "messages": messages,
            "messageTraits": {
                "cloudevents": {
                    "headers": CLOUDEVENTS,
                    "description": "CloudEvents 1.0 attributes (binary mode).",
                }
            },
            "correlationIds": {
                "correlation": {
                    "description": "Every message caused by one request shares its id.",
                    "location": "$message.header#/correlationid",
                }
            },
        },
    }


def _broker(link: BrokerLink) -> dict[str, Any]:
    found: dict[str, Any] = {
        "host": link.host,
        "protocol": link.protocol,
        "description": f"The broker {link.service!r} relays its routed messages to and takes in "
        "what other services send it (CloudEvents 1.0, binary mode)"
        + (f"; everything named under {link.namespace!r}." if link.namespace else "."),
    }
    return found


def _routes(
    topology: Topology,
    link: BrokerLink,
    server_name: str,
    shown: list[MessageType],
    channels: dict[str, Any],
    operations: dict[str, Any],
) -> None:
    """Add ``link``'s routes: a channel each, sent by the relay or received by the inbox (a
    topic taken whole carries the events the App handles and does not publish itself)."""
    names = {m.type_name for m in shown}
    taken = [
        m.type_name
        for m in shown
        if m.kind == "event" and topology.handling(m.type_name) and not topology.routed(m.type_name)
    ]
    for c in link.channels:
        key = _key(f"{server_name}.{c.action}.{c.kind}.{c.name}")
        types = [t for t in c.types if t in names] if c.types is not None else taken
        kind = "the topic" if c.kind == "topic" else "the queue of service"
        channel: dict[str, Any] = {
            "address": c.address,
            "title": f"{kind} {c.name}",
            "description": (
                f"{link.service} relays these to {kind} {c.name}."
                if c.action == "send"
                else f"{link.service}'s inbox records what arrives from {kind} {c.name}."
            ),
            "servers": [{"$ref": f"#/servers/{server_name}"}],
            "messages": {_key(t): {"$ref": f"#/components/messages/{_key(t)}"} for t in types},
        }
        if "{partition}" in c.address:
            channel["parameters"] = {
                "partition": {"description": "The tidings stream's hash: one stream, one subject."}
            }
        if c.bindings:
            channel["bindings"] = c.bindings
        channels[key] = channel
        verb = "relay" if c.action == "send" else "inbox"
        operations[_key(f"{verb}.{server_name}.{c.kind}.{c.name}")] = {
            "action": c.action,
            "channel": {"$ref": f"#/channels/{key}"},
            "messages": [{"$ref": f"#/channels/{key}/messages/{_key(t)}"} for t in types],
            "summary": channel["description"],
        }


def _touched(topology: Topology, m: MessageType) -> bool:
    """Whether the App's own code handles a framework type (a ``CommandFailed`` subscriber)."""
    return any(h.role == "subscriber" for h in topology.handling(m.type_name))


def _message(m: MessageType, key: str) -> dict[str, Any]:
    found: dict[str, Any] = {
        "name": m.type_name,
        "title": m.name,
        "contentType": "application/json",
        "payload": {"$ref": SCHEMAS.format(name=m.name)},
        "correlationId": {"$ref": "#/components/correlationIds/correlation"},
        "traits": [{"$ref": "#/components/messageTraits/cloudevents"}],
        "x-tidings-kind": m.kind,
    }
    if m.doc:
        found["summary"] = m.doc.splitlines()[0]
    return found


def _channel(m: MessageType, key: str) -> dict[str, Any]:
    if m.kind == "command":
        address = f"cmd:{m.type_name}"
        what = f"The queue of sent {m.name} commands: one recipient, its one handler."
    else:
        address = m.type_name
        what = f"{m.name} events, in whatever stream they are recorded: every subscriber sees each."
    return {
        "address": address,
        "title": m.name,
        "description": what,
        "messages": {key: {"$ref": f"#/components/messages/{key}"}},
    }


_SENT = {
    "send": "{} is sent: recorded, carried out later by its one handler, with an outcome.",
    "invoke": "{} is invoked: carried out now, the caller gets the result or the refusal.",
}


def _operations(topology: Topology, shown: list[MessageType]) -> dict[str, Any]:
    operations: dict[str, Any] = {}

    def add(name: str, action: str, m: MessageType, summary: str) -> None:
        key = _key(m.type_name)
        operations[_key(name)] = {
            "action": action,
            "channel": {"$ref": f"#/channels/{key}"},
            "messages": [{"$ref": f"#/channels/{key}/messages/{key}"}],
            "summary": summary,
        }

    for m in shown:
        for h in topology.handling(m.type_name):
            if m.kind == "command":
                add(f"handle.{m.name}", "receive", m, f"{h.name} carries out {m.name}.")
            else:
                add(f"{h.name}.on.{m.name}", "receive", m, f"{h.role} {h.name} reacts to {m.name}.")
        verbs = sorted({u.verb for u in topology.usages if u.message == m.type_name})
        for verb in verbs:
            if verb in ("send", "invoke"):
                add(f"{verb}.{m.name}", "send", m, _SENT[verb].format(m.name))
            elif m.kind == "event":
                add(f"publish.{m.name}", "send", m, f"{m.name} is recorded for every subscriber.")
    return operations
