"""The commands that read an App's topology: ``tidings check`` (the advisor), ``tidings
asyncapi`` (its AsyncAPI 3 document) and ``tidings graph`` (its map)."""

from __future__ import annotations

import importlib
import json
import types
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from tidings.app import App
from tidings.cli_common import console, load_app
from tidings.errors import TidingsError
from tidings.topology import build
from tidings.topology import check as advise
from tidings.topology.asyncapi import document
from tidings.topology.formats import as_json, sarif, text
from tidings.topology.graph import dot, mermaid

Targets = Annotated[
    list[str], typer.Argument(help="The application(s), as module:attribute.", show_default=False)
]
Target = Annotated[str, typer.Argument(help="The application, as module:attribute.")]
Include = Annotated[
    list[str] | None,
    typer.Option(
        "--include", "-i", help="Also read this module (repeat): where else messages are sent."
    ),
]


class CheckFormat(StrEnum):
    text = "text"
    json = "json"
    sarif = "sarif"


class GraphFormat(StrEnum):
    mermaid = "mermaid"
    dot = "dot"


def _loaded(
    targets: list[str], include: list[str] | None
) -> tuple[list[App], list[types.ModuleType]]:
    """The Apps, and the modules to read: the targets' and the included ones."""
    apps = [load_app(target) for target in targets]
    modules = []
    for name in [t.partition(":")[0] for t in targets] + list(include or ()):
        if name.endswith(".py") or "/" in name:
            name = Path(name).stem
        try:
            modules.append(importlib.import_module(name))
        except ImportError as exc:
            raise typer.BadParameter(f"cannot import {name!r}: {exc}") from exc
    return apps, modules


def register(cli: typer.Typer) -> None:
    """Add ``check``, ``asyncapi`` and ``graph`` to the command line."""
    cli.command(name="check")(check)
    cli.command(name="asyncapi")(asyncapi)
    cli.command(name="graph")(graph)


def check(
    targets: Targets,
    format: Annotated[CheckFormat, typer.Option("--format", "-f")] = CheckFormat.text,
    strict: Annotated[bool, typer.Option(help="Fail on warnings too.")] = False,
    include: Include = None,
) -> None:
    """Review commands and events: what to change and why. Exit code 1 on errors (--strict:
    on warnings too). Several apps are checked together (a command handled in two of them)."""
    apps, modules = _loaded(targets, include)
    try:
        report = advise(*apps, modules=modules)
    except TidingsError as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from None
    if format is CheckFormat.json:
        typer.echo(json.dumps(as_json(report), indent=2))
    elif format is CheckFormat.sarif:
        typer.echo(json.dumps(sarif(report), indent=2))
    else:
        console.print(text(report, markup=True), highlight=False, soft_wrap=True)
    if report.failed(strict):
        raise typer.Exit(1)


def asyncapi(
    target: Target,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here (default: print).")
    ] = None,
    include: Include = None,
) -> None:
    """The app's AsyncAPI 3.0 document (JSON): channels, operations, messages and schemas."""
    apps, modules = _loaded([target], include)
    made = json.dumps(document(apps[0], modules), indent=2)
    if output is None:
        typer.echo(made)
    else:
        output.write_text(made + "\n", encoding="utf-8")
        console.print(f"wrote {output}", highlight=False)


def graph(
    target: Target,
    format: Annotated[GraphFormat, typer.Option("--format", "-f")] = GraphFormat.mermaid,
    include: Include = None,
) -> None:
    """The app's map: who sends, publishes, handles and subscribes to what (Mermaid or DOT)."""
    apps, modules = _loaded([target], include)
    topology = build(apps[0], modules)
    typer.echo(mermaid(topology) if format is GraphFormat.mermaid else dot(topology))


__all__ = ["register"]
