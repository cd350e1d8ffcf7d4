"""The wire format: a log entry as a CloudEvent 1.0 in binary content mode, and back.

Binary mode (the AMQP, NATS and Kafka protocol bindings' ``ce-`` headers): the attributes travel
as headers (``ce-id``, ``ce-type``, ``ce-source``, ``ce-subject``, ``ce-time``), the data is the
message's JSON payload as it is stored. Extensions carry what tidings needs besides:
``correlationid``, ``causationid``, W3C trace context (``traceparent``, ``tracestate``), the
message's kind and schema version, and any other headers as one JSON object.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

import msgspec

from tidings.delivery.replies import REPLY_TO
from tidings.errors import InvalidName, Unreadable
from tidings.messages import (
    MAX_STREAM_LENGTH,
    Envelope,
    NewMessage,
    validate_message_id,
    validate_type_name,
)
from tidings.records import ARRIVED_FROM

SPEC_VERSION: Final = "1.0"
CONTENT_TYPE: Final = "application/json"
#: Headers that travel as CloudEvents extensions of their own (W3C trace context).
_TRACE = ("traceparent", "tracestate")
_encoder = msgspec.json.Encoder()
_headers_decoder = msgspec.json.Decoder(dict[str, str])


class Incoming(msgspec.Struct, frozen=True):
    """A CloudEvent read from the broker: the message to record, its stream, who sent it."""

    message: NewMessage
    stream: str
    source: str


def to_headers(env: Envelope, source: str) -> dict[str, str]:
    """The ``ce-`` headers (and ``content-type``) of ``env`` sent by service ``source``; the
    body is ``env.data``."""
    headers = {
        "content-type": CONTENT_TYPE,
        "ce-specversion": SPEC_VERSION,
        "ce-id": env.id,
        "ce-type": env.type,
        "ce-source": source,
        "ce-subject": env.stream,
        "ce-time": datetime.fromtimestamp(env.recorded_at, tz=UTC).isoformat(),
        "ce-tidingskind": env.kind,
        "ce-tidingsversion": str(env.version),
    }
    if env.correlation_id:
        headers["ce-correlationid"] = env.correlation_id
    if env.causation_id:
        headers["ce-causationid"] = env.causation_id
    if env.headers_json:
        extra = dict(env.headers)
        for name in _TRACE:
            value = extra.pop(name, None)
            if value is not None:
                headers[f"ce-{name}"] = value
        if extra:
            headers["ce-tidingsheaders"] = _encoder.encode(extra).decode()
    return headers


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes | bytearray) else str(value)


def from_headers(raw: Mapping[str, Any], body: bytes) -> Incoming:
    """The message a binary-mode CloudEvent carries. Raises ``Unreadable`` with the cause when
    it is not one tidings can record (a required attribute missing or invalid, data not JSON)."""
    headers = {key.lower(): _text(value) for key, value in raw.items()}
    try:
        return _decode(headers, body)
    except (InvalidName, UnicodeDecodeError) as exc:
        raise Unreadable(str(exc)) from exc


def _decode(headers: dict[str, str], body: bytes) -> Incoming:
    def required(name: str) -> str:
        value = headers.get(f"ce-{name}")
        if not value:
            raise Unreadable(f"the CloudEvent attribute ce-{name} is missing")
        return value

    spec = required("specversion")
    if spec != SPEC_VERSION:
        raise Unreadable(f"ce-specversion is {spec!r}; tidings reads CloudEvents {SPEC_VERSION}")
    message_id = validate_message_id(required("id"))
    type_name = validate_type_name(required("type"))
    source = required("source")
    content_type = headers.get("content-type", headers.get("ce-datacontenttype", CONTENT_TYPE))
    if not content_type.split(";")[0].strip().endswith("json"):
        raise Unreadable(f"the data is {content_type!r}; tidings reads JSON data only")
    try:
        msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        raise Unreadable(f"the data is not JSON: {exc}") from exc
    kind = headers.get("ce-tidingskind", "event")
    if kind not in ("event", "command"):
        raise Unreadable(f"ce-tidingskind is {kind!r}: use 'event' or 'command'")
    version_text = headers.get("ce-tidingsversion", "1")
    if not version_text.isdigit() or int(version_text) < 1:
        raise Unreadable(f"ce-tidingsversion is {version_text!r}: want an integer >= 1")
    stream = headers.get("ce-subject") or type_name
    if len(stream) > MAX_STREAM_LENGTH or not stream.isprintable():
        raise Unreadable(f"ce-subject {stream[:80]!r} is not a stream name tidings can record")
    extra: dict[str, str] = {}
    if "ce-tidingsheaders" in headers:
        try:
            extra = _headers_decoder.decode(headers["ce-tidingsheaders"])
        except msgspec.DecodeError as exc:
            raise Unreadable(f"ce-tidingsheaders is not a JSON object of strings: {exc}") from exc
    for name in _TRACE:
        if f"ce-{name}" in headers:
            extra[name] = headers[f"ce-{name}"]
    extra[ARRIVED_FROM] = source  # the service it came from (ce-source)
    if kind == "command":
        extra[REPLY_TO] = source
    return Incoming(
        NewMessage(
            message_id,
            kind,
            type_name,
            int(version_text),
            body,
            headers.get("ce-correlationid") or message_id,
            headers.get("ce-causationid"),
            _encoder.encode(extra) if extra else None,
        ),
        stream,
        source,
    )
