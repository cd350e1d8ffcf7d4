"""The ``tidings`` command line: ``demo``, ``streams``, ``show``."""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import msgspec
import typer
from rich.console import Console
from rich.table import Table

from tidings.app import App
from tidings.errors import Refused, TidingsError
from tidings.store import open_store

T = TypeVar("T")

cli = typer.Typer(
    name="tidings",
    help="Commands ask, events tell: run the demo, and look into a store.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()

StoreOption = Annotated[
    str,
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
) -> None:
    """Guests reserve seats for a screening at the same time; a taken seat is refused."""
    from tidings.examples.cinema import ReserveSeat, build_app

    requests = [
        ("ada", "A1"),
        ("grace", "A2"),
        ("alan", "A1"),  # the same seat as ada: refused, whoever comes second
        ("edsger", "B4"),
        ("barbara", "B5"),
    ]

    async def main() -> None:
        with tempfile.TemporaryDirectory(prefix="tidings-demo-") as tmp:
            path = db if db is not None else Path(tmp) / "cinema.db"
            app = build_app(f"sqlite:///{path}")
            async with app:
                screening_id = str(len(await app.store.streams(prefix="screening-")) + 1)

                async def reserve(guest: str, seat: str) -> tuple[str, str, str]:
                    try:
                        (event,) = await app.invoke(
                            ReserveSeat(screening_id=screening_id, seat=seat, guest=guest)
                        )
                    except Refused as refused:
                        return guest, seat, f"[red]refused[/red]: {refused.reason}"
                    return guest, seat, f"[green]reserved[/green] {event.reservation_id}"

                outcomes = await asyncio.gather(*(reserve(g, s) for g, s in requests))
                table = Table(title=f"ReserveSeat, invoked concurrently ({path.name}, SQLite)")
                for column in ("guest", "seat", "outcome"):
                    table.add_column(column)
                for row in outcomes:
                    table.add_row(*row)
                console.print(table)

                stream = f"screening-{screening_id}"
                recorded = await app.read_stream(stream)
                log = Table(title=f"stream {stream}: what the store now holds")
                for column in ("position", "global", "type", "seat", "guest"):
                    log.add_column(column)
                for env in recorded:
                    log.add_row(
                        str(env.stream_position),
                        str(env.global_position),
                        env.type,
                        env.message.seat,
                        env.message.guest,
                    )
                console.print(log)
                seats = [env.message.seat for env in recorded]
                refused = sum("refused" in o[2] for o in outcomes)
                ok = len(seats) == len(set(seats)) and len(seats) + refused == len(requests)
                verdict = "[green]holds[/green]" if ok else "[red]BROKEN[/red]"
                console.print(
                    f"{len(seats)} reserved, {refused} refused; no seat sold twice: {verdict}"
                )
                if not ok:
                    raise typer.Exit(1)

    _run(main)


def _open(url: str) -> App:
    return App("cli", store=open_store(url))


@cli.command()
def streams(
    store: StoreOption,
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
    store: StoreOption,
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


def _payload(data: bytes) -> Any:
    # Shown as stored; a payload that is not JSON (a corrupted row) is shown as text, not a crash.
    try:
        return msgspec.json.decode(data)
    except msgspec.DecodeError:
        return bytes(data).decode("utf-8", "replace")


def main() -> None:
    """Entry point of the ``tidings`` script."""
    cli()
