"""The map of an App drawn as SVG, laid out in columns by kind (code that sends → commands →
their handlers → events → subscribers and workflows); every text escaped, no script."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from tidings.topology.graph import Edge, Node, parts
from tidings.topology.model import Topology

#: the column of each kind of node, left to right
COLUMNS = {
    "code": 0,
    "command": 1,
    "handler": 2,
    "decider": 2,
    "event": 3,
    "subscriber": 4,
    "workflow": 4,
}
#: fill and stroke of each kind of node
COLOURS = {
    "code": ("#f3f4f6", "#4b5563"),
    "command": ("#dbeafe", "#1d4ed8"),
    "handler": ("#f3e8ff", "#7e22ce"),
    "decider": ("#f3e8ff", "#7e22ce"),
    "event": ("#fef3c7", "#b45309"),
    "subscriber": ("#e0f2fe", "#0369a1"),
    "workflow": ("#dcfce7", "#15803d"),
}
BOX_H = 30
ROW_GAP = 16
COLUMN_GAP = 120
MARGIN = 16
LANE_GAP = 16
GUTTER = 6
LABEL_H = 12
CHAR_W = 7.2
MAX_CHARS = 36


@dataclass(slots=True)
class _Box:
    node: Node
    title: str
    x: float = 0.0
    y: float = 0.0
    w: float = 0.0

    @property
    def mid(self) -> float:
        return self.y + BOX_H / 2


def _label(text: str) -> str:
    return text if len(text) <= MAX_CHARS else text[: MAX_CHARS - 1] + "…"


def _titles(topology: Topology) -> dict[str, str]:
    """A tooltip per node id: its kind, full name and (for a message) its docstring's first line."""
    nodes, _ = parts(topology)
    by_label: dict[tuple[str, str], str] = {}
    for m in topology.messages:
        first = m.doc.splitlines()[0] if m.doc else ""
        by_label[(m.kind, m.name)] = f"{m.kind} {m.type_name}" + (f": {first}" if first else "")
    return {n.id: by_label.get((n.kind, n.label), f"{n.kind} {n.label}") for n in nodes}


def _order(columns: list[list[_Box]], edges: Sequence[Edge]) -> None:
    """Order each column by the mean row of its neighbours (a few sweeps), so arrows cross less."""
    neighbours: dict[str, list[str]] = {}
    for e in edges:
        if e.source != e.target:
            neighbours.setdefault(e.source, []).append(e.target)
            neighbours.setdefault(e.target, []).append(e.source)
    rank = {b.node.id: i for column in columns for i, b in enumerate(column)}
    for _ in range(4):
        for column in columns:
            here = {b.node.id for b in column}
            column.sort(key=lambda box: _centre(box, neighbours, rank, here))
            rank.update({b.node.id: i for i, b in enumerate(column)})


def _centre(
    box: _Box, neighbours: dict[str, list[str]], rank: dict[str, int], here: set[str]
) -> float:
    others = [rank[n] for n in neighbours.get(box.node.id, []) if n not in here]
    return sum(others) / len(others) if others else float(rank[box.node.id])


def _shape(box: _Box) -> str:
    fill, stroke = COLOURS.get(box.node.kind, COLOURS["handler"])
    x, y, w, h = box.x, box.y, box.w, BOX_H
    paint = f'fill="{fill}" stroke="{stroke}" stroke-width="1.4"'
    kind = box.node.kind
    if kind == "event":
        return f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h}" rx="{h / 2}" {paint}/>'
    if kind == "workflow":
        d = 10
        points = [(x, y + h / 2), (x + d, y), (x + w - d, y), (x + w, y + h / 2)]
        points += [(x + w - d, y + h), (x + d, y + h)]
        return f'<polygon points="{_points(points)}" {paint}/>'
    if kind == "subscriber":
        d = 10
        points = [(x, y), (x + w - d, y), (x + w, y + h / 2), (x + w - d, y + h), (x, y + h)]
        return f'<polygon points="{_points(points)}" {paint}/>'
    if kind == "code":
        d = 8
        points = [(x + d, y), (x + w, y), (x + w - d, y + h), (x, y + h)]
        return f'<polygon points="{_points(points)}" {paint}/>'
    rect = f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h}" rx="2" {paint}/>'
    if kind == "decider":
        bar = f'<line x1="{x + 6:.1f}" y1="{y:.1f}" x2="{x + 6:.1f}" y2="{y + h:.1f}" stroke="{stroke}"/>'
        return rect + bar
    if kind == "command":
        return f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h}" rx="0" {paint}/>'
    return rect


def _points(points: list[tuple[float, float]]) -> str:
    return " ".join(f"{px:.1f},{py:.1f}" for px, py in points)


def _text(x: float, y: float, text: str, anchor: str = "middle") -> str:
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}">{escape(text)}</text>'


def svg(topology: Topology) -> str:
    """The map as one ``<svg>`` element (standalone XML): a node per command, event, handler,
    subscriber, workflow and sending code, shaped and coloured by kind; arrows labelled sends,
    publishes, handles, subscribes and times out. Arrows that go right to left run above."""
    nodes, edges = parts(topology)
    titles = _titles(topology)
    columns: list[list[_Box]] = [[] for _ in range(max(COLUMNS.values()) + 1)]
    boxes: dict[str, _Box] = {}
    for n in nodes:
        box = _Box(n, titles[n.id], w=max(80.0, len(_label(n.label)) * CHAR_W + 24))
        boxes[n.id] = box
        columns[COLUMNS.get(n.kind, 2)].append(box)
    _order(columns, edges)
    column_of = {b.node.id: i for i, column in enumerate(columns) for b in column}
    back = [e for e in edges if e.source != e.target and column_of[e.source] >= column_of[e.target]]
    top = MARGIN + (len(back) + 1) * LANE_GAP if back else MARGIN + 8
    left = float(MARGIN + GUTTER * len(back))
    bounds: dict[int, tuple[float, float]] = {}
    height = float(top)
    for i, column in enumerate(columns):
        if not column:
            continue
        width = max(b.w for b in column)
        bounds[i] = (left, left + width)
        y = float(top)
        for b in column:
            b.x, b.y = left + (width - b.w) / 2, y
            y += BOX_H + ROW_GAP
        height = max(height, y)
        left += width + COLUMN_GAP
    loops = [len(e.label) * 6.2 + 44 for e in edges if e.source == e.target]
    right = left - COLUMN_GAP
    width_total = right + max([GUTTER * len(back) + 8, *loops]) + MARGIN
    legend_y = height + 8
    height_total = legend_y + BOX_H + MARGIN

    firsts = {column[0].node.id for column in columns if column}
    drawn: list[_Drawn] = []
    for lane, e in enumerate(back, start=1):
        gutters = (
            bounds[column_of[e.source]][1] + GUTTER * lane,
            bounds[column_of[e.target]][0] - GUTTER * lane,
        )
        tops = (e.source in firsts, e.target in firsts)
        lane_y = MARGIN + lane * LANE_GAP
        drawn.append(_over(boxes[e.source], boxes[e.target], e, lane_y, gutters, tops, lane))
    forward = [e for e in edges if e not in back and e.source != e.target]
    drawn += _spread(
        [_forward(boxes[e.source], boxes[e.target], e) for e in forward],
        [column_of[e.source] for e in forward],
    )
    drawn += [_loop(boxes[e.source], e) for e in edges if e.source == e.target]

    out = [
        '<svg xmlns="http://www.w3.org/2000/svg" class="topology-map" role="img"'
        f' aria-label="map of {escape(topology.app)}" width="{width_total:.0f}"'
        f' height="{height_total:.0f}" viewBox="0 0 {width_total:.0f} {height_total:.0f}">',
        f"<title>map of {escape(topology.app)}</title>",
        '<defs><marker id="map-arrow" viewBox="0 0 10 10" refX="10" refY="5"'
        ' markerWidth="7" markerHeight="7" orient="auto">'
        '<path d="M0,0 L10,5 L0,10 z" fill="#475467"/></marker></defs>',
        "<style>.topology-map text{font:12px system-ui,sans-serif;fill:#1d232a}"
        ".topology-map .edge text{font-size:10.5px;fill:#475467;paint-order:stroke;stroke:#fff;"
        "stroke-width:3px}.topology-map .edge path{fill:none;stroke:#667085;stroke-width:1.1}"
        ".topology-map .back path{stroke-dasharray:4 3}</style>",
        *(d.render() for d in drawn),
    ]
    for b in boxes.values():
        out.append(
            f'<g class="node kind-{b.node.kind}" id="map-{b.node.id}"'
            f' data-kind="{b.node.kind}" data-name="{escape(b.node.label)}">'
            f"<title>{escape(b.title)}</title>{_shape(b)}"
            f"{_text(b.x + b.w / 2, b.mid + 4, _label(b.node.label))}</g>"
        )
    out.append(_legend(legend_y))
    out.append("</svg>")
    return "\n".join(out)


@dataclass(slots=True)
class _Drawn:
    """An arrow: its edge, its path, and where its label goes."""

    edge: Edge
    path: str
    x: float
    y: float
    back: bool = False
    anchor: str = "middle"

    def render(self) -> str:
        e = self.edge
        return (
            f'<g class="edge{" back" if self.back else ""}" data-label="{escape(e.label)}"'
            f' data-source="map-{e.source}" data-target="map-{e.target}">'
            f"<title>{escape(e.label)}</title>"
            f'<path d="{self.path}" marker-end="url(#map-arrow)"/>'
            f"{_text(self.x, self.y, e.label, self.anchor)}</g>"
        )


def _spread(drawn: list[_Drawn], gaps: list[int]) -> list[_Drawn]:
    """Labels sharing a gap between columns moved apart vertically, so that none overlaps."""
    by_gap: dict[int, list[_Drawn]] = {}
    for d, gap in zip(drawn, gaps, strict=True):
        by_gap.setdefault(gap, []).append(d)
    for group in by_gap.values():
        group.sort(key=lambda d: d.y)
        for before, after in itertools.pairwise(group):
            after.y = max(after.y, before.y + LABEL_H)
    return drawn


def _forward(source: _Box, target: _Box, e: Edge) -> _Drawn:
    x1, y1 = source.x + source.w, source.mid
    x2, y2 = target.x, target.mid
    bend = max(30.0, (x2 - x1) / 2)
    path = (
        f"M{x1:.1f},{y1:.1f} C{x1 + bend:.1f},{y1:.1f} {x2 - bend:.1f},{y2:.1f} {x2:.1f},{y2:.1f}"
    )
    return _Drawn(e, path, (x1 + x2) / 2, (y1 + y2) / 2 - 3)


def _over(
    source: _Box,
    target: _Box,
    e: Edge,
    lane: float,
    gutters: tuple[float, float],
    tops: tuple[bool, bool],
    n: int,
) -> _Drawn:
    """An arrow right to left, along its lane above the nodes: out of the source's top (the
    first of its column) or through its gutter, and into the target's top or side likewise."""
    out, into = gutters
    if tops[0]:
        x1 = source.x + min(source.w - 6, 8 + n * GUTTER)
        points = [(x1, source.y), (x1, lane)]
    else:
        points = [(source.x + source.w, source.mid), (out, source.mid), (out, lane)]
    if tops[1]:
        x2 = target.x + target.w - min(target.w - 6, 8 + n * GUTTER)
        points += [(x2, lane), (x2, target.y)]
    else:
        points += [(into, lane), (into, target.mid), (target.x, target.mid)]
    path = "M" + " L".join(f"{x:.1f},{y:.1f}" for x, y in points)
    return _Drawn(e, path, (points[1][0] + points[-2][0]) / 2, lane - 3, back=True)


def _loop(box: _Box, e: Edge) -> _Drawn:
    x, y = box.x + box.w, box.mid
    path = (
        f"M{x - 2:.1f},{y - 8:.1f} C{x + 40:.1f},{y - 30:.1f} {x + 40:.1f},{y + 30:.1f}"
        f" {x - 2:.1f},{y + 8:.1f}"
    )
    return _Drawn(e, path, x + 36, y + 4, anchor="start")


def _legend(y: float) -> str:
    parts_ = ['<g class="legend">']
    x = float(MARGIN)
    for kind in ("code", "command", "handler", "decider", "event", "subscriber", "workflow"):
        box = _Box(Node(f"legend-{kind}", kind, kind), kind, x=x, y=y, w=len(kind) * CHAR_W + 28)
        parts_.append(f"{_shape(box)}{_text(box.x + box.w / 2, box.mid + 4, kind)}")
        x += box.w + 10
    parts_.append("</g>")
    return "".join(parts_)


__all__ = ["svg"]
