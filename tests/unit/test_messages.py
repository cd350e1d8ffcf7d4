"""Messages: type names, versions, ids, the codec, upcasters, decode errors."""

from __future__ import annotations

import itertools
import os
import re
import threading
import time
import uuid
from typing import Any

import msgspec
import pytest

from tidings import App, Command, Event, MessageDecodeError
from tidings import ids as id_source
from tidings.errors import ConfigurationError, UnknownMessageType
from tidings.ids import uuid7
from tidings.messages import Envelope, TypeRegistry


class TicketSold(Event, type_name="cinema.TicketSold", version=3):
    seat: str
    price_cents: int


class CancelTicket(Command):
    seat: str


def envelope(type_name: str, data: bytes, version: int = 1) -> Envelope:
    return Envelope(uuid7(), "event", type_name, version, "tickets-1", 4, 9, 0.0, data)


def test_messages_are_frozen_structs_with_type_names() -> None:
    sold = TicketSold(seat="A1", price_cents=900)
    with pytest.raises(AttributeError):
        sold.seat = "B"  # type: ignore[misc]
    assert TicketSold("A1", 900) == sold  # by position too, as a dataclass (issue 19)
    with pytest.raises(TypeError):
        TicketSold("A1", 900, "extra")  # type: ignore[call-arg]
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


_UUID7 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


def test_uuid7_ids_carry_the_millisecond_version_and_variant() -> None:
    before = time.time_ns() // 1_000_000
    text = uuid7()
    after = time.time_ns() // 1_000_000
    assert _UUID7.fullmatch(text)
    parsed = uuid.UUID(text)
    assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
    assert before <= parsed.int >> 80 <= after  # the first 48 bits are the Unix time in ms


def test_uuid7_ids_keep_increasing_when_the_clock_steps_back_or_a_millisecond_runs_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The generator's state is put back afterwards, or later ids would stay in this test's future.
    for name in ("_uuid_state", "_uuid_head"):
        monkeypatch.setattr(id_source, name, getattr(id_source, name))
    now = [5_000_000_000_000 * 1_000_000]  # ns: a millisecond after any the process has seen
    monkeypatch.setattr(id_source, "_uuid_time_ns", lambda: now[0])
    # within a millisecond the last 48 bits count up by one (past a wrap of their last byte)
    ids = [uuid7() for _ in range(300)]
    counters = [int(i[-12:], 16) for i in ids]
    assert counters == list(range(counters[0], counters[0] + 300))
    now[0] -= 10_000_000  # the clock steps back 10 ms: ids stay in the last millisecond seen
    ids += [uuid7() for _ in range(3)]
    # a millisecond whose counter is used up: the next id borrows the following millisecond
    millisecond, prefix, _ = id_source._uuid_state
    counter = itertools.count(id_source._UUID_COUNTER_MAX)
    monkeypatch.setattr(id_source, "_uuid_state", (millisecond, prefix, counter))
    ids.append(uuid7())  # the counter's last value
    ids.append(uuid7())
    now[0] += 20_000_000
    ids += [uuid7() for _ in range(3)]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert all(_UUID7.fullmatch(i) for i in ids)
    ms = [uuid.UUID(i).int >> 80 for i in ids]
    assert ms == [5_000_000_000_000] * 304 + [5_000_000_000_001] + [5_000_000_000_010] * 3
    assert int(ids[303][-12:], 16) == id_source._UUID_COUNTER_MAX


def test_uuid7_ids_from_many_threads_are_unique_and_each_thread_s_increase() -> None:
    made: list[list[str]] = [[] for _ in range(4)]

    def make(out: list[str]) -> None:
        out.extend(uuid7() for _ in range(5_000))

    threads = [threading.Thread(target=make, args=(out,)) for out in made]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(out == sorted(out) for out in made)
    assert len({i for out in made for i in out}) == 20_000


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_makes_ids_of_its_own_after_the_parent_s(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("_uuid_state", "_uuid_head"):
        monkeypatch.setattr(id_source, name, getattr(id_source, name))
    now = 5_000_000_000_000 * 1_000_000  # one millisecond for parent and child alike
    monkeypatch.setattr(id_source, "_uuid_time_ns", lambda: now)
    before = uuid7()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its ids, then out without pytest's clean-up
        try:
            os.write(write, " ".join(uuid7() for _ in range(1_000)).encode())
        finally:
            os._exit(0)
    os.close(write)
    parent = [uuid7() for _ in range(1_000)]
    with os.fdopen(read) as pipe:
        child = pipe.read().split()
    os.waitpid(pid, 0)
    assert len(child) == 1_000 and child == sorted(child) and child[0] > before
    assert not set(child) & set(parent)


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
