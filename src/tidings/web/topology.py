"""The console's map: the advisor's findings on the served App and its map (SVG, Mermaid, DOT),
computed once per console process."""

from __future__ import annotations

import asyncio
import time
import types
from collections.abc import Iterable
from typing import Any

from tidings.app import App
from tidings.topology import Report, check
from tidings.topology.formats import as_json
from tidings.topology.graph import dot, mermaid, parts
from tidings.topology.rules import RULES, SEVERITIES
from tidings.topology.svg import svg

#: the text formats offered for download: media type and file extension
DOWNLOADS = {
    "mermaid": ("text/vnd.mermaid; charset=utf-8", "mmd"),
    "dot": ("text/vnd.graphviz; charset=utf-8", "dot"),
    "svg": ("image/svg+xml", "svg"),
}
NO_REGISTRATIONS = (
    "This console serves a store without the application's code, so there are no "
    "registrations to draw. Serve the application itself to see its map and the advisor's "
    "findings: tidings serve module:app"
)


class Mapped:
    """The advisor's report on one App and its map, as computed once."""

    def __init__(self, report: Report, seconds: float) -> None:
        self.report = report
        self.topology = report.topologies[0]
        self.computed_at = time.time()
        self.seconds = seconds
        self.svg = svg(self.topology)

    def groups(self) -> list[dict[str, Any]]:
        """The findings by severity (allowed ones too, marked), each with its rule."""
        found = []
        for severity in SEVERITIES:
            group = [f for f in self.report.findings if f.severity == severity]
            if group:
                shown = sum(1 for f in group if f.suppressed is None)
                found.append(
                    {
                        "severity": severity,
                        "shown": shown,
                        "allowed": len(group) - shown,
                        "findings": [(f, RULES[f.rule]) for f in group],
                    }
                )
        return found

    def text(self, format: str) -> str:
        if format == "mermaid":
            return mermaid(self.topology)
        if format == "dot":
            return dot(self.topology)
        return self.svg

    def as_json(self) -> dict[str, Any]:
        nodes, edges = parts(self.topology)
        return {
            "app": self.topology.app,
            "registrations": True,
            "computed_at": self.computed_at,
            "read": self.topology.read,
            **as_json(self.report),
            "map": {
                "nodes": [{"id": n.id, "label": n.label, "kind": n.kind} for n in nodes],
                "edges": [
                    {"source": e.source, "target": e.target, "label": e.label} for e in edges
                ],
            },
            "svg": self.svg,
        }


class TopologyView:
    """The served App's map and findings: read (registrations and a static read of the code)
    the first time they are asked for, then kept for the life of the console."""

    def __init__(self, app: App, modules: Iterable[types.ModuleType] = ()) -> None:
        self.app = app
        self.modules = list(modules)
        self._mapped: Mapped | None = None
        self._lock = asyncio.Lock()

    @property
    def registrations(self) -> bool:
        """Whether the App has handlers to draw (not a bare App over a store)."""
        handlers = self.app.handlers
        return bool(handlers.commands or handlers.subscribers)

    async def mapped(self) -> Mapped | None:
        """The report and the map, or ``None`` when there are no registrations."""
        if not self.registrations:
            return None
        async with self._lock:
            if self._mapped is None:
                self._mapped = await asyncio.to_thread(self._compute)
        return self._mapped

    def _compute(self) -> Mapped:
        started = time.perf_counter()
        report = check(self.app, modules=self.modules)
        return Mapped(report, time.perf_counter() - started)

    async def as_json(self) -> dict[str, Any]:
        mapped = await self.mapped()
        if mapped is None:
            return {"app": self.app.name, "registrations": False, "hint": NO_REGISTRATIONS}
        return mapped.as_json()


__all__ = ["DOWNLOADS", "NO_REGISTRATIONS", "Mapped", "TopologyView"]
