"""A ``decide`` that changes the state it is given corrupts the states a decider keeps: the
change is applied again by ``evolve``. ``check_purity`` (on under ``given`` and the harness, and
with ``app.decider(..., check_purity=True)``) fails loudly instead, and nothing is written."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tidings import App, Command, Decider, Event, Refused
from tidings.errors import ConfigurationError, StateMutated
from tidings.testing import Harness, given


class Allocate(Command, type_name="purity.Allocate"):
    sku: str
    qty: int


class Allocated(Event, type_name="purity.Allocated"):
    sku: str
    qty: int


@dataclass
class Stock:
    available: int = 10
    lines: list[int] = field(default_factory=list)


def careless_decide(command: Allocate, stock: Stock) -> list[Event]:
    """The book's ``product.allocate(line)``: changes the state, then says what happened."""
    if command.qty > stock.available:
        stock.lines.append(-command.qty)
        raise Refused("out of stock", code="out-of-stock")
    stock.available -= command.qty
    stock.lines.append(command.qty)
    return [Allocated(command.sku, command.qty)]


def pure_decide(command: Allocate, stock: Stock) -> list[Event]:
    if command.qty > stock.available:
        raise Refused("out of stock", code="out-of-stock")
    return [Allocated(command.sku, command.qty)]


def evolve(stock: Stock, event: Allocated) -> Stock:
    return Stock(stock.available - event.qty, [*stock.lines, event.qty])


def stream(command: Allocate) -> str:
    return f"product-{command.sku}"


careless = Decider[Stock](careless_decide, evolve, Stock, stream)
pure = Decider[Stock](pure_decide, evolve, Stock, stream)


def test_given_fails_loudly_when_decide_changes_the_state() -> None:
    with pytest.raises(StateMutated, match=r"careless_decide changed the state .* Allocate"):
        given(careless, [Allocated("LAMP", 2)]).when(Allocate("LAMP", 3))


def test_a_refusal_after_changing_the_state_is_reported_as_the_change() -> None:
    with pytest.raises(StateMutated):
        given(careless).when(Allocate("LAMP", 30))


def test_given_accepts_a_decide_that_leaves_the_state_alone() -> None:
    given(pure, [Allocated("LAMP", 2)]).when(Allocate("LAMP", 3)).then([Allocated("LAMP", 3)])


def test_given_can_be_told_not_to_check() -> None:
    given(careless, check_purity=False).when(Allocate("LAMP", 3)).then([Allocated("LAMP", 3)])


async def test_the_harness_checks_an_apps_deciders_and_nothing_is_written() -> None:
    app = App("shop")
    app.decider(careless, Allocate)
    async with Harness().run(app) as harness:
        with pytest.raises(StateMutated, match="stream 'product-LAMP'"):
            await app.invoke(Allocate("LAMP", 3))
        assert await harness.messages() == []
        sent = await app.send(Allocate("LAMP", 1))
        await harness.settle()
        outcome = await harness.outcome(sent.message_id)
        assert outcome.status == "failed"  # a bug in code: retried under its policy, then dead
        assert outcome.error is not None and outcome.error.startswith("StateMutated")
        assert await harness.messages(Allocated) == []
    # The check is the harness's: the App's own setting is given back.
    assert not app.command_handlers[Allocate].decider.check_purity  # type: ignore[union-attr]


async def test_app_decider_check_purity_protects_kept_states(tmp_path: Path) -> None:
    app = App("shop", store=f"sqlite:///{tmp_path / 'p.db'}")
    app.decider(careless, Allocate, check_purity=True)
    async with app:
        with pytest.raises(StateMutated):
            await app.invoke(Allocate("LAMP", 3))
        assert await app.read_stream("product-LAMP") == []


async def test_without_the_check_a_changing_decide_corrupts_the_kept_state(
    tmp_path: Path,
) -> None:
    """Why the check exists: the kept state has the change twice (production does not check)."""
    app = App("shop", store=f"sqlite:///{tmp_path / 'c.db'}")
    app.decider(careless, Allocate)
    async with app:
        await app.invoke(Allocate("LAMP", 3))
        await app.invoke(Allocate("LAMP", 3))  # decided on 10 - 3 - 3 = 4 available: 3 fit
        with pytest.raises(Refused):  # on the corrupted state only 10 - 12 < 3 are available
            await app.invoke(Allocate("LAMP", 3))
        stock, _ = await app.load("product-LAMP", evolve, Stock)
        assert stock.available == 4  # the store says 4 are available


def test_a_state_that_cannot_be_encoded_is_named_with_how_to_turn_the_check_off() -> None:
    locked = Decider[threading.Lock](
        lambda c, s: [Allocated(c.sku, c.qty)], lambda s, e: s, threading.Lock, stream
    )
    with pytest.raises(ConfigurationError, match=r"lock cannot be encoded.*check_purity=False"):
        given(locked).when(Allocate("LAMP", 1))
    given(locked, check_purity=False).when(Allocate("LAMP", 1)).then([Allocated("LAMP", 1)])
