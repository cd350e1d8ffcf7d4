"""The model's idioms: messages built by position, converted to another message, and refusals
that keep their class on the way to a sent command's ticket."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from tidings import App, Command, ConfigurationError, Context, Event, Refused, Ticket, asdict
from tidings.records import REFUSED, Outcome, Transaction


class OutOfStock(Event):
    sku: str


class Allocated(Event):
    orderid: str
    sku: str
    qty: int
    batchref: str


class Allocate(Command):
    orderid: str
    sku: str
    qty: int


class Line(Event):
    sku: str
    qty: int = 1


class Named(Event, kw_only=True):
    sku: str


def test_a_message_is_built_by_position_in_its_fields_order_as_a_dataclass_is() -> None:
    assert OutOfStock("LAMP") == OutOfStock(sku="LAMP")
    assert Allocated("o1", "LAMP", 3, "b1") == Allocated(
        orderid="o1", sku="LAMP", qty=3, batchref="b1"
    )
    assert Allocated("o1", "LAMP", qty=3, batchref="b1").qty == 3
    assert Line("LAMP") == Line(sku="LAMP", qty=1)
    match OutOfStock("LAMP"):
        case OutOfStock(sku):
            assert sku == "LAMP"
    with pytest.raises(AttributeError):
        OutOfStock("LAMP").sku = "CHAIR"  # type: ignore[misc]


def test_a_subclass_adds_its_fields_after_its_bases_and_kw_only_makes_them_keyword_only() -> None:
    class LineWithNote(Line, kw_only=True):
        note: str

    assert LineWithNote("LAMP", 2, note="fragile") == LineWithNote(
        sku="LAMP", qty=2, note="fragile"
    )
    with pytest.raises(TypeError):
        Named("LAMP")  # type: ignore[misc]
    assert Named(sku="LAMP").sku == "LAMP"


def test_a_required_field_after_a_bases_optional_one_is_refused_naming_the_class_and_the_fix() -> (
    None
):
    with pytest.raises(ConfigurationError) as raised:

        class LineWithNote(Line):
            note: str

    text = str(raised.value)
    assert "LineWithNote" in text and "'note'" in text
    assert "class LineWithNote(Line, kw_only=True)" in text


def test_asdict_gives_a_messages_fields_to_build_another_message_from() -> None:
    allocated = Allocated("o1", "LAMP", 3, "b1")
    with pytest.raises(TypeError):
        dataclasses.asdict(allocated)  # type: ignore[call-overload]
    fields = asdict(allocated)
    assert fields == {"orderid": "o1", "sku": "LAMP", "qty": 3, "batchref": "b1"}
    del fields["batchref"]
    assert Allocate(**fields) == Allocate("o1", "LAMP", 3)


# --- refusals keep their class ------------------------------------------------------------------


class InvalidSku(Refused):
    """A refusal whose callers tell it apart, carrying what it is about."""

    def __init__(self, sku: str) -> None:
        super().__init__(f"Invalid sku {sku}", code="invalid-sku")
        self.sku = sku
        self.checked = {"catalogue": ["LAMP"], "at": 3}
        self.connection = object()  # not a JSON value: not recorded


class OutOfStockRefusal(InvalidSku):
    pass


class Order(Command):
    sku: str


def refusing_app(store: str) -> App:
    app = App("refusals", store=store)

    @app.command
    def order(cmd: Order, ctx: Context) -> str:
        if cmd.sku == "plain":
            raise Refused("no", code="plain")
        if cmd.sku == "gone":
            raise OutOfStockRefusal(cmd.sku)
        raise InvalidSku(cmd.sku)

    return app


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "memory":
        return "memory://"
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'refusals.db'}"
    url = request.getfixturevalue("postgres_url")
    return f"{url}?schema={request.getfixturevalue('pg_schema')}"


async def test_a_refused_subclass_reaches_invoke_and_ticket_callers_as_itself(
    store_url: str,
) -> None:
    async with refusing_app(store_url) as app:
        with pytest.raises(InvalidSku) as invoked:
            await app.invoke(Order("CHAIR"))
        tickets = [await app.send(Order(sku)) for sku in ("CHAIR", "gone", "plain")]
        await app.worker().drain()

        with pytest.raises(InvalidSku) as sent:
            await tickets[0].result(5)
        for refused in (invoked.value, sent.value):
            assert type(refused) is InvalidSku
            assert (refused.reason, refused.code) == ("Invalid sku CHAIR", "invalid-sku")
            assert refused.sku == "CHAIR"
            assert refused.checked == {"catalogue": ["LAMP"], "at": 3}
        assert not hasattr(sent.value, "connection")
        assert repr(sent.value) == "InvalidSku('Invalid sku CHAIR', code='invalid-sku')"

        with pytest.raises(OutOfStockRefusal) as deeper:
            await tickets[1].result(5)
        assert deeper.value.sku == "gone"

        with pytest.raises(Refused) as plain:
            await tickets[2].result(5)
        assert type(plain.value) is Refused and plain.value.code == "plain"

        outcome = await tickets[0].outcome()
        assert outcome.status == "refused" and outcome.error == f"{__name__}.InvalidSku"
        assert outcome.value() is None


async def test_a_refusal_whose_class_is_not_loaded_arrives_as_refused_with_its_code(
    tmp_path: Path,
) -> None:
    async with App("caller", store=f"sqlite:///{tmp_path / 'refusals.db'}") as app:
        # what a worker in another process recorded, its refusal class unknown here
        refused = Outcome(
            "m1", "Order", REFUSED, b'{"sku":"LAMP"}', "not today", "closed", "shop.Closed"
        )
        await app.committer.commit(Transaction(outcomes=[refused]))
        with pytest.raises(Refused) as raised:
            await Ticket(app, "m1", "orders").result(5)
        assert type(raised.value) is Refused
        assert (raised.value.reason, raised.value.code) == ("not today", "closed")
