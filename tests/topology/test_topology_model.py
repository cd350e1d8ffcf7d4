"""The topology model, the AsyncAPI document and the map, read in-process."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from topo_support import NODE_MODULES, node_tool

from tidings.examples.cinema import build_app
from tidings.topology import build
from tidings.topology.asyncapi import document, server
from tidings.topology.graph import dot, mermaid, parts

MakeModule = Callable[[str], ModuleType]

TWO_APPS = """
class Pay(Command):
    id: str

class Paid(Event):
    id: str

class Ship(Command):
    id: str

class Dependency:
    def charge(self, id: str) -> None: ...

billing = App("billing", dependencies={Dependency: Dependency()})
shipping = App("shipping")

@billing.command
async def pay(cmd: Pay, ctx: Context, bank: Dependency) -> None:
    bank.charge(cmd.id)
    record(ctx, cmd.id)

def record(ctx: Context, id: str) -> None:
    ctx.append(f"payment-{id}", [Paid(id=id)])

@shipping.subscriber("ship-when-paid")
async def ship_when_paid(event: Paid, ctx: Context, bank: Dependency) -> None:
    bank.charge(event.id)
    ctx.send(Ship(id=event.id))

async def web() -> None:
    await billing.invoke(Pay(id="1"))
    await shipping.send(Ship(id="2"))
"""


def usages(topology: Any) -> set[tuple[str, str, str]]:
    return {(u.verb, u.message.rpartition(".")[2], u.owner) for u in topology.usages}


def test_usages_belong_to_their_app_and_handler(make_module: MakeModule) -> None:
    module = make_module(TWO_APPS)
    billing = build(module.billing, [module])
    assert usages(billing) == {
        ("append", "Paid", "command:pay"),  # in a helper the handler calls
        ("invoke", "Pay", "code:web"),  # on this App; shipping.send is another App's
    }
    shipping = build(module.shipping, [module])
    assert usages(shipping) == {
        ("send", "Ship", "subscriber:ship-when-paid"),
        ("send", "Ship", "code:web"),
    }
    (subscriber,) = [h for h in shipping.handlers if h.role == "subscriber"]
    assert [p.line for p in subscriber.writes_outside] == [
        TWO_APPS.count("\n", 0, TWO_APPS.index("bank.charge(event.id)")) + 5
    ]
    assert not subscriber.uses_message_id


def test_the_cinema_model() -> None:
    topology = build(build_app())
    roles = {
        h.id: (h.role, sorted(t.rpartition(".")[2] for t in h.handles)) for h in topology.handlers
    }
    assert roles["decider:seats.decide"] == (
        "decider",
        ["ConfirmReservation", "ReleaseSeat", "ReserveSeat"],
    )
    assert roles["workflow:purchase"][0] == "workflow"
    (workflow,) = [h for h in topology.handlers if h.role == "workflow"]
    assert workflow.timeouts == ["payment"]
    sent_by_workflow = {u.message for u in topology.usages if u.owner == "workflow:purchase"}
    assert sent_by_workflow == {
        "cinema.RequestPayment",
        "cinema.ConfirmReservation",
        "cinema.IssueReceipt",
        "cinema.ReleaseSeat",  # in release(), which the handlers call
    }
    assert topology.alert_routes
    assert all(p.endswith(".py") for p in topology.read)


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for v in node.values() for r in refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in refs(v)]
    return []


def resolve(doc: dict[str, Any], ref: str) -> Any:
    node: Any = doc
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def test_the_asyncapi_document_of_the_cinema(tmp_path: Path) -> None:
    doc = document(build_app(f"sqlite:///{tmp_path / 'cinema.db'}"))
    assert doc["asyncapi"] == "3.0.0"
    assert doc["servers"]["store"] == {
        "host": "localhost",
        "protocol": "sqlite",
        "pathname": str(tmp_path / "cinema.db"),
        "description": doc["servers"]["store"]["description"],
    }
    for ref in refs(doc):
        resolve(doc, ref)  # every reference points at something
    channels = doc["channels"]
    assert channels["cinema.ReserveSeat"]["address"] == "cmd:cinema.ReserveSeat"
    assert channels["cinema.SeatReserved"]["address"] == "cinema.SeatReserved"
    ops = doc["operations"]
    assert ops["handle.IssueReceipt"]["action"] == "receive"
    assert ops["send.IssueReceipt"]["action"] == "send"
    assert ops["publish.ReceiptIssued"]["action"] == "send"
    assert ops["email.on.ReservationConfirmed"]["action"] == "receive"
    assert ops["purchase.on.SeatReserved"]["channel"] == {"$ref": "#/channels/cinema.SeatReserved"}
    schema = doc["components"]["schemas"]["ReserveSeat"]
    assert schema["required"] == ["screening_id", "seat", "guest"]
    message = doc["components"]["messages"]["cinema.ReserveSeat"]
    assert message["x-tidings-kind"] == "command"
    assert message["correlationId"] == {"$ref": "#/components/correlationIds/correlation"}
    traits = doc["components"]["messageTraits"]["cloudevents"]["headers"]
    assert {"specversion", "id", "source", "type"} <= set(traits["properties"])
    # The sqlite document passes the parser too.
    parser = node_tool(NODE_MODULES / "@asyncapi/parser", "the AsyncAPI parser")
    path = tmp_path / "doc.json"
    path.write_text(json.dumps(doc))
    script = Path(__file__).with_name("asyncapi_parse.js")
    done = subprocess.run(
        ["node", str(script), str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "NODE_PATH": str(parser.parents[1])},
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_server_never_shows_credentials() -> None:
    found = server("postgresql://ops:secret@db.internal:5432/orders?schema=tidings")
    assert found["host"] == "db.internal:5432"
    assert found["protocol"] == "postgresql"
    assert found["pathname"] == "/orders"
    assert "secret" not in json.dumps(found)
    assert server("memory://")["protocol"] == "memory"


def test_the_map_names_every_node_its_edges_use() -> None:
    topology = build(build_app())
    nodes, edges = parts(topology)
    ids = {n.id for n in nodes}
    assert all(e.source in ids and e.target in ids for e in edges)
    labels = {e.label for e in edges}
    assert {"sends", "publishes", "handles", "subscribes", "times out: payment"} <= labels
    drawn = mermaid(topology)
    declared = set(re.findall(r"^    (\w+)[\[(>{]", drawn, flags=re.M))
    used = set(re.findall(r"^    (\w+) -->\|\"[^\"]+\"\| (\w+)$", drawn, flags=re.M))
    assert used and all(a in declared and b in declared for a, b in used)
    graph = dot(topology)
    assert graph.count("{") == graph.count("}")
    assert len(re.findall(r" -> ", graph)) == len(edges)
    if shutil.which("dot"):
        done = subprocess.run(["dot", "-Tsvg"], input=graph, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
