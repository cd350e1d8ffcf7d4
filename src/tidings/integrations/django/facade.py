"""The per-process BlockingApp of ``settings.TIDINGS``, and what views answer with it."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from importlib import import_module
from typing import Any
from urllib.parse import quote

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import reverse

from tidings.app import App
from tidings.blocking import BlockingApp, BlockingTicket
from tidings.errors import ConfigurationError, Refused
from tidings.integrations._http import PROBLEM_JSON, REFUSED_STATUS, outcome_body, problem

_lock = threading.Lock()
_running: BlockingApp | None = None


def options() -> dict[str, Any]:
    """``settings.TIDINGS``, checked: ``APP`` is required."""
    found = getattr(settings, "TIDINGS", None)
    if not isinstance(found, Mapping) or not isinstance(found.get("APP"), str):
        raise ConfigurationError(
            'settings.TIDINGS must name the App: TIDINGS = {"APP": "package.module:app"}'
        )
    return dict(found)


def load_app() -> App:
    """The App that ``settings.TIDINGS["APP"]`` names (``"package.module:attribute"``)."""
    path = options()["APP"]
    module, _, name = path.partition(":")
    app = getattr(import_module(module), name or "app", None)
    if not isinstance(app, App):
        raise ConfigurationError(
            f'settings.TIDINGS["APP"] = {path!r} is not a tidings App: name one as '
            '"package.module:attribute"'
        )
    return app


def store_url(database: Mapping[str, Any], schema: str = "tidings") -> str | None:
    """The store URL of a Django database setting when it is PostgreSQL (tidings' tables in
    their own ``schema``), else ``None``."""
    if "postgresql" not in str(database.get("ENGINE", "")):
        return None
    user = quote(str(database.get("USER") or ""), safe="")
    password = quote(str(database.get("PASSWORD") or ""), safe="")
    auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    host = database.get("HOST") or "localhost"
    port = f":{database['PORT']}" if database.get("PORT") else ""
    name = quote(str(database.get("NAME") or ""), safe="")
    return f"postgresql://{auth}{host}{port}/{name}?schema={quote(schema, safe='')}"


def configure() -> App:
    """Load the App and give it its store: ``TIDINGS["STORE"]``, else the default database
    when it is PostgreSQL (in the schema ``TIDINGS["SCHEMA"]``, default ``tidings``), else the
    store the App was built with."""
    app = load_app()
    chosen = options().get("STORE")
    if chosen is None:
        database = getattr(settings, "DATABASES", {}).get("default", {})
        chosen = store_url(database, str(options().get("SCHEMA", "tidings")))
    if chosen is not None and not app.is_open:
        from tidings.backends import open_store

        app.store = open_store(chosen)
    return app


def get_app() -> BlockingApp:
    """This process's BlockingApp, started on first use (after a pre-forking server forked);
    ``TIDINGS["TIMEOUT"]`` is how long each call waits, ``TIDINGS["WORKER"]`` runs a worker."""
    global _running
    running = _running
    if running is not None and not running.closed and running.runner.pid == os.getpid():
        return running
    with _lock:
        running = _running
        if running is None or running.closed or running.runner.pid != os.getpid():
            found = options()
            running = BlockingApp(
                configure(),
                timeout=float(found.get("TIMEOUT", 30.0)),
                worker=found.get("WORKER", False),
            )
            _running = running
        return running


def problem_response(request: HttpRequest, refused: Refused) -> JsonResponse:
    """409 with an RFC 9457 problem body for a refusal."""
    body = problem(refused)
    body["instance"] = request.path
    return JsonResponse(body, status=REFUSED_STATUS, content_type=PROBLEM_JSON)


class RefusedMiddleware:
    """Answers a view's ``Refused`` with 409 and an RFC 9457 problem body."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if isinstance(exception, Refused):
            return problem_response(request, exception)
        return None


def accepted(request: HttpRequest, ticket: BlockingTicket) -> JsonResponse:
    """202 Accepted for a sent command, with ``Location`` at its outcome (``tidings-outcome``,
    from ``tidings.integrations.django.urls``)."""
    location = request.build_absolute_uri(reverse("tidings-outcome", args=[ticket.message_id]))
    response = JsonResponse({"id": ticket.message_id, "status": "pending", "outcome": location})
    response.status_code = 202
    response["Location"] = location
    return response


def outcome_view(request: HttpRequest, message_id: str) -> JsonResponse:
    """A sent command's outcome as JSON; while not final, with ``Retry-After: 1``."""
    found = get_app().outcome(message_id)
    response = JsonResponse(outcome_body(found))
    if not found.final:
        response["Retry-After"] = "1"
    return response
