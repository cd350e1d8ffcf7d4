"""The console's Starlette application: pages, JSON API, static files, and how it is served."""

from __future__ import annotations

import contextlib
import os
import types
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles

from tidings.app import App
from tidings.delivery.worker import Worker
from tidings.web.data import Console
from tidings.web.operations import Operations
from tidings.web.security import CSRF, Guard, new_csrf
from tidings.web.topology import TopologyView

HERE = Path(__file__).parent
TOKEN_ENV = "TIDINGS_CONSOLE_TOKEN"


class Site:
    """What every route of one console shares: the App, its reads, its changes, the guard."""

    def __init__(
        self,
        app: App,
        token: str | None,
        *,
        judge: bool = True,
        modules: Iterable[types.ModuleType] = (),
    ) -> None:
        self.app = app
        self.console = Console(app, judge=judge)
        self.topology = TopologyView(app, modules)
        self.operations = Operations(app)
        self.guard = Guard(token)
        self.templates = Environment(
            loader=FileSystemLoader(HERE / "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
        )
        self.templates.filters["when"] = _when

    def render(
        self, request: Request, name: str, status: int = 200, **context: Any
    ) -> HTMLResponse:
        """A page; it sets the CSRF cookie the page's forms carry when the browser has none."""
        csrf = request.cookies.get(CSRF) or new_csrf()
        page = self.templates.get_template(name).render(
            request=request,
            app_name=self.app.name,
            operator=self.guard.operator(request),
            writable=self.guard.token is not None,
            csrf=csrf,
            notice=request.query_params.get("notice", ""),
            failed=request.query_params.get("failed", ""),
            **context,
        )
        response = HTMLResponse(page, status_code=status)
        if request.cookies.get(CSRF) != csrf:
            response.set_cookie(CSRF, csrf, httponly=True, samesite="strict")
        return response


def _when(at: float | None) -> str:
    import time

    if at is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(at)) + "Z"


def create_console(
    app: App,
    *,
    token: str | None = None,
    manage: bool = True,
    judge: bool = True,
    worker: Worker | None = None,
    modules: Iterable[types.ModuleType] = (),
) -> Starlette:
    """The console over ``app``: read-only unless ``token`` (or ``TIDINGS_CONSOLE_TOKEN``) is
    set. With ``manage`` the console opens and closes the App (its lifespan); otherwise the
    caller has it open in the serving loop. ``judge``: ``app`` is the application itself (not
    a bare App over its store), so a subscription it does not handle is called orphaned.
    ``/healthz``, ``/readyz`` and ``/metrics`` are served too (``worker``: the one whose leases
    ``/readyz`` checks). ``modules``: read for the map too (where the app's code sends
    messages outside its handlers), as ``tidings check`` reads its target's module."""
    from tidings.ops.health import probe_routes
    from tidings.web.api import api_routes
    from tidings.web.pages import page_routes

    token = token if token is not None else os.environ.get(TOKEN_ENV)
    site = Site(app, token, judge=judge, modules=modules)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        if manage:
            async with app:
                yield
        else:
            yield

    routes: list[BaseRoute] = [
        *page_routes(site),
        *api_routes(site),
        *probe_routes(app, worker),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    return Starlette(routes=routes, lifespan=lifespan)
