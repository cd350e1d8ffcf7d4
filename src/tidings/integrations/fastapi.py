"""FastAPI (and Starlette) integration: the App's lifespan, a dependency, refusals as 409, 202s.

``pip install 'tidings[fastapi]'``::

    api = FastAPI(lifespan=lifespan(app, worker=True))
    install(api)                       # Refused -> 409 application/problem+json
    api.include_router(outcomes())     # GET /outcomes/{id}: poll a sent command

    @api.post("/receipts", status_code=202)
    async def issue(request: Request, app: AppDep) -> Response:
        return accepted(request, await app.send(IssueReceipt(...)))

FastAPI runs on one event loop, so the async App is used as it is (no ``BlockingApp``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Annotated, Any

from tidings.app import App
from tidings.errors import MissingDependency, Refused
from tidings.integrations._http import PROBLEM_JSON, REFUSED_STATUS, outcome_body, problem
from tidings.ticket import Ticket

try:
    from fastapi import APIRouter, Depends, FastAPI, Request
    from fastapi.responses import JSONResponse
    from starlette.types import ASGIApp
except ImportError as exc:  # pragma: no cover - depends on what is installed
    raise MissingDependency(
        "the FastAPI integration needs fastapi: pip install 'tidings[fastapi]'"
    ) from exc

__all__ = ["AppDep", "accepted", "get_app", "install", "lifespan", "outcomes", "refused"]

#: the route name :func:`accepted` points ``Location`` at
OUTCOME_ROUTE = "tidings_outcome"


def lifespan(
    app: App, *, worker: bool | dict[str, Any] = False
) -> Callable[[ASGIApp], AbstractAsyncContextManager[None]]:
    """A lifespan that opens ``app`` on the server's loop, makes it the one :func:`get_app`
    gives, runs a worker beside the server when ``worker`` is true (a dict: its options), and
    stops the worker and closes the App when the server stops."""

    @asynccontextmanager
    async def run(asgi: ASGIApp) -> AsyncIterator[None]:
        state = getattr(asgi, "state", None)
        if state is not None:
            state.tidings = app
        await app.open()
        running = None
        if worker is not False:
            options = worker if isinstance(worker, dict) else {}
            running = app.worker(**options)
            task = asyncio.create_task(running.run(), name=f"tidings:{app.name}:worker")
        try:
            yield
        finally:
            if running is not None:
                running.stop()
                await task
            await app.close()

    return run


def get_app(request: Request) -> App:
    """The dependency that gives a handler the App opened by :func:`lifespan`."""
    app = getattr(request.app.state, "tidings", None)
    if not isinstance(app, App):
        raise RuntimeError(
            "no tidings App on this FastAPI app: create it with "
            "FastAPI(lifespan=tidings.integrations.fastapi.lifespan(app))"
        )
    return app


#: ``app: AppDep`` in a route's parameters gives it the App
AppDep = Annotated[App, Depends(get_app)]


async def refused(request: Request, exc: Exception) -> JSONResponse:
    """The exception handler answering a ``Refused`` with 409 and an RFC 9457 problem body."""
    if not isinstance(exc, Refused):
        raise exc
    body = problem(exc)
    body["instance"] = request.url.path
    return JSONResponse(body, status_code=REFUSED_STATUS, media_type=PROBLEM_JSON)


def install(api: FastAPI) -> None:
    """Answer every ``Refused`` a route lets escape with :func:`refused` (409)."""
    api.add_exception_handler(Refused, refused)


def accepted(request: Request, ticket: Ticket) -> JSONResponse:
    """202 Accepted for a sent command, with ``Location`` at its outcome (the route of
    :func:`outcomes`, which must be included)."""
    location = str(request.url_for(OUTCOME_ROUTE, message_id=ticket.message_id))
    return JSONResponse(
        {"id": ticket.message_id, "status": "pending", "outcome": location},
        status_code=202,
        headers={"Location": location},
    )


def outcomes(prefix: str = "/outcomes") -> APIRouter:
    """A router with ``GET {prefix}/{message_id}``: a sent command's outcome as JSON; while it
    is not final, with ``Retry-After: 1``."""
    router = APIRouter(prefix=prefix)

    @router.get("/{message_id}", name=OUTCOME_ROUTE)
    async def outcome(message_id: str, app: AppDep) -> JSONResponse:
        found = await app.outcome(message_id)
        headers = {} if found.final else {"Retry-After": "1"}
        return JSONResponse(outcome_body(found), headers=headers)

    return router
