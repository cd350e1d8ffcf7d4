"""``tidings serve``: the operator's web console over an App (or a bare store), served by uvicorn;
and the console kept up after ``tidings demo --serve``."""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
import types
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from tidings.app import App
from tidings.cli_common import StoreOption, console, open_app

if TYPE_CHECKING:
    from tidings.examples.cinema.app import Cinema

HostOption = Annotated[
    str, typer.Option(help="Address to bind (loopback by default: the console is for operators).")
]
PortOption = Annotated[int, typer.Option(help="Port to listen on.")]
TokenOption = Annotated[
    str | None,
    typer.Option(
        help="The token that allows changes (default: $TIDINGS_CONSOLE_TOKEN; none: read-only).",
        envvar="TIDINGS_CONSOLE_TOKEN",
        show_envvar=False,
    ),
]


async def serve_app(
    app: App,
    *,
    host: str,
    port: int,
    token: str | None,
    worker: bool = False,
    judge: bool = True,
    modules: Sequence[types.ModuleType] = (),
) -> None:
    """Serve the console over the open ``app`` in this event loop (with its worker, if asked)
    until Ctrl-C; its map reads ``modules`` too."""
    try:
        import uvicorn

        from tidings.web import create_console
    except ImportError as exc:
        raise typer.BadParameter(
            f"{exc}; the console needs the web extra: pip install 'tidings[web]'"
        ) from exc
    running = app.worker() if worker else None
    site = create_console(
        app, token=token, manage=False, judge=judge, worker=running, modules=modules
    )
    server = uvicorn.Server(uvicorn.Config(site, host=host, port=port, log_level="warning"))
    task = asyncio.create_task(running.run()) if running is not None else None
    mode = "changes need the token" if token else "read-only (no token given)"
    console.print(f"tidings console on http://{host}:{port}/ ({mode}); Ctrl-C stops it")
    try:
        await server.serve()
    finally:
        if running is not None and task is not None:
            running.stop()
            await task


def serve(
    target: Annotated[
        str | None, typer.Argument(help="The application, as module:attribute.")
    ] = None,
    store: StoreOption = None,
    host: HostOption = "127.0.0.1",
    port: PortOption = 8000,
    token: TokenOption = None,
    worker: Annotated[
        bool, typer.Option("--worker", help="Also run the app's worker in this process.")
    ] = False,
) -> None:
    """Serve the web console (dead letters, messages, subscriptions, operator actions) and its
    JSON API (/api/, described at /api/openapi.json)."""
    app = open_app(store, target)
    if worker and target is None:
        raise typer.BadParameter("--worker needs the application (module:attribute), not --store")

    async def main() -> None:
        async with app:
            await serve_app(
                app,
                host=host,
                port=port,
                token=token or os.environ.get("TIDINGS_CONSOLE_TOKEN"),
                worker=worker,
                judge=target is not None,
                modules=_target_module(target),
            )

    asyncio.run(main())


def _target_module(target: str | None) -> list[types.ModuleType]:
    """The module ``target`` (module:attribute, imported by then) names, which the map reads
    as ``tidings check`` does."""
    name = (target or "").partition(":")[0]
    if name.endswith(".py") or "/" in name:
        name = Path(name).stem
    found = sys.modules.get(name)
    return [found] if found is not None else []


def demo_console(port: int) -> Callable[[Cinema], Awaitable[None]]:
    """What ``tidings demo --serve`` does once the story has run: repair the e-mail provider and
    keep the console (with a worker) up on the demo's store, so the dead letters are retried by
    hand in the browser."""

    async def keep_up(cinema: Cinema) -> None:
        token = os.environ.get("TIDINGS_CONSOLE_TOKEN") or secrets.token_urlsafe(12)
        cinema.email.repaired = True
        console.print(
            "the e-mail provider is repaired now: open the console, sign in with the token "
            f"[bold]{token}[/bold] and retry the dead letters' group",
            highlight=False,
        )
        await serve_app(cinema.app, host="127.0.0.1", port=port, token=token, worker=True)

    return keep_up
