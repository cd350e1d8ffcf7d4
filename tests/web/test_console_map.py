"""The console's map: the advisor's findings on the served App (the same as ``tidings check``),
its map as SVG that parses and names every message, the downloads, the console over a bare
store, and text from the user's code that cannot inject markup."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import ModuleType

import httpx
import pytest

from tidings import App, Command, Event
from tidings.examples.cinema import messages as cinema_messages
from tidings.examples.cinema.app import build_app
from tidings.web import create_console

SVG = "{http://www.w3.org/2000/svg}"
CINEMA = "tidings.examples.cinema.app:build_app"


@asynccontextmanager
async def console_on(app: App, **kw: object) -> AsyncIterator[httpx.AsyncClient]:
    async with app:
        site = create_console(app, manage=False, **kw)  # type: ignore[arg-type]
        transport = httpx.ASGITransport(app=site)
        async with httpx.AsyncClient(transport=transport, base_url="http://console") as client:
            yield client


def tidings_check(target: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-m", "tidings", "check", target, "--format", "json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode in (0, 1), done.stderr
    found: dict[str, object] = json.loads(done.stdout)
    return found


def cinema_types(kind: type) -> set[str]:
    return {
        value.__name__
        for value in vars(cinema_messages).values()
        if isinstance(value, type) and issubclass(value, kind) and value is not kind
    }


def nodes(svg: ET.Element, kind: str) -> set[str]:
    return {g.get("data-name", "") for g in svg.iter(f"{SVG}g") if g.get("data-kind") == kind}


def arrows(svg: ET.Element) -> set[tuple[str, str, str]]:
    names = {g.get("id"): g.get("data-name") for g in svg.iter(f"{SVG}g") if g.get("data-kind")}
    return {
        (
            names[g.get("data-source")] or "",
            g.get("data-label") or "",
            names[g.get("data-target")] or "",
        )
        for g in svg.iter(f"{SVG}g")
        if "edge" in (g.get("class") or "").split()
    }


async def test_the_findings_are_those_of_tidings_check_and_the_map_parses(tmp_path: Path) -> None:
    app = build_app(f"sqlite:///{tmp_path / 'cinema.db'}")
    async with console_on(app) as client:
        answer = await client.get("/api/topology")
        assert answer.status_code == 200, answer.text
        found = answer.json()
        again = (await client.get("/api/topology")).json()

    expected = tidings_check(CINEMA)
    assert found["findings"] == expected["findings"]
    assert found["counts"] == expected["counts"] == {"error": 0, "warning": 0, "info": 1}
    assert [(f["rule"], f["suppressed"]) for f in found["findings"]] == [
        ("TD002", "in code"),
        ("TD003", None),
    ]
    assert found["registrations"] is True
    assert again["computed_at"] == found["computed_at"], "the map is computed once per console"

    svg = ET.fromstring(found["svg"])
    assert svg.tag == f"{SVG}svg"
    assert nodes(svg, "command") == cinema_types(Command)
    assert nodes(svg, "event") == cinema_types(Event)
    assert nodes(svg, "workflow") == {"purchase"}
    assert nodes(svg, "subscriber") == {"email", "website"}
    drawn = arrows(svg)
    assert len(drawn) == len(found["map"]["edges"])
    for arrow in [
        ("ReserveSeat", "handles", "seats.decide"),
        ("seats.decide", "publishes", "SeatReserved"),
        ("SeatReserved", "subscribes", "purchase"),
        ("purchase", "sends", "RequestPayment"),
        ("purchase", "times out: payment", "purchase"),
        ("ReservationConfirmed", "subscribes", "email"),
        ("issue_receipt", "publishes", "ReceiptIssued"),
    ]:
        assert arrow in drawn, (arrow, sorted(drawn))


async def test_the_map_downloads_as_mermaid_dot_and_svg(tmp_path: Path) -> None:
    app = build_app(f"sqlite:///{tmp_path / 'cinema.db'}")
    async with console_on(app) as client:
        mermaid = await client.get("/api/topology", params={"format": "mermaid"})
        dot = await client.get("/api/topology", params={"format": "dot"})
        svg = await client.get("/api/topology", params={"format": "svg"})
        wrong = await client.get("/api/topology", params={"format": "png"})
        spec = (await client.get("/api/openapi.json")).json()

    assert mermaid.text.startswith("flowchart LR")
    assert 'filename="cinema-map.mmd"' in mermaid.headers["content-disposition"]
    assert dot.text.startswith('digraph "cinema" {')
    assert "C_cinema_ReserveSeat -> H_decider_seats_decide" in dot.text
    assert svg.headers["content-type"].startswith("image/svg+xml")
    assert ET.fromstring(svg.text).tag == f"{SVG}svg"
    assert wrong.status_code == 400
    assert "mermaid, dot, svg" in wrong.json()["error"]
    operation = spec["paths"]["/api/topology"]["get"]
    assert [p["name"] for p in operation["parameters"]] == ["format"]


async def test_the_page_groups_findings_and_draws_the_map(tmp_path: Path) -> None:
    app = build_app(f"sqlite:///{tmp_path / 'cinema.db'}")
    async with console_on(app) as client:
        page = (await client.get("/topology")).text
        home = (await client.get("/")).text

    assert '<a href="/topology">Map</a>' in home
    assert 'id="findings-info"' in page and 'id="findings-error"' not in page
    assert "TD003</b> event-without-subscriber" in page
    assert "event ReceiptIssued is published, but nothing subscribes to it" in page
    assert "allowed in code" in page  # TD002 on ReserveSeat
    assert "A command exists because someone asks for it." in page  # TD002's explanation
    assert "Read once for this console process" in page
    assert '<svg xmlns="http://www.w3.org/2000/svg" class="topology-map"' in page
    assert 'href="/api/topology?format=mermaid"' in page


async def test_a_console_over_a_bare_store_says_how_to_get_the_map(tmp_path: Path) -> None:
    async with console_on(App("cli", store=f"sqlite:///{tmp_path / 'x.db'}"), judge=False) as c:
        found = (await c.get("/api/topology")).json()
        page = (await c.get("/topology")).text
        download = await c.get("/api/topology", params={"format": "dot"})
    assert found["registrations"] is False
    assert "tidings serve module:app" in found["hint"]
    assert 'id="no-registrations"' in page and "tidings serve module:app" in page
    assert "<svg" not in page
    assert download.status_code == 404 and "tidings serve module:app" in download.json()["error"]


EVIL = """\
from tidings import App, Command, Context, Event


class PlaceOrder(Command):
    '''<script>alert("doc")</script> & "quotes" <img src=x onerror=alert(1)>'''

    item: str


class OrderPlaced(Event):
    '''</title><script>alert(2)</script>'''

    item: str


app = App("shop", store="memory://")


@app.command
async def place_order(cmd: PlaceOrder, ctx: Context) -> None:
    ctx.publish(OrderPlaced(item=cmd.item), stream="orders")


async def route() -> None:
    await app.invoke(PlaceOrder(item="x"))
"""


def _module(tmp_path: Path) -> ModuleType:
    path = tmp_path / "evil_shop.py"
    path.write_text(textwrap.dedent(EVIL))
    spec = importlib.util.spec_from_file_location("evil_shop", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["evil_shop"] = module
    spec.loader.exec_module(module)
    return module


async def test_text_from_the_code_cannot_inject_markup(tmp_path: Path) -> None:
    module = _module(tmp_path)
    try:
        async with console_on(module.app, modules=[module]) as client:
            page = (await client.get("/topology")).text
            found = (await client.get("/api/topology")).json()
    finally:
        sys.modules.pop("evil_shop", None)

    svg = ET.fromstring(found["svg"])
    assert not [e for e in svg.iter() if e.tag.endswith("script")]
    titles = [t.text or "" for t in svg.iter(f"{SVG}title")]
    assert any('<script>alert("doc")</script>' in t for t in titles), titles
    assert any("</title><script>alert(2)</script>" in t for t in titles), titles
    assert "<script>alert" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(" in page
    # The only scripts on the page are the console's own.
    assert page.count("<script") == 2


async def test_a_broken_allow_list_is_shown_not_a_crash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.tidings.check]\nallow = {TD002 = "all"}\n')
    monkeypatch.chdir(tmp_path)
    async with console_on(build_app()) as client:
        page = await client.get("/topology")
        api = await client.get("/api/topology")
    assert page.status_code == 500
    assert 'id="topology-error"' in page.text and "allow.TD002 lists type or handler" in page.text
    assert api.status_code == 400 and "allow.TD002" in api.json()["error"]
