"""A stored row damaged by hand must fail loudly and precisely, never as a bare msgspec/JSON error.

Events are appended through the SQLite backend, then one row is changed with the ``sqlite3``
module. Reading it (``read_stream``, ``read_all``, or loading it in a decider) must raise
``MessageDecodeError`` naming the stream, the position and the type; rows around it stay readable.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import msgspec
import pytest

from tidings import App, Command, Decider, Event, MessageDecodeError
from tidings.errors import UnknownMessageType

STREAM = "ledger-7"
OTHER = "ledger-8"
DAMAGED = 2  # the stream position of the damaged row


class CorruptibleDeposited(Event):
    account: str
    amount: int


class CorruptibleDeposit(Command):
    account: str
    amount: int


def url(path: Path) -> str:
    return f"sqlite:///{path}"


def make_app(path: Path) -> App:
    return App("ledger", store=url(path), messages=[CorruptibleDeposited, CorruptibleDeposit])


@pytest.fixture
async def db(tmp_path: Path) -> Path:
    path = tmp_path / "ledger.db"
    async with make_app(path) as app:
        for stream in (STREAM, OTHER):
            await app.append(
                stream,
                [CorruptibleDeposited(account=stream, amount=n) for n in range(1, 5)],
            )
        assert len(await app.read_stream(STREAM)) == 4
    return path


def damage(path: Path, column: str, sql_value: str, params: tuple[object, ...] = ()) -> None:
    """Set ``column`` of the row at position ``DAMAGED`` of ``STREAM`` to an SQL expression."""
    with sqlite3.connect(path) as conn:
        changed = conn.execute(
            f"UPDATE tidings_log SET {column} = {sql_value} "
            "WHERE stream = ? AND stream_position = ?",
            (*params, STREAM, DAMAGED),
        ).rowcount
    conn.close()
    assert changed == 1


def assert_names_the_row(exc: MessageDecodeError, type_name: str) -> None:
    text = str(exc)
    assert f"stream {STREAM!r}" in text, text
    assert f"position {DAMAGED}" in text, text
    assert f"type {type_name!r}" in text, text
    assert exc.stream == STREAM
    assert exc.position == DAMAGED
    assert exc.type_name == type_name
    assert not isinstance(exc, (msgspec.MsgspecError, ValueError, TypeError))


# Payloads that are not a CorruptibleDeposited, as an SQL expression and bound parameters.
BAD_PAYLOADS = {
    "invalid JSON text": ("?", ("{not json",)),
    "invalid JSON blob": ("?", (b'{"account": "ledger-7", "amount": 1',)),
    "non-UTF-8 bytes in a blob": ("x'ff00fe'", ()),
    "empty payload": ("x''", ()),
    "wrong field type": ("?", (b'{"account": "ledger-7", "amount": "one hundred"}',)),
    "missing field": ("?", (b'{"account": "ledger-7"}',)),
    "JSON array, not an object": ("?", (b"[1, 2]",)),
}


@pytest.mark.parametrize("case", list(BAD_PAYLOADS))
async def test_damaged_payload_raises_decode_error_naming_stream_position_and_type(
    db: Path, case: str
) -> None:
    sql_value, params = BAD_PAYLOADS[case]
    damage(db, "data", sql_value, params)
    async with make_app(db) as app:
        with pytest.raises(MessageDecodeError) as raised:
            await app.read_stream(STREAM)
        assert type(raised.value) is MessageDecodeError
        assert_names_the_row(raised.value, "CorruptibleDeposited")

        with pytest.raises(MessageDecodeError) as raised:
            await app.read_all()
        assert_names_the_row(raised.value, "CorruptibleDeposited")

        # The damage is confined to its row.
        after = await app.read_stream(STREAM, from_position=DAMAGED + 1)
        assert [env.message.amount for env in after] == [3, 4]
        assert [env.message.amount for env in await app.read_stream(OTHER)] == [1, 2, 3, 4]


async def test_wrong_field_type_says_which_field(db: Path) -> None:
    damage(db, "data", "?", (b'{"account": 42, "amount": 2}',))
    async with make_app(db) as app:
        with pytest.raises(MessageDecodeError) as raised:
            await app.read_stream(STREAM)
    assert "account" in str(raised.value)
    assert "Expected `str`, got `int`" in str(raised.value)


async def test_decider_on_damaged_stream_raises_decode_error_and_appends_nothing(db: Path) -> None:
    damage(db, "data", "?", ("{not json",))
    decided_on: list[int] = []

    def decide(cmd: CorruptibleDeposit, balance: int) -> list[Event]:
        decided_on.append(balance)
        return [CorruptibleDeposited(account=cmd.account, amount=cmd.amount)]

    async with make_app(db) as app:
        app.decider(
            Decider(
                decide=decide,
                evolve=lambda balance, event: balance + event.amount,
                initial=0,
                stream=lambda cmd: cmd.account,
            ),
            CorruptibleDeposit,
        )
        with pytest.raises(MessageDecodeError) as raised:
            await app.invoke(CorruptibleDeposit(account=STREAM, amount=10))
        assert_names_the_row(raised.value, "CorruptibleDeposited")
        # Decided at most on the state assumed for a stream this App never saw (empty: 0), whose
        # append conflicted; never on a state folded from the damaged stream.
        assert decided_on in ([], [0])
        assert await app.store.stream_version(STREAM) == 4


async def test_unknown_stored_type_raises_decode_error_subclass_naming_it(db: Path) -> None:
    damage(db, "type", "?", ("NoSuchClassAnywhere",))
    async with make_app(db) as app:
        with pytest.raises(MessageDecodeError) as raised:
            await app.read_stream(STREAM)
    exc = raised.value
    assert isinstance(exc, UnknownMessageType)
    assert type(exc) is not MessageDecodeError
    assert "NoSuchClassAnywhere" in str(exc)
    assert_names_the_row(exc, "NoSuchClassAnywhere")


# --- damage of another kind: the payload is no longer text or bytes --------------------------
#
# A row edited by hand (or by a broken migration) can hold a value of another SQLite storage
# class. That is still one damaged message and must be reported as one, naming where it is.

NON_TEXT_PAYLOADS = {
    "integer": "42",
    "real": "1.5",
    "text that is not UTF-8": "CAST(x'ff' AS TEXT)",
}


@pytest.mark.parametrize("case", list(NON_TEXT_PAYLOADS))
async def test_payload_of_another_storage_class_raises_decode_error(db: Path, case: str) -> None:
    damage(db, "data", NON_TEXT_PAYLOADS[case])
    async with make_app(db) as app:
        with pytest.raises(MessageDecodeError) as raised:
            await app.read_stream(STREAM)
    assert_names_the_row(raised.value, "CorruptibleDeposited")


async def test_non_integer_stored_version_raises_decode_error(db: Path) -> None:
    damage(db, "version", "?", ("one",))
    async with make_app(db) as app:
        with pytest.raises(MessageDecodeError) as raised:
            await app.read_stream(STREAM)
    assert_names_the_row(raised.value, "CorruptibleDeposited")
