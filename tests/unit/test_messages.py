"""Messages: type names, versions, ids, the codec, upcasters, decode errors."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from tidings import App, Command, Event, MessageDecodeError
from tidings.errors import ConfigurationError, UnknownMessageType
from tidings.messages import Envelope, TypeRegistry, uuid7


class TicketSold(Event, type_name="cinema.TicketSold", version=3):
    seat: str
    price_cents: int


class CancelTicket(Command):
    seat: str


def envelope(type_name: str, data: bytes, version: int = 1) -> Envelope:
    return Envelope(uuid7(), "event", type_name, version, "tickets-1", 4, 9, 0.0, data)


def test_messages_are_frozen_keyword_only_structs_with_type_names() -> None:
    sold = TicketSold(seat="A1", price_cents=900)
    with pytest.raises(AttributeError):
        sold.seat = "B"  # type: ignore[misc]
    with pytest.raises(TypeError):
        TicketSold("A1", 900)  # type: ignore[misc]
    assert TicketSold.__type_name__ == "cinema.TicketSold"
    assert CancelTicket.__type_name__ == "CancelTicket"
    assert CancelTicket.__version__ == 1
    assert TicketSold.__kind__ == "event" and CancelTicket.__kind__ == "command"


def test_a_bad_type_name_is_refused_at_class_definition() -> None:
    with pytest.raises(ValueError, match="type name"):

        class Bad(Event):
            __type_name__ = "has spaces"


def test_uuid7_ids_are_unique_time_ordered_and_well_formed() -> None:
    ids = [uuid7() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)
    for text in ids[:50]:
        assert text[14] == "7"  # version nibble
        assert text[19] in "89ab"  # RFC 9562 variant


def test_decode_round_trip() -> None:
    reg = TypeRegistry()
    reg.register(TicketSold)
    data = msgspec.json.encode(TicketSold(seat="A1", price_cents=900))
    assert reg.decode(envelope("cinema.TicketSold", data, 3)) == TicketSold(
        seat="A1", price_cents=900
    )


def test_a_bad_payload_names_type_stream_position_and_field() -> None:
    reg = TypeRegistry()
    reg.register(TicketSold)
    with pytest.raises(MessageDecodeError) as caught:
        reg.decode(envelope("cinema.TicketSold", b'{"seat":"A1","price_cents":"nine"}', 3))
    text = str(caught.value)
    assert "cinema.TicketSold" in text and "'tickets-1'" in text and "position 4" in text
    assert "price_cents" in text
    with pytest.raises(MessageDecodeError, match=r"truncated|malformed|JSON"):
        reg.decode(envelope("cinema.TicketSold", b'{"seat":', 3))


def test_an_unknown_type_is_a_decode_error_that_says_what_to_do() -> None:
    reg = TypeRegistry()
    with pytest.raises(UnknownMessageType, match="register it"):
        reg.decode(envelope("NoSuchThing", b"{}"))


def test_an_unregistered_type_is_found_among_loaded_classes() -> None:
    reg = TypeRegistry()
    assert reg.resolve("cinema.TicketSold") is TicketSold


def test_two_classes_with_one_type_name_are_refused() -> None:
    reg = TypeRegistry()
    reg.register(TicketSold)

    class Impostor(Event, type_name="cinema.TicketSold"):
        pass

    with pytest.raises(ConfigurationError, match="share the type name"):
        reg.register(Impostor)


async def test_upcasters_bring_old_payloads_to_the_current_version() -> None:
    app = App("t", messages=[TicketSold])

    @app.upcaster("cinema.TicketSold", from_version=1)
    def v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
        return {"seat": data["seat"], "price": 9}

    @app.upcaster("cinema.TicketSold", from_version=2)
    def v2_to_v3(data: dict[str, Any]) -> dict[str, Any]:
        return {"seat": data["seat"], "price_cents": data["price"] * 100}

    old = envelope("cinema.TicketSold", b'{"seat":"C3"}', 1)
    assert app.registry.decode(old) == TicketSold(seat="C3", price_cents=900)


def test_a_missing_upcaster_or_a_newer_version_is_explained() -> None:
    reg = TypeRegistry()
    reg.register(TicketSold)
    with pytest.raises(MessageDecodeError, match=r"no upcaster from version 1"):
        reg.decode(envelope("cinema.TicketSold", b'{"seat":"C3"}', 1))
    with pytest.raises(MessageDecodeError, match="newer than the code"):
        reg.decode(envelope("cinema.TicketSold", b'{"seat":"C3"}', 4))
