"""The ``tidings`` command line: ``demo``, ``streams``, ``show``."""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import msgspec
import typer
from rich.console import Console
from rich.table import Table

from tidings.app import App
from tidings.backends import open_store
from tidings.errors import TidingsError

T = TypeVar("T")

cli = typer.Typer(
    name="tidings",
    help="Commands ask, events tell: run the demo, and look into a store.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()

StoreOption = Annotated[
    str | None,
    typer.Option(
        "--store", "-s", help="Store URL, e.g. sqlite:///cinema.db", envvar="TIDINGS_STORE"
    ),
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print JSON for scripts instead of a table.")
]


def _run(main: Callable[[], Awaitable[T]]) -> T:
    try:
        return asyncio.run(main())  # type: ignore[arg-type]
    except TidingsError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None


@cli.command()
def demo(
    db: Annotated[
        Path | None,
        typer.Option("--db", help="Keep the SQLite file here (default: a temporary directory)."),
    ] = None,
    seed: Annotated[
        int, typer.Option(help="The same seed gives the same guests, payments and failures.")
    ] = 7,
    guests: Annotated[int, typer.Option(help="How many guests buy tickets at once.")] = 300,
) -> None:
    """The cinema: guests buy tickets at once; payments are slow or fail; e-mails dead-letter; the operator repairs."""
    from tidings.examples.cinema.demo import run_demo

    async def main() -> bool:
        with tempfile.TemporaryDirectory(prefix="tidings-demo-") as tmp:
            path = db if db is not None else Path(tmp) / "cinema.db"
            console.print(f"tidings demo: {guests} guests, SQLite at {path}, seed {seed}")
            started = time.monotonic()
            result = await run_demo(path, seed=seed, guests=guests, console=console)
            console.print(f"done in {time.monotonic() - started:.1f}s")
            return result.ok

    if not _run(main):
        raise typer.Exit(1)


AppOption = Annotated[
    str | None,
    typer.Option(
        "--app",
        "-a",
        help="The application, as module:attribute (its store is used).",
        envvar="TIDINGS_APP",
    ),
]


def load_app(target: str) -> App:
    """Import ``module:attribute`` (the module may be a file path) and return the App there."""
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
    found = getattr(module, attribute, None)
    if not isinstance(found, App):
        raise typer.BadParameter(f"{target!r} is not a tidings App (found {type(found).__name__})")
    return found


def _open(url: str | None, app: str | None = None) -> App:
    if app is not None:
        return load_app(app)
    if url is None:
        raise typer.BadParameter("give --store URL or --app module:attribute")
    return App("cli", store=open_store(url))


@cli.command()
def streams(
    store: StoreOption = None,
    prefix: Annotated[str, typer.Option(help="Only streams whose name starts with this.")] = "",
    limit: Annotated[int, typer.Option(help="At most this many streams.")] = 100,
    as_json: JsonOption = False,
) -> None:
    """List streams with their versions."""

    async def main() -> list[tuple[str, int]]:
        async with _open(store) as app:
            return await app.store.streams(prefix=prefix, limit=limit)

    found = _run(main)
    if as_json:
        typer.echo(json.dumps([{"stream": s, "version": v} for s, v in found]))
        return
    table = Table(title=f"streams in {store}")
    table.add_column("stream")
    table.add_column("version", justify="right")
    for name, version in found:
        table.add_row(name, str(version))
    console.print(table)


@cli.command()
def show(
    stream: Annotated[str, typer.Argument(help="The stream to show.")],
    store: StoreOption = None,
    limit: Annotated[int, typer.Option(help="At most this many messages.")] = 100,
    as_json: JsonOption = False,
) -> None:
    """Show one stream's messages, with their ids, causation and payload."""

    async def main() -> list[Any]:
        async with _open(store) as app:
            return await app.store.read_stream(stream, limit=limit)

    found = _run(main)
    rows = [
        {
            "position": env.stream_position,
            "global_position": env.global_position,
            "id": env.id,
            "kind": env.kind,
            "type": env.type,
            "version": env.version,
            "correlation_id": env.correlation_id,
            "causation_id": env.causation_id,
            "recorded_at": env.recorded_datetime.isoformat(),
            "data": _payload(env.data),
        }
        for env in found
    ]
    if as_json:
        typer.echo(json.dumps(rows))
        return
    table = Table(title=f"stream {stream}")
    for column in ("position", "global_position", "type", "data", "causation_id"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            *(str(row[c]) for c in ("position", "global_position", "type")),
            json.dumps(row["data"]),
            str(row["causation_id"]),
        )
    console.print(table)


@cli.command()
def worker(
    target: Annotated[str, typer.Argument(help="The application, as module:attribute.")],
    lease_ttl: Annotated[
        float, typer.Option(help="Seconds before a dead worker's partitions are taken over.")
    ] = 10.0,
    batch_size: Annotated[int, typer.Option(help="Messages read and committed together.")] = 500,
    worker_id: Annotated[str | None, typer.Option(help="This worker's name in leases.")] = None,
) -> None:
    """Run every subscription and sent-command handler of an app until SIGTERM or Ctrl-C."""
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    app = load_app(target)

    async def main() -> None:
        async with app:
            await app.worker(lease_ttl=lease_ttl, batch_size=batch_size, worker_id=worker_id).run(
                handle_signals=True
            )

    _run(main)


@cli.command()
def subscriptions(
    store: StoreOption = None, app: AppOption = None, as_json: JsonOption = False
) -> None:
    """Subscriptions with their partitions: checkpoint, lag, and who holds the lease."""

    async def main() -> tuple[int, float, list[Any]]:
        async with _open(store, app) as opened:
            return (
                await opened.store.last_position(),
                await opened.store.now(),
                await opened.store.partitions(),
            )

    last, now, parts = _run(main)
    rows = [
        {
            "subscription": p.subscription,
            "partition": p.partition,
            "position": p.position,
            "lag": last - p.position,
            "owner": p.owner if p.lease_expires is not None and p.lease_expires > now else None,
        }
        for p in parts
    ]
    if as_json:
        typer.echo(json.dumps(rows))
        return
    table = Table(title=f"subscriptions (log at {last})")
    for column in ("subscription", "partition", "position", "lag", "owner"):
        table.add_column(column)
    for row in rows:
        table.add_row(*(str(row[c]) if row[c] is not None else "-" for c in row))
    console.print(table)


dlq = typer.Typer(help="Dead letters: list, show, retry, skip.", no_args_is_help=True)
cli.add_typer(dlq, name="dlq")


def _held_row(h: Any) -> dict[str, Any]:
    return {
        "id": h.id,
        "subscription": h.subscription,
        "stream": h.stream,
        "global_position": h.global_position,
        "message_id": h.message_id,
        "type": h.type,
        "status": h.status,
        "attempts": h.attempts,
        "error": h.error,
        "due_at": h.due_at,
        "first_failed_at": h.first_failed_at,
        "last_failed_at": h.last_failed_at,
    }


@dlq.command("list")
def dlq_list(
    store: StoreOption = None,
    app: AppOption = None,
    subscription: Annotated[str | None, typer.Option(help="Only this subscription.")] = None,
    stream: Annotated[str | None, typer.Option(help="Only this stream.")] = None,
    every: Annotated[
        bool, typer.Option("--all", help="Every held message, not only dead ones.")
    ] = False,
    limit: Annotated[int, typer.Option(help="At most this many.")] = 100,
    as_json: JsonOption = False,
) -> None:
    """Dead letters (or, with --all, every held message), oldest first, with their cause."""

    async def main() -> list[Any]:
        async with _open(store, app) as opened:
            return await opened.dead_letters.list(
                subscription=subscription,
                stream=stream,
                status=None if every else "dead",
                limit=limit,
            )

    rows = [_held_row(h) for h in _run(main)]
    if as_json:
        typer.echo(json.dumps(rows))
        return
    table = Table(title="dead letters" if not every else "held messages")
    for column in ("id", "subscription", "stream", "type", "status", "attempts", "error"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            *(
                str(row[c])
                for c in ("id", "subscription", "stream", "type", "status", "attempts", "error")
            )
        )
    console.print(table)
    if not rows:
        console.print("nothing is held")


@dlq.command("show")
def dlq_show(
    id: Annotated[int, typer.Argument(help="The dead letter's id (from `tidings dlq list`).")],
    store: StoreOption = None,
    app: AppOption = None,
    as_json: JsonOption = False,
) -> None:
    """One dead letter: the message, every attempt, the traceback, and what waits behind it."""

    async def main() -> Any:
        async with _open(store, app) as opened:
            return await opened.dead_letters.show(id)

    found = _run(main)
    row = _held_row(found.held)
    row["waiting_behind"] = found.waiting
    row["history"] = [{"at": a.at, "error": a.error} for a in found.held.history]
    row["traceback"] = found.held.traceback
    row["data"] = _payload(found.envelope.data) if found.envelope is not None else None
    if as_json:
        typer.echo(json.dumps(row))
        return
    for key in (
        "id",
        "subscription",
        "stream",
        "global_position",
        "message_id",
        "type",
        "status",
        "attempts",
        "error",
        "waiting_behind",
    ):
        console.print(f"[bold]{key}[/bold]: {row[key]}")
    console.print(f"[bold]data[/bold]: {json.dumps(row['data'])}")
    for attempt in row["history"]:
        console.print(
            f"  attempt at {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(attempt['at']))}Z: {attempt['error']}"
        )
    if row["traceback"]:
        console.print(row["traceback"], markup=False, highlight=False)


@dlq.command("retry")
def dlq_retry(
    id: Annotated[int | None, typer.Argument(help="The dead letter's id.")] = None,
    store: StoreOption = None,
    app: AppOption = None,
    stream: Annotated[
        str | None, typer.Option(help="Retry the head of this stream (with --subscription).")
    ] = None,
    subscription: Annotated[
        str | None, typer.Option(help="The subscription (for --stream or --error).")
    ] = None,
    error: Annotated[
        str | None, typer.Option(help="Retry every dead letter whose error starts with this.")
    ] = None,
    actor: Annotated[
        str | None, typer.Option(help="Who does this, for the audit trail (default: $USER).")
    ] = None,
) -> None:
    """Handle dead letters again; the messages waiting behind each follow in order (a worker does it)."""

    async def main() -> int:
        async with _open(store, app) as opened:
            letters = opened.dead_letters
            if id is not None:
                await letters.retry(id, actor=actor)
                return 1
            if stream is not None:
                if subscription is None:
                    raise typer.BadParameter("--stream needs --subscription")
                return await letters.retry_stream(subscription, stream, actor=actor)
            if error is not None:
                return await letters.retry_error(error, subscription=subscription, actor=actor)
            raise typer.BadParameter("give an id, --stream with --subscription, or --error")

    count = _run(main)
    console.print(
        f"{count} dead letter(s) queued for retry; a running worker replays them in order"
    )


@dlq.command("skip")
def dlq_skip(
    id: Annotated[int, typer.Argument(help="The dead letter's id.")],
    store: StoreOption = None,
    app: AppOption = None,
    actor: Annotated[
        str | None, typer.Option(help="Who does this, for the audit trail (default: $USER).")
    ] = None,
) -> None:
    """Give up on a dead letter; the messages waiting behind it are released, in order."""

    async def main() -> Any:
        async with _open(store, app) as opened:
            return await opened.dead_letters.skip(id, actor=actor)

    held = _run(main)
    console.print(
        f"skipped #{held.id} ({held.type} in {held.stream}); messages behind it are released"
    )


@cli.command()
def audit(
    store: StoreOption = None, app: AppOption = None, limit: int = 50, as_json: JsonOption = False
) -> None:
    """The operator actions taken, newest first."""

    async def main() -> list[Any]:
        async with _open(store, app) as opened:
            return await opened.store.audit_entries(limit=limit)

    entries = _run(main)
    rows = [
        {
            "id": e.id,
            "at": e.at,
            "actor": e.actor,
            "action": e.action,
            "target": e.target,
            "detail": e.detail,
        }
        for e in entries
    ]
    if as_json:
        typer.echo(json.dumps(rows))
        return
    table = Table(title="audit trail")
    for column in ("id", "at", "actor", "action", "target", "detail"):
        table.add_column(column)
    for row in rows:
        row["at"] = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(row["at"]))
        table.add_row(*(str(v) for v in row.values()))
    console.print(table)


def _payload(data: bytes) -> Any:
    # Shown as stored; a payload that is not JSON (a corrupted row) is shown as text, not a crash.
    try:
        return msgspec.json.decode(data)
    except msgspec.DecodeError:
        return bytes(data).decode("utf-8", "replace")


def main() -> None:
    """Entry point of the ``tidings`` script."""
    cli()
