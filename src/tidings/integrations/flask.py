"""Flask integration: the App behind a :class:`~tidings.BlockingApp`, refusals as 409, 202s.

``pip install 'tidings[flask]'``::

    tidings = Tidings(app)                 # app: a tidings App
    tidings.init_app(flask_app)            # Refused -> 409 problem JSON; GET /outcomes/<id>

    @flask_app.post("/receipts")
    def issue():
        return tidings.accepted(tidings.app.send(IssueReceipt(...)))

The BlockingApp is started on first use in each process (so after a pre-forking server such
as gunicorn forked its workers) and closed at exit; any number of request threads share it.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from tidings.app import App
from tidings.blocking import BlockingApp, BlockingTicket
from tidings.errors import MissingDependency, Refused
from tidings.integrations._http import PROBLEM_JSON, REFUSED_STATUS, outcome_body, problem

try:
    from flask import Blueprint, Flask, Response, jsonify, request, url_for
except ImportError as exc:  # pragma: no cover - depends on what is installed
    raise MissingDependency(
        "the Flask integration needs flask: pip install 'tidings[flask]'"
    ) from exc

__all__ = ["Tidings"]


class Tidings:
    """The Flask extension: ``Tidings(app, flask_app)`` or ``Tidings(app)`` then
    :meth:`init_app`. ``timeout`` is how long each call waits; ``worker`` runs a worker in
    every server process (``True``, or a dict of its options)."""

    def __init__(
        self,
        app: App,
        flask_app: Flask | None = None,
        *,
        timeout: float = 30.0,
        worker: bool | dict[str, Any] = False,
        outcomes: str | None = "/outcomes",
    ) -> None:
        self.target = app
        self.timeout = timeout
        self.worker = worker
        self.outcomes = outcomes
        self._lock = threading.Lock()
        self._blocking: BlockingApp | None = None
        if flask_app is not None:
            self.init_app(flask_app)

    def init_app(self, flask_app: Flask) -> None:
        """Answer ``Refused`` with 409 problem JSON and serve ``GET {outcomes}/<id>``."""
        flask_app.extensions["tidings"] = self
        flask_app.register_error_handler(Refused, _refused)
        if self.outcomes is not None:
            blueprint = Blueprint("tidings", __name__, url_prefix=self.outcomes)
            blueprint.add_url_rule("/<message_id>", "outcome", self._outcome)
            flask_app.register_blueprint(blueprint)

    @property
    def app(self) -> BlockingApp:
        """The BlockingApp of this process, started on first use."""
        running = self._blocking
        if running is not None and not running.closed and running.runner.pid == os.getpid():
            return running
        with self._lock:
            running = self._blocking
            if running is None or running.closed or running.runner.pid != os.getpid():
                running = BlockingApp(self.target, timeout=self.timeout, worker=self.worker)
                self._blocking = running
            return running

    def accepted(self, ticket: BlockingTicket) -> tuple[Response, int, dict[str, str]]:
        """202 Accepted for a sent command, with ``Location`` at its outcome."""
        location = url_for("tidings.outcome", message_id=ticket.message_id, _external=True)
        body = {"id": ticket.message_id, "status": "pending", "outcome": location}
        return jsonify(body), 202, {"Location": location}

    def close(self) -> None:
        """Close this process's BlockingApp (it is closed at exit anyway)."""
        with self._lock:
            if self._blocking is not None:
                self._blocking.close()

    def _outcome(self, message_id: str) -> tuple[Response, int, dict[str, str]]:
        found = self.app.outcome(message_id)
        return jsonify(outcome_body(found)), 200, {} if found.final else {"Retry-After": "1"}


def _refused(exc: Refused) -> Response:
    body = problem(exc)
    body["instance"] = request.path
    response = jsonify(body)
    response.status_code = REFUSED_STATUS
    response.mimetype = PROBLEM_JSON
    return response
