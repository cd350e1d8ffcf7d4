"""The map of an App: commands, events, handlers, subscribers and workflows, with arrows for
what sends, publishes, handles, subscribes and times out — as Mermaid or Graphviz DOT."""

from __future__ import annotations

import re
from dataclasses import dataclass

from tidings.topology.model import Topology

#: how a usage's verb is drawn
ARROWS = {
    "send": "sends",
    "invoke": "invokes",
    "publish": "publishes",
    "append": "publishes",
    "decide": "publishes",
}


@dataclass(frozen=True, slots=True)
class Node:
    id: str
    label: str
    #: command, event, handler, decider, subscriber, workflow or code
    kind: str


@dataclass(frozen=True, slots=True)
class Edge:
    source: str
    target: str
    label: str


def _id(prefix: str, text: str) -> str:
    return f"{prefix}_{re.sub(r'[^A-Za-z0-9_]', '_', text)}"


def parts(topology: Topology) -> tuple[list[Node], list[Edge]]:
    """The map's nodes and edges, in a stable order."""
    nodes: dict[str, Node] = {}
    edges: list[Edge] = []
    for m in topology.messages:
        if m.internal and not topology.handling(m.type_name):
            continue
        prefix = "C" if m.kind == "command" else "E"
        nodes[m.type_name] = Node(_id(prefix, m.type_name), m.name, m.kind)
    owners: dict[str, Node] = {}
    for h in topology.handlers:
        owners[h.id] = Node(_id("H", h.id), h.name, "handler" if h.role == "command" else h.role)
        for type_name in h.handles:
            if type_name in nodes:
                verb = "handles" if nodes[type_name].kind == "command" else "subscribes"
                edges.append(Edge(nodes[type_name].id, owners[h.id].id, verb))
        for timeout in h.timeouts:
            edges.append(Edge(owners[h.id].id, owners[h.id].id, f"times out: {timeout}"))
    for u in topology.usages:
        if u.message not in nodes:
            continue
        if u.owner not in owners:
            owners[u.owner] = Node(_id("X", u.owner), u.owner.partition(":")[2], "code")
        edge = Edge(owners[u.owner].id, nodes[u.message].id, ARROWS[u.verb])
        if edge not in edges:
            edges.append(edge)
    return [*nodes.values(), *owners.values()], edges


_MERMAID_SHAPES = {
    "command": '["{}"]',
    "event": '(["{}"])',
    "handler": '[["{}"]]',
    "decider": '[["{}"]]',
    "subscriber": '>"{}"]',
    "workflow": '{{{{"{}"}}}}',
    "code": '[/"{}"/]',
}


def mermaid(topology: Topology) -> str:
    """A Mermaid flowchart (``flowchart LR``)."""
    nodes, edges = parts(topology)
    lines = ["flowchart LR"]
    for n in nodes:
        shape = _MERMAID_SHAPES.get(n.kind, '[["{}"]]')
        lines.append(f"    {n.id}{shape.format(n.label.replace(chr(34), '#quot;'))}")
    for e in edges:
        lines.append(f'    {e.source} -->|"{e.label}"| {e.target}')
    for kind in ("command", "event", "workflow"):
        members = ",".join(n.id for n in nodes if n.kind == kind)
        if members:
            lines.append(f"    class {members} {kind}")
    lines += [
        "    classDef command fill:#dbeafe,stroke:#1d4ed8",
        "    classDef event fill:#fef3c7,stroke:#b45309",
        "    classDef workflow fill:#dcfce7,stroke:#15803d",
    ]
    return "\n".join(lines)


_DOT_SHAPES = {
    "command": "box",
    "event": "ellipse",
    "decider": "component",
    "handler": "component",
    "subscriber": "cds",
    "workflow": "hexagon",
    "code": "parallelogram",
}


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def dot(topology: Topology) -> str:
    """A Graphviz ``digraph``."""
    nodes, edges = parts(topology)
    lines = [f"digraph {_quoted(topology.app)} {{", "    rankdir=LR;"]
    for n in nodes:
        shape = _DOT_SHAPES.get(n.kind, "component")
        lines.append(f"    {n.id} [label={_quoted(n.label)}, shape={shape}];")
    for e in edges:
        lines.append(f"    {e.source} -> {e.target} [label={_quoted(e.label)}];")
    lines.append("}")
    return "\n".join(lines)
