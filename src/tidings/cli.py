"""The ``tidings`` command line: the demo, the worker, and a look into a store (streams, a
stream's messages, the audit trail); the operator's commands are in :mod:`tidings.cli_operator`."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import msgspec
import typer

from tidings.cli_common import (
    AppOption,
    JsonOption,
    StoreOption,
    console,
    load_app,
    open_app,
    payload,
    run,
    table,
    when,
)
from tidings.cli_operator import dlq, subscriptions
from tidings.cli_topology import register as register_topology
from tidings.cli_web import serve
from tidings.errors import MessageDecodeError, StreamNotFound

__all__ = ["cli", "load_app", "main"]

cli = typer.Typer(
    name="tidings",
    help="Commands ask, events tell: run the demo, and look into a store.",
    no_args_is_help=True,
    add_completion=False,
)
cli.add_typer(subscriptions, name="subscriptions")
cli.add_typer(dlq, name="dlq")
register_topology(cli)
cli.command()(serve)


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
    serve: Annotated[
        bool,
        typer.Option(
            "--serve", help="Leave the dead letters and keep the web console up on the store."
        ),
    ] = False,
    port: Annotated[int, typer.Option(help="The console's port (with --serve).")] = 8000,
    transport: Annotated[
        str | None,
        typer.Option(help="Run it as three services over rabbitmq, nats or kafka (see docs)."),
    ] = None,
    broker: Annotated[
        str | None, typer.Option(help="The broker's URL (with --transport; default: loopback).")
    ] = None,
) -> None:
    """The cinema: guests buy tickets at once; payments are slow or fail; e-mails dead-letter; the operator repairs."""
    from tidings.cli_web import demo_console
    from tidings.examples.cinema.demo import run_demo

    if transport is not None or broker is not None:
        from tidings.examples.cinema.split_demo import across

        if not run(lambda: across(transport, broker, db, seed, guests, serve, console)):
            raise typer.Exit(1)
        return

    async def main() -> bool:
        with tempfile.TemporaryDirectory(prefix="tidings-demo-") as tmp:
            path = db if db is not None else Path(tmp) / "cinema.db"
            console.print(f"tidings demo: {guests} guests, SQLite at {path}, seed {seed}")
            started = time.monotonic()
            result = await run_demo(
                path,
                seed=seed,
                guests=guests,
                console=console,
                repair=not serve,
                then=demo_console(port) if serve else None,
            )
            console.print(f"done in {time.monotonic() - started:.1f}s")
            return result.ok

    if not run(main):
        raise typer.Exit(1)


@cli.command()
def streams(
    store: StoreOption = None,
    app: AppOption = None,
    prefix: Annotated[str, typer.Option(help="Only streams whose name starts with this.")] = "",
    limit: Annotated[int, typer.Option(help="At most this many streams.")] = 100,
    all_: Annotated[
        bool, typer.Option("--all", help="Also the framework's own ($) streams.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """List streams with their versions (the framework's own ``$`` streams with --all)."""

    async def main() -> tuple[str, list[tuple[str, int]]]:
        async with open_app(store, app) as opened:
            found = await opened.store.streams(prefix=prefix, limit=limit, internal=all_)
            return opened.store.url, found

    url, found = run(main)
    if as_json:
        typer.echo(json.dumps([{"stream": s, "version": v} for s, v in found]))
        return
    console.print(table(f"streams in {url}", {"stream": False, "version": True}, found))


@cli.command()
def show(
    stream: Annotated[str, typer.Argument(help="The stream to show.")],
    store: StoreOption = None,
    app: AppOption = None,
    limit: Annotated[int, typer.Option(help="At most this many messages.")] = 100,
    as_json: JsonOption = False,
) -> None:
    """Show one stream's messages, with their ids, causation and payload. With --app, payloads
    are decoded by the app's classes (upcast to the current version); one that cannot be
    decoded is shown as stored, with the reason."""

    async def main() -> list[dict[str, Any]]:
        async with open_app(store, app) as opened:
            found = await opened.store.read_stream(stream, limit=limit)
            if not found:
                raise StreamNotFound(
                    f"stream {stream!r} does not exist in {opened.store.url} (no message was "
                    "recorded in it); list the streams with `tidings streams`"
                )
            rows = []
            for env in found:
                row = {
                    "position": env.stream_position,
                    "global_position": env.global_position,
                    "id": env.id,
                    "kind": env.kind,
                    "type": env.type,
                    "version": env.version,
                    "correlation_id": env.correlation_id,
                    "causation_id": env.causation_id,
                    "recorded_at": env.recorded_datetime.isoformat(),
                    "data": payload(env.data),
                    "error": None,
                }
                if app is not None:
                    try:
                        row["data"] = msgspec.to_builtins(opened.decode(env).message)
                    except MessageDecodeError as exc:
                        row["error"] = str(exc)
                rows.append(row)
            return rows

    rows = run(main)
    if as_json:
        typer.echo(json.dumps(rows))
        return
    columns = {"pos": True, "global": True, "type": False, "data": False, "caused by": False}
    console.print(
        table(
            f"stream {stream}",
            columns,
            [
                [r["position"], r["global_position"], r["type"], _shown(r), r["causation_id"]]
                for r in rows
            ],
        )
    )


def _shown(row: dict[str, Any]) -> str:
    data = row["data"] if isinstance(row["data"], str) else json.dumps(row["data"])
    return data if row["error"] is None else f"{data}\n(as stored: {row['error']})"


@cli.command()
def worker(
    target: Annotated[str, typer.Argument(help="The application, as module:attribute.")],
    lease_ttl: Annotated[
        float, typer.Option(help="Seconds before a dead worker's partitions are taken over.")
    ] = 10.0,
    batch_size: Annotated[int, typer.Option(help="Messages read and committed together.")] = 500,
    worker_id: Annotated[str | None, typer.Option(help="This worker's name in leases.")] = None,
    metrics_port: Annotated[
        int | None, typer.Option(help="Serve /healthz, /readyz and /metrics on this port.")
    ] = None,
    metrics_host: Annotated[str, typer.Option(help="The address the probes listen on.")] = (
        "127.0.0.1"
    ),
    alert_webhook: Annotated[
        str | None, typer.Option(help="POST each alert as JSON to this URL.")
    ] = None,
    alert_lag: Annotated[
        float, typer.Option(help="Alert when a subscription lags more seconds than this.")
    ] = 300.0,
    tracing: Annotated[
        bool, typer.Option(help="Trace with the global OpenTelemetry tracer provider.")
    ] = False,
) -> None:
    """Run every subscription and sent-command handler of an app until SIGTERM or Ctrl-C."""
    import logging

    from tidings.ops.serve import run_worker

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    app = load_app(target)

    async def main() -> None:
        async with app:
            await run_worker(
                app,
                metrics_port=metrics_port,
                metrics_host=metrics_host,
                webhook=alert_webhook,
                lag_seconds=alert_lag,
                tracing=tracing,
                lease_ttl=lease_ttl,
                batch_size=batch_size,
                worker_id=worker_id,
            )

    run(main)


@cli.command()
def audit(
    store: StoreOption = None, app: AppOption = None, limit: int = 50, as_json: JsonOption = False
) -> None:
    """The operator actions taken, newest first."""

    async def main() -> list[Any]:
        async with open_app(store, app) as opened:
            return await opened.store.audit_entries(limit=limit)

    rows = [
        {
            "id": e.id,
            "at": e.at,
            "actor": e.actor,
            "action": e.action,
            "target": e.target,
            "detail": e.detail,
        }
        for e in run(main)
    ]
    if as_json:
        typer.echo(json.dumps(rows))
        return
    columns = {
        "id": True,
        "at": False,
        "actor": False,
        "action": True,
        "target": False,
        "detail": False,
    }
    console.print(
        table(
            "audit trail",
            columns,
            [
                [r["id"], when(r["at"]), r["actor"], r["action"], r["target"], r["detail"]]
                for r in rows
            ],
        )
    )


def main() -> None:
    """Entry point of the ``tidings`` script."""
    cli()
