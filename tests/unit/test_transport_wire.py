"""The wire format and routes without a broker: a log entry as a CloudEvent and back, what is
not a readable CloudEvent, and routes from code and configuration."""

from __future__ import annotations

import msgspec
import pytest

from tidings import Command, Event
from tidings.errors import ConfigurationError, Unreadable
from tidings.messages import Envelope
from tidings.transports import Routes
from tidings.transports.cloudevents import from_headers, to_headers


class Booked(Event, type_name="wire.Booked"):
    seat: str


class Pay(Command, type_name="wire.Pay"):
    cents: int


def envelope(kind: str = "event", headers: dict[str, str] | None = None) -> Envelope:
    return Envelope(
        "m-1",
        kind,
        "wire.Booked",
        2,
        "hall-1",
        3,
        42,
        1_700_000_000.5,
        b'{"seat":"A1"}',
        "c-1",
        "k-1",
        msgspec.json.encode(headers) if headers else None,
    )


def test_an_entry_travels_as_a_binary_mode_cloudevent_and_back() -> None:
    env = envelope(headers={"traceparent": "00-ab-cd-01", "tenant": "t1"})
    headers = to_headers(env, "cinema")
    assert headers["ce-id"] == "m-1"
    assert headers["ce-source"] == "cinema"
    assert headers["ce-subject"] == "hall-1"
    assert headers["ce-time"].startswith("2023-11-14T22:13:20.5")
    assert headers["ce-traceparent"] == "00-ab-cd-01"
    back = from_headers(headers, env.data)
    assert back.stream == "hall-1" and back.source == "cinema"
    m = back.message
    assert (m.id, m.kind, m.type, m.version, m.data) == ("m-1", "event", "wire.Booked", 2, env.data)
    assert (m.correlation_id, m.causation_id) == ("c-1", "k-1")
    assert msgspec.json.decode(m.headers or b"{}") == {
        "tenant": "t1",
        "traceparent": "00-ab-cd-01",
        "tidings-source": "cinema",
    }


def test_a_command_names_its_sender_for_the_reply() -> None:
    back = from_headers(to_headers(envelope("command"), "cinema"), b'{"seat":"A1"}')
    assert msgspec.json.decode(back.message.headers or b"{}") == {
        "tidings-reply-to": "cinema",
        "tidings-source": "cinema",
    }


@pytest.mark.parametrize(
    ("change", "body", "cause"),
    [
        ({"ce-id": None}, b"{}", "ce-id is missing"),
        ({"ce-specversion": "0.3"}, b"{}", "CloudEvents 1.0"),
        ({}, b"\xff not json", "not JSON"),
        ({"content-type": "text/plain"}, b"{}", "JSON data only"),
        ({"ce-type": "no spaces allowed"}, b"{}", "type name"),
        ({"ce-tidingsversion": "zero"}, b"{}", "ce-tidingsversion"),
    ],
)
def test_what_is_not_a_readable_cloudevent_says_why(
    change: dict[str, str | None], body: bytes, cause: str
) -> None:
    headers: dict[str, str] = dict(to_headers(envelope(), "cinema"))
    for key, value in change.items():
        if value is None:
            headers.pop(key)
        else:
            headers[key] = value
    with pytest.raises(Unreadable, match=cause):
        from_headers(headers, body)


def test_routes_from_code_and_configuration() -> None:
    routes = Routes().publish(Booked, topic="cinema.seats").send(Pay, to="payments")
    routes.override({"send": {"wire.Pay": "billing"}, "subscribe": {"payments": ["*"]}})
    assert routes.topics == {"wire.Booked": "cinema.seats"}
    assert routes.owners == {"wire.Pay": "billing"}
    assert routes.accepts("anything.Else")
    with pytest.raises(ConfigurationError, match="topic name"):
        Routes().publish(Booked, topic="no spaces")
    with pytest.raises(ConfigurationError, match="Command classes"):
        Routes().send(Booked, to="payments")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="relays only its own events"):
        Routes().publish(Booked, topic="a").subscribe("b", Booked)
    with pytest.raises(ConfigurationError, match="unknown keys"):
        Routes().override({"publsh": {}})
