"""The advisor and AsyncAPI with broker routes (``app.connect``): TD013, routed commands and
subscribed topics, the broker as a server and its routes as channels with their bindings."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from topo_support import NODE_MODULES, node_tool

from tidings import App, Command, Context, Event
from tidings.topology import check
from tidings.topology.asyncapi import document
from tidings.topology.links import links_of
from tidings.transports import Routes

RABBITMQ = "amqp://guest:secret@127.0.0.1:5672/"


class SeatReserved(Event):
    seat: str


class RequestPayment(Command):
    order: str


class PaymentReceived(Event):
    order: str


def cinema(broker: str = RABBITMQ, *, handles_payment: bool = False) -> App:
    app = App("cinema", store="memory://")
    app.on_alert(print)
    app.connect(
        broker,
        Routes()
        .publish(SeatReserved, topic="cinema.seats")
        .send(RequestPayment, to="payments")
        .subscribe("payments.results", PaymentReceived),
        namespace="ns",
    )

    @app.subscriber("paid")
    async def paid(event: PaymentReceived, ctx: Context) -> None:
        ctx.put("paid", event.order, True)

    if handles_payment:

        @app.command
        async def pay_here(cmd: RequestPayment, ctx: Context) -> None:
            ctx.publish(PaymentReceived(cmd.order))

    return app


def payments(broker: str = RABBITMQ, *, name: str = "payments") -> App:
    app = App(name, store="memory://")
    app.on_alert(print)
    app.connect(
        broker,
        Routes().subscribe("cinema.seats").publish(PaymentReceived, topic="payments.results"),
        namespace="ns",
    )

    @app.command
    async def take_payment(cmd: RequestPayment, ctx: Context) -> None:
        ctx.publish(PaymentReceived(cmd.order))

    @app.subscriber("holds")
    async def hold(event: SeatReserved, ctx: Context) -> None:
        ctx.put("holds", event.seat, True)

    return app


def rules(*apps: App) -> list[tuple[str, str]]:
    return [(f.rule, f.subjects[0]) for f in check(*apps, modules=[], allowed={}).shown]


def test_routed_commands_and_subscribed_topics_are_not_findings() -> None:
    # Sent elsewhere (no TD001), published to a topic (no TD003), received from one (no TD004).
    found = rules(cinema(), payments())
    assert [r for r in found if r[0] in ("TD001", "TD003", "TD004", "TD013")] == []


def test_td013_a_routed_command_also_handled_where_it_is_sent() -> None:
    report = check(cinema(handles_payment=True), modules=[], allowed={})
    (finding,) = [f for f in report.shown if f.rule == "TD013"]
    assert finding.severity == "error"
    assert finding.message == (
        "command RequestPayment has 2 recipients on one broker: handled by cinema, "
        "routed to payments by cinema"
    )
    assert finding.subjects == ["RequestPayment", "RequestPayment", "pay_here"]


def test_td013_a_command_handled_by_two_services_on_one_broker() -> None:
    report = check(cinema(), payments(), payments(name="billing"), modules=[], allowed={})
    (finding,) = [f for f in report.shown if f.rule == "TD013"]
    assert "handled by billing" in finding.message
    assert finding.app == "billing+cinema+payments"
    # On another namespace (another broker, as far as routes go) they do not meet.
    elsewhere = payments(name="billing")
    elsewhere.links[0].broker.namespace = "other"  # type: ignore[attr-defined]
    assert ("TD013", "RequestPayment") not in rules(cinema(), payments(), elsewhere)


@pytest.mark.parametrize(
    ("broker", "protocol", "seats", "queue", "binding"),
    [
        (RABBITMQ, "amqp", "cinema.seats", "ns.cinema", "amqp"),
        (
            "nats://127.0.0.1:4222",
            "nats",
            "ns.ev.cinema.seats.{partition}",
            "ns.svc.cinema.{partition}",
            None,
        ),
        ("kafka://127.0.0.1:9092", "kafka", "ns.ev.cinema.seats", "ns.svc.cinema", "kafka"),
    ],
)
def test_asyncapi_lists_the_broker_and_its_routes(
    tmp_path: Path, broker: str, protocol: str, seats: str, queue: str, binding: str | None
) -> None:
    doc = document(cinema(broker))
    assert doc["servers"]["broker"]["protocol"] == protocol
    assert doc["servers"]["broker"]["host"] == "127.0.0.1:" + broker.rstrip("/").rpartition(":")[2]
    assert "secret" not in json.dumps(doc)
    channels = doc["channels"]
    sent = channels["broker.send.topic.cinema.seats"]
    assert sent["address"] == seats
    assert sent["servers"] == [{"$ref": "#/servers/broker"}]
    assert list(sent["messages"]) == ["SeatReserved"]
    assert channels["broker.receive.service.cinema"]["address"] == queue
    taken = channels["broker.receive.topic.payments.results"]
    assert list(taken["messages"]) == ["PaymentReceived"]
    assert list(channels["broker.send.service.payments"]["messages"]) == ["RequestPayment"]
    assert channels["SeatReserved"]["servers"] == [{"$ref": "#/servers/store"}]
    if binding is not None:
        assert binding in sent["bindings"]
    if protocol == "amqp":
        assert sent["bindings"]["amqp"]["exchange"] == {"name": "ns.events", "type": "topic"}
        queue_binding = channels["broker.receive.service.cinema"]["bindings"]["amqp"]
        assert queue_binding["queue"]["name"] == "ns.cinema"
    ops = doc["operations"]
    assert ops["relay.broker.topic.cinema.seats"]["action"] == "send"
    assert ops["inbox.broker.topic.payments.results"]["action"] == "receive"
    # Whole topics carry the events the App handles: payments takes every event of the seats.
    other = document(payments(broker))["channels"]["broker.receive.topic.cinema.seats"]
    assert list(other["messages"]) == ["SeatReserved"]

    parser = node_tool(NODE_MODULES / "@asyncapi/parser", "the AsyncAPI parser")
    path = tmp_path / "doc.json"
    path.write_text(json.dumps(doc))
    done = subprocess.run(
        ["node", str(Path(__file__).with_name("asyncapi_parse.js")), str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "NODE_PATH": str(parser.parents[1])},
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_link_says_where_its_inbox_receives_from() -> None:
    (link,) = links_of(cinema())
    assert (link.protocol, link.host, link.namespace) == ("amqp", "127.0.0.1:5672", "ns")
    assert (link.relay, link.inbox) == ("relay:cinema", "inbox:cinema")
    assert link.consumed() == ["ns.cinema", "ns.events/payments.results"]
