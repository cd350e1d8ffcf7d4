"""A decider whose command names a batch, not the product stream: its stream is looked up in a
document its own events keep (``index``), written in the same transaction; and what its invoke
returns (``result``).

Every test runs on a SQLite file, invoked and sent.
"""

from __future__ import annotations

import operator
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import pytest

from tidings import App, Command, Decider, Event, Refused
from tidings.errors import ConfigurationError, MessageValidationError
from tidings.repository import Repository
from tidings.testing import given


class CreateBatch(Command, type_name="route.CreateBatch"):
    ref: str
    sku: str
    qty: int


class ChangeBatchQuantity(Command, type_name="route.ChangeBatchQuantity"):
    ref: str
    qty: int


class BatchCreated(Event, type_name="route.BatchCreated"):
    ref: str
    sku: str
    qty: int


class QuantityChanged(Event, type_name="route.QuantityChanged"):
    ref: str
    qty: int


Product = dict[str, int]  # batch ref -> quantity


def decide(command: CreateBatch | ChangeBatchQuantity, batches: Product) -> list[Event]:
    if isinstance(command, CreateBatch):
        return [BatchCreated(command.ref, command.sku, command.qty)]
    return [QuantityChanged(command.ref, command.qty)]


def evolve(batches: Product, event: BatchCreated | QuantityChanged) -> Product:
    return {**batches, event.ref: event.qty}


async def product_stream(command: CreateBatch | ChangeBatchQuantity, reader: Repository) -> str:
    if isinstance(command, CreateBatch):
        return f"product-{command.sku}"
    sku = await reader.get("batches", command.ref, str)
    if sku is None:
        raise Refused(f"no batch {command.ref}", code="no-batch")
    return f"product-{sku}"


def index(event: Event) -> Iterable[tuple[str, str, object]]:
    if isinstance(event, BatchCreated):
        yield "batches", event.ref, event.sku


def created_ref(events: list[Event]) -> str:
    return events[0].ref if isinstance(events[0], BatchCreated | QuantityChanged) else ""


products = Decider[Product](
    decide=decide,
    evolve=evolve,
    initial=dict,
    stream=product_stream,
    index=index,
    result=created_ref,
)


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[App]:
    found = App("allocation", store=f"sqlite:///{tmp_path / 'a.db'}")
    found.decider(products, CreateBatch, ChangeBatchQuantity)
    async with found:
        yield found


async def test_a_command_naming_a_batch_is_routed_through_the_index(app: App) -> None:
    assert await app.invoke(CreateBatch("b1", "LAMP", 20)) == "b1"
    assert await app.get("batches", "b1") == "LAMP"
    assert await app.invoke(ChangeBatchQuantity("b1", 5)) == "b1"
    state, version = await app.load("product-LAMP", evolve, dict)
    assert (state, version) == ({"b1": 5}, 2)


async def test_a_sent_command_is_routed_and_indexed_the_same_way(app: App) -> None:
    created = await app.send(CreateBatch("b2", "DESK", 3))
    await app.worker().drain()
    assert await created.result(timeout=5) == "b2"
    changed = await app.send(ChangeBatchQuantity("b2", 7))
    await app.worker().drain()
    assert await changed.result(timeout=5) == "b2"
    assert await app.get("batches", "b2") == "DESK"
    assert (await app.load("product-DESK", evolve, dict))[0] == {"b2": 7}


async def test_a_lookup_that_finds_nothing_refuses_and_writes_nothing(app: App) -> None:
    with pytest.raises(Refused, match="no batch nope"):
        await app.invoke(ChangeBatchQuantity("nope", 1))
    assert await app.position() == 0


async def test_index_writes_are_committed_with_the_events_or_not_at_all(app: App) -> None:
    # An event that fails validation: neither the event nor its index document is written.
    with pytest.raises(MessageValidationError):
        await app.invoke(CreateBatch("b3", "LAMP", "many"))  # type: ignore[arg-type]
    assert await app.get("batches", "b3") is None
    assert await app.position() == 0


async def test_an_index_value_of_none_deletes_the_document(tmp_path: Path) -> None:
    class Retire(Command, type_name="route.Retire"):
        ref: str

    class Retired(Event, type_name="route.Retired"):
        ref: str

    def retire_index(event: Event) -> list[tuple[str, str, object]]:
        return [("batches", event.ref, None)] if isinstance(event, Retired) else []

    retiring = Decider[None](
        decide=lambda c, s: [Retired(c.ref)],
        evolve=lambda s, e: s,
        initial=None,
        stream=product_stream,
        index=retire_index,
    )
    app = App("retire", store=f"sqlite:///{tmp_path / 'r.db'}")
    app.decider(products, CreateBatch)
    app.decider(retiring, Retire)
    async with app:
        await app.invoke(CreateBatch("b4", "LAMP", 1))
        assert await app.invoke(Retire("b4")) == [Retired("b4")]  # no result=: the events
        assert await app.get("batches", "b4") is None


def test_a_stream_function_of_three_parameters_is_refused_with_the_forms_it_can_take() -> None:
    with pytest.raises(ConfigurationError, match=r"stream\(command\) -> str, or async stream"):
        Decider(decide, evolve, dict, lambda command, reader, extra: "x")


def test_given_shows_the_result_an_invoke_returns() -> None:
    given(products, [BatchCreated("b1", "LAMP", 20)]).when(
        ChangeBatchQuantity("b1", 3)
    ).then_result("b1")


def test_a_stream_function_without_a_readable_signature_takes_the_command() -> None:
    by_ref = Decider(decide, evolve, dict, operator.attrgetter("ref"))
    assert not by_ref.reads


async def test_a_refusal_of_the_lookup_records_what_it_names(tmp_path: Path) -> None:
    class Missing(Event, type_name="route.Missing"):
        ref: str

    async def strict_stream(command: ChangeBatchQuantity, reader: Repository) -> str:
        raise Refused("no batch", record=[Missing(command.ref)], stream="missing-batches")

    strict = Decider[Product](decide, evolve, dict, strict_stream)
    app = App("strict", store=f"sqlite:///{tmp_path / 's.db'}")
    app.decider(strict, ChangeBatchQuantity)
    async with app:
        with pytest.raises(Refused, match="no batch"):
            await app.invoke(ChangeBatchQuantity("b9", 1))
        ticket = await app.send(ChangeBatchQuantity("b8", 1))
        await app.worker().drain()
        assert (await ticket.outcome(timeout=5)).status == "refused"
        found = await app.read_stream("missing-batches")
        assert [env.message for env in found] == [Missing("b9"), Missing("b8")]
