"""Relays and inboxes for operators, on a real store (SQLite and PostgreSQL): what the inbox
recorded through its own recording path, what it could not read or decode, who holds the relay
and the inbox, and the relay's lag; in the console's API and page and in `tidings
subscriptions`."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from tidings import App
from tidings.cli import cli
from tidings.messages import Envelope
from tidings.ops.links import link_states
from tidings.transports import Delivery
from tidings.transports.cloudevents import to_headers
from tidings.web import create_console

TOKEN = "t" * 32
MODULE = """
import os

from tidings import App, Command, Context, Event
from tidings.transports import Routes


class SeatReserved(Event, type_name="links.SeatReserved"):
    seat: str


class RequestPayment(Command, type_name="links.RequestPayment"):
    order: str


class PaymentReceived(Event, type_name="links.PaymentReceived"):
    order: str


def make(url: str | None = None) -> App:
    app = App("payments", store=url or os.environ["LINKS_STORE"])
    app.connect(
        "amqp://guest:guest@127.0.0.1:5672/",
        Routes()
        .subscribe("cinema.seats", SeatReserved)
        .publish(PaymentReceived, topic="payments.results"),
        namespace="ns",
    )

    @app.command
    async def take_payment(cmd: RequestPayment, ctx: Context) -> None:
        ctx.publish(PaymentReceived(cmd.order))

    @app.subscriber("holds")
    async def hold(event: SeatReserved, ctx: Context) -> None:
        ctx.put("holds", event.seat, True)

    return app
"""


def arriving(type_name: str, kind: str, data: bytes, id: str) -> Delivery:
    env = Envelope(id, kind, type_name, 1, "hall-1", 1, 1, 1_700_000_000.0, data)
    return Delivery(to_headers(env, "cinema"), data)


@pytest.fixture
def payments_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store_url: str) -> str:
    monkeypatch.setenv("LINKS_STORE", store_url)
    (tmp_path / "links_app.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("links_app", None)
    return "links_app"


async def record_arrivals(app: App) -> None:
    """What the inbox records of five deliveries (one redelivered); the relay's and the
    inbox's leases taken; the worker run once."""
    (link,) = app.links
    inbox, relay = link.inbox, link.relay
    deliveries = [
        arriving("links.SeatReserved", "event", b'{"seat":"A1"}', "m-1"),
        arriving("links.SeatReserved", "event", b'{"seat":"A2"}', "m-2"),
        arriving("links.SeatReserved", "event", b'{"seat":7}', "m-3"),  # does not decode
        arriving("links.RequestPayment", "command", b'{"order":"o1"}', "m-4"),
        Delivery({"content-type": "text/plain"}, b"not a cloudevent"),
    ]
    for batch in (deliveries, deliveries[:2]):  # the second: redelivered, skipped
        await app.committer.commit(inbox.transaction(batch))
    # Made here, not received: not counted.
    await app.publish(sys.modules["links_app"].SeatReserved(seat="B1"))
    assert await inbox.claim()
    await relay.setup()
    await relay.claim()
    # The payment publishes a routed event, and its outcome goes back to the cinema.
    await app.worker(companions=[]).drain()


async def test_relay_lag_and_inbox_state(store_url: str, payments_module: str) -> None:
    app: App = __import__(payments_module).make()
    (link,) = app.links
    async with app:
        await record_arrivals(app)
        links = await link_states(app.store, await app.subscriptions.list(), app)
        (r,) = links.relays
        assert (r.subscription, r.pending, r.position) == ("relay:payments", 2, 0)
        assert r.holder == link.owner and r.until is not None
        (i,) = links.inboxes
        assert (i.subscription, i.holder, i.broker) == (
            "inbox:payments",
            link.owner,
            "amqp://127.0.0.1:5672",
        )
        assert i.consumes == ["ns.payments", "ns.events/cinema.seats"]
        assert (i.received, i.commands, i.events) == (4, 1, 3)
        assert i.last_received_at is not None
        assert (i.unreadable, i.undecodable) == (1, 1)

        site = create_console(app, token=TOKEN, manage=False)
        transport = httpx.ASGITransport(app=site)
        async with httpx.AsyncClient(transport=transport, base_url="http://console") as client:
            api = (await client.get("/api/links")).json()
            assert api["inboxes"][0]["received"] == 4
            assert api["relays"][0]["pending"] == 2
            overview = (await client.get("/api/overview")).json()
            assert overview["inboxes"][0]["unreadable"] == 1
            openapi = (await client.get("/api/openapi.json")).json()
            assert "/api/links" in openapi["paths"]
            page = (await client.get("/subscriptions")).text
            assert "Inboxes" in page and "ns.events/cinema.seats" in page
            assert 'href="/messages?stream=%24inbox-unreadable"' in page


def test_tidings_subscriptions_shows_relays_and_inboxes(
    store_url: str, payments_module: str
) -> None:
    async def prepare() -> None:
        app: App = __import__(payments_module).make()
        async with app:
            await record_arrivals(app)

    asyncio.run(prepare())
    # With the App: its routes; from the store alone: the commands the inbox recorded.
    runner = CliRunner()
    done = runner.invoke(cli, ["subscriptions", "--app", f"{payments_module}:make", "--json"])
    assert done.exit_code == 0, done.output
    rows = {row["subscription"]: row for row in json.loads(done.output)}
    assert rows["inbox:payments"]["link"]["received"] == 4
    assert rows["relay:payments"]["link"]["pending"] == 2
    bare = runner.invoke(cli, ["subscriptions", "--store", store_url], env={"COLUMNS": "200"})
    assert bare.exit_code == 0, bare.output
    assert "inboxes" in bare.output and "inbox:payments" in bare.output
    assert "$inbox-unreadable" in bare.output
    # Received is read from the store alone: every arrival carries tidings-source.
    assert "4 (1 commands, 3 events)" in bare.output
