"""The map drawn as SVG: columns by kind, nodes that do not overlap, arrows back above the
nodes, and every name and docstring escaped."""

from __future__ import annotations

import itertools
import xml.etree.ElementTree as ET

from tidings.examples.cinema import build_app
from tidings.topology import Handler, MessageType, Topology, Usage, build
from tidings.topology.graph import parts
from tidings.topology.model import Place
from tidings.topology.svg import COLUMNS, svg

NS = "{http://www.w3.org/2000/svg}"


def boxes(root: ET.Element) -> dict[str, tuple[str, float, float, float, float]]:
    """Each node's kind and its bounding box (x, y, width, height), from its shape."""
    found = {}
    for g in root.iter(f"{NS}g"):
        kind = g.get("data-kind")
        if kind is None:
            continue
        shape = next(e for e in g if e.tag in (f"{NS}rect", f"{NS}polygon"))
        if shape.tag == f"{NS}rect":
            x, y = float(shape.get("x", 0)), float(shape.get("y", 0))
            w, h = float(shape.get("width", 0)), float(shape.get("height", 0))
        else:
            points = [tuple(map(float, p.split(","))) for p in shape.get("points", "").split()]
            xs, ys = [p[0] for p in points], [p[1] for p in points]
            x, y, w, h = min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)
        found[g.get("data-name", "")] = (kind, x, y, w, h)
    return found


def test_the_cinema_is_laid_out_in_columns_by_kind() -> None:
    topology = build(build_app())
    root = ET.fromstring(svg(topology))
    found = boxes(root)
    nodes, edges = parts(topology)
    assert len(found) == len(nodes) == 17
    width, height = (float(v) for v in root.get("viewBox", "").split()[2:])
    for _, x, y, w, h in found.values():
        assert x >= 0 and x + w <= width and y >= 0 and y + h <= height
    columns: dict[int, list[tuple[float, float, float]]] = {}
    for kind, x, y, _, h in found.values():
        columns.setdefault(COLUMNS[kind], []).append((x, y, h))
    lefts = [min(x for x, _, _ in columns[c]) for c in sorted(columns)]
    assert lefts == sorted(lefts) and len(set(lefts)) == len(lefts)
    for column in columns.values():
        ys = sorted((y, h) for _, y, h in column)
        assert all(y1 + h1 < y2 for (y1, h1), (y2, _) in itertools.pairwise(ys))
    back = [g for g in root.iter(f"{NS}g") if "back" in (g.get("class") or "").split()]
    assert {g.get("data-label") for g in back} == {"sends"} and len(back) == 4
    labels = [
        t.text for g in root.iter(f"{NS}g") if g.get("data-label") for t in g.iter(f"{NS}text")
    ]
    assert len(labels) == len(edges)


def test_names_and_docstrings_are_escaped() -> None:
    evil = '<script>alert("x")</script> & co'
    topology = Topology(
        app="a&b",
        store="memory://",
        messages=[
            MessageType(evil, "shop.Evil", "command", f"</title>{evil}", None, [], False),
            MessageType("Done", "shop.Done", "event", "", None, [], False),
        ],
        handlers=[Handler("command:h", evil, "command", ["shop.Evil"], None, [])],
        usages=[Usage("publish", "shop.Done", "command:h", Place("shop.py", 3))],
        alert_routes=False,
        read=[],
    )
    drawn = svg(topology)
    root = ET.fromstring(drawn)
    assert not [e for e in root.iter() if e.tag.endswith("script")]
    assert "<script>" not in drawn and "&lt;script&gt;" in drawn
    texts = [t.text or "" for t in root.iter(f"{NS}text")]
    assert any(t.startswith('<script>alert("x")') for t in texts)
    titles = [t.text or "" for t in root.iter(f"{NS}title")]
    assert f"command shop.Evil: </title>{evil}" in titles
    assert root.get("aria-label") == "map of a&b"


def test_an_app_without_messages_is_an_empty_map() -> None:
    empty = Topology("empty", "memory://", [], [], [], False, [])
    root = ET.fromstring(svg(empty))
    assert [g for g in root.iter(f"{NS}g") if g.get("data-kind")] == []
