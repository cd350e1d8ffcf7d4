"""What the commands of the command line share: the console, options, opening an App, tables."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import os
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Annotated, Any, TypeVar

import msgspec
import typer
from rich.console import Console
from rich.table import Table

from tidings.app import App
from tidings.backends import open_store
from tidings.backends.sqlite import SqliteStore
from tidings.errors import TidingsError

T = TypeVar("T")

console = Console()

StoreOption = Annotated[
    str | None,
    typer.Option(
        "--store", "-s", help="Store URL, e.g. sqlite:///cinema.db", envvar="TIDINGS_STORE"
    ),
]
AppOption = Annotated[
    str | None,
    typer.Option(
        "--app",
        "-a",
        help="The application, as module:attribute (its store is used).",
        envvar="TIDINGS_APP",
    ),
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print JSON for scripts instead of a table.")
]
ActorOption = Annotated[
    str | None,
    typer.Option(help="Who does this, for the audit trail (default: $USER)."),
]


def run(main: Callable[[], Awaitable[T]]) -> T:
    """Run ``main``; a tidings error is printed as one line, and the exit code is 1."""
    try:
        return asyncio.run(main())  # type: ignore[arg-type]
    except TidingsError as exc:
        console.print(f"[red]error:[/red] {exc}", markup=True, highlight=False)
        raise typer.Exit(1) from None


def load_app(target: str) -> App:
    """Import ``module:attribute`` (the module may be a file path) and return the App there (or
    the App a function there makes, called without arguments)."""
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise typer.BadParameter(f"{target!r}: write module:attribute, e.g. myservice.app:app")
    if module_name.endswith(".py") or "/" in module_name:
        path = Path(module_name).resolve()
        sys.path.insert(0, str(path.parent))
        module_name = path.stem
    else:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise typer.BadParameter(f"cannot import {module_name!r}: {exc}") from exc
    if not hasattr(module, attribute):
        apps = sorted(name for name, value in vars(module).items() if isinstance(value, App))
        hint = f"; its Apps: {', '.join(apps)}" if apps else "; it defines no App"
        raise typer.BadParameter(f"module {module_name!r} has no attribute {attribute!r}{hint}")
    found = getattr(module, attribute)
    if _factory(found):
        found = found()  # such as tidings.examples.cinema.app:build_app
    if not isinstance(found, App):
        raise typer.BadParameter(f"{target!r} is not a tidings App (found {type(found).__name__})")
    return found


def _factory(found: object) -> bool:
    """Whether ``found`` is a function that can be called without arguments (to make an App)."""
    if not inspect.isfunction(found):
        return False
    try:
        inspect.signature(found).bind()
    except TypeError:
        return False
    return True


def open_app(url: str | None, app: str | None = None) -> App:
    """The App named by ``--app``, or a bare App on the store ``--store`` names. A SQLite file
    must exist: an operator's command never creates one."""
    if app is not None:
        found = load_app(app)
    elif url is None:
        raise typer.BadParameter("give --store URL or --app module:attribute")
    else:
        found = App("cli", store=open_store(url))
    if isinstance(found.store, SqliteStore):
        found.store.check_file(exists=True)
    return found


def payload(data: bytes) -> Any:
    """A stored payload as JSON values; one that is not JSON (a damaged row) as text."""
    try:
        return msgspec.json.decode(data)
    except msgspec.DecodeError:
        return bytes(data).decode("utf-8", "replace")


def when(at: float | None) -> str:
    """Epoch seconds as a UTC time, to the second."""
    return "-" if at is None else time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(at)) + "Z"


def table(title: str, columns: dict[str, bool], rows: Iterable[Sequence[Any]]) -> Table:
    """A table that stays readable in 80 columns: the columns marked ``True`` (names, ids) are
    never broken; the others wrap between words."""
    made = Table(title=title, expand=False, pad_edge=False)
    for name, whole in columns.items():
        made.add_column(name, no_wrap=whole, overflow="ellipsis" if whole else "fold")
    for row in rows:
        made.add_row(*("-" if value is None else str(value) for value in row))
    return made
