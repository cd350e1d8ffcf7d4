"""Results read naturally: a sent command's result as its declared type; every public class has
working help; one name per thing; a damaged document names its collection and key."""

from __future__ import annotations

import inspect
import pydoc
import sqlite3
from pathlib import Path
from typing import Any

import msgspec
import pytest

import tidings
import tidings.testing
import tidings.workflow
from tidings import App, Command, Context, Event
from tidings.errors import DocumentDecodeError, MessageDecodeError


class Charge(Command):
    amount: int


class Receipt(msgspec.Struct):
    amount: int
    note: str


class Quote(Command):
    amount: int


class Untyped(Command):
    amount: int


class Lying(Command):
    amount: int


def make_app(store: str = "memory://") -> App:
    app = App("results", store=store)

    @app.command
    async def charge(cmd: Charge, ctx: Context) -> Receipt:
        return Receipt(amount=cmd.amount, note=f"charged {cmd.amount}")

    @app.command
    def quote(cmd: Quote, ctx: Context) -> str:
        return f"charged {cmd.amount}"

    @app.command
    def untyped(cmd: Untyped, ctx: Context):  # type: ignore[no-untyped-def]
        return {"amount": cmd.amount, "items": [1, 2]}

    @app.command
    def lying(cmd: Lying, ctx: Context) -> int:
        return "not an int"  # type: ignore[return-value]

    return app


@pytest.mark.parametrize("store", ["memory://", "sqlite"])
async def test_a_sent_commands_result_is_its_declared_return_type(
    store: str, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}" if store == "sqlite" else store
    async with make_app(url) as app:
        receipt = await app.send(Charge(amount=5))
        quote = await app.send(Quote(amount=5))
        untyped = await app.send(Untyped(amount=5))
        await app.worker().drain()
        assert await receipt.result(1) == Receipt(amount=5, note="charged 5")
        assert await quote.result(1) == "charged 5"
        assert await untyped.result(1) == {"amount": 5, "items": [1, 2]}
        assert (await quote.outcome()).result == b'"charged 5"'  # the raw JSON stays there


async def test_a_result_that_contradicts_its_annotation_is_a_clear_error() -> None:
    async with make_app() as app:
        ticket = await app.send(Lying(amount=1))
        await app.worker().drain()
        with pytest.raises(MessageDecodeError) as error:
            await ticket.result(1)
    text = str(error.value)
    assert "lying" in text and "Expected `int`, got `str`" in text and "outcome.result" in text


def public_classes() -> list[tuple[str, type]]:
    found = []
    for module in (tidings, tidings.testing, tidings.workflow):
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.isclass(obj):
                found.append((f"{module.__name__}.{name}", obj))
    return found


@pytest.mark.parametrize(
    "name, cls", public_classes(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_every_public_class_has_working_help(name: str, cls: type) -> None:
    text = pydoc.render_doc(cls, renderer=pydoc.plaintext)
    assert cls.__name__ in text
    for attr, member in inspect.getmembers(cls):
        if not attr.startswith("_") and inspect.isfunction(member):
            pydoc.render_doc(member, renderer=pydoc.plaintext)
            inspect.signature(member)


def test_one_public_name_per_thing() -> None:
    by_name: dict[str, set[Any]] = {}
    for _, cls in public_classes():
        by_name.setdefault(cls.__name__, set()).add(cls)
    assert {name: c for name, c in by_name.items() if len(c) > 1} == {}
    assert tidings.testing.StepReport is not tidings.workflow.Step


async def test_a_damaged_document_names_its_collection_and_key(tmp_path: Path) -> None:
    path = tmp_path / "docs.db"
    app = App("docs", store=f"sqlite:///{path}")

    class Noted(Event):
        text: str

    @app.subscriber("notes", Noted)
    async def note(event: Noted, ctx: Context) -> None:
        ctx.put("notes", "n-1", {"text": event.text})

    async with app:
        await app.publish(Noted(text="hello"))
        await app.worker().drain()
        assert await app.get("notes", "n-1") == {"text": "hello"}
    with sqlite3.connect(path) as db:
        db.execute(
            "UPDATE tidings_documents SET data = ? WHERE key = 'n-1'", (b'{"text" "hello"}',)
        )
    async with app:
        with pytest.raises(DocumentDecodeError) as error:
            await app.get("notes", "n-1")
        with pytest.raises(DocumentDecodeError):
            await app.documents("notes")
    assert error.value.collection == "notes" and error.value.key == "n-1"
    assert "'n-1'" in str(error.value) and "'notes'" in str(error.value)
    assert "JSON is malformed" in str(error.value)
