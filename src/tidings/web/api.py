"""The console's JSON API under ``/api/``: everything the pages show and do, described by the
OpenAPI 3.1 document at ``/api/openapi.json`` (built from the same table as the routes)."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from tidings.errors import DeadLetterNotFound, TidingsError
from tidings.web.browse import Browser
from tidings.web.forms import FormError, fields
from tidings.web.security import Refusal
from tidings.web.topology import DOWNLOADS, NO_REGISTRATIONS

if TYPE_CHECKING:
    from tidings.web.server import Site

Call = Callable[[Request, Any], Awaitable[Any]]


class Endpoint(msgspec.Struct, frozen=True):
    """One API route: its method, path, what it does, and its parameters."""

    method: str
    path: str
    summary: str
    call: Call | None
    change: bool = False
    query: tuple[str, ...] = ()
    body: dict[str, Any] | None = None


def _json(value: Any, status: int = 200) -> Response:
    return Response(msgspec.json.encode(value), status, media_type="application/json")


def _int(request: Request, name: str) -> int:
    return int(request.path_params[name])


def endpoints(site: Site) -> list[Endpoint]:
    console, ops = site.console, site.operations
    browser = Browser(site.app)

    async def dead_letter(r: Request, _: Any) -> Any:
        shown = await console.dead_letter(_int(r, "id"))
        shown["actions"] = [
            {"name": a.name, "label": a.label, "values": v} for a, v in shown["actions"]
        ]
        shown["chain"] = await browser.chain(shown["envelope"]) if shown["envelope"] else []
        shown["envelope"] = _envelope(shown["envelope"])
        return shown

    async def cause(r: Request, _: Any) -> Any:
        found, rows = await console.cause(r.path_params["key"])
        return {"cause": found, "dead_letters": rows}

    async def action(r: Request, _: Any) -> Any:
        found = site.app.operator_actions.get(r.path_params["name"])
        if found is None:
            raise DeadLetterNotFound(f"no operator action {r.path_params['name']!r}")
        return {
            "name": found.name,
            "label": found.label,
            "mode": found.mode,
            "schema": found.schema(),
        }

    async def message(r: Request, _: Any) -> Any:
        shown = await browser.message(_int(r, "position"))
        if shown is None:
            raise DeadLetterNotFound("no message at that position")
        shown["env"] = _envelope(shown["env"])
        shown["actions"] = [
            {"name": a.name, "label": a.label, "values": v} for a, v in shown["actions"]
        ]
        return shown

    body_payload = {
        "type": "object",
        "properties": {"payload": {"type": "object"}},
        "required": ["payload"],
    }
    body_values = {
        "type": "object",
        "properties": {"values": {"type": "object"}},
        "required": ["values"],
    }
    body_reset = {
        "type": "object",
        "properties": {"to": {"type": ["string", "integer"]}},
        "required": ["to"],
    }

    def name(r: Request) -> str:
        return str(r.path_params["name"])

    return [
        Endpoint(
            "GET",
            "/api/overview",
            "Subscriptions with lag, dead letters, workers, alerts",
            lambda r, b: console.overview(),
        ),
        Endpoint(
            "GET",
            "/api/dead-letters",
            "Dead letters grouped by cause",
            lambda r, b: console.causes(r.query_params.get("subscription") or None),
            query=("subscription",),
        ),
        Endpoint("GET", "/api/dead-letters/causes/{key}", "One cause and its dead letters", cause),
        Endpoint(
            "POST",
            "/api/dead-letters/causes/{key}/retry",
            "Retry every dead letter of a cause",
            lambda r, b: ops.retry_cause(r.path_params["key"], b),
            change=True,
        ),
        Endpoint(
            "POST",
            "/api/dead-letters/causes/{key}/skip",
            "Skip every dead letter of a cause",
            lambda r, b: ops.skip_cause(r.path_params["key"], b),
            change=True,
        ),
        Endpoint(
            "GET",
            "/api/dead-letters/{id}",
            "A held message: payload, headers, attempts, what waits behind it",
            dead_letter,
        ),
        Endpoint(
            "POST",
            "/api/dead-letters/{id}/retry",
            "Retry one held message",
            lambda r, b: ops.retry(_int(r, "id"), b),
            change=True,
        ),
        Endpoint(
            "POST",
            "/api/dead-letters/{id}/skip",
            "Skip one held message",
            lambda r, b: ops.skip(_int(r, "id"), b),
            change=True,
        ),
        Endpoint(
            "POST",
            "/api/dead-letters/{id}/edit",
            "Retry one held message with an edited payload",
            None,
            change=True,
            body=body_payload,
        ),
        Endpoint("GET", "/api/actions", "Operator actions", lambda r, b: _actions(site)),
        Endpoint(
            "GET", "/api/actions/{name}", "An operator action and its command's JSON schema", action
        ),
        Endpoint(
            "POST",
            "/api/actions/{name}",
            "Run an operator action",
            None,
            change=True,
            body=body_values,
        ),
        Endpoint(
            "GET",
            "/api/subscriptions",
            "Subscriptions with lag and state",
            lambda r, b: _subs(console),
        ),
        Endpoint(
            "POST",
            "/api/subscriptions/{name}/pause",
            "Pause a subscription",
            lambda r, b: ops.pause(name(r), b),
            change=True,
        ),
        Endpoint(
            "POST",
            "/api/subscriptions/{name}/resume",
            "Resume a subscription",
            lambda r, b: ops.resume(name(r), b),
            change=True,
        ),
        Endpoint(
            "POST",
            "/api/subscriptions/{name}/reset",
            "Reset a subscription to a position",
            None,
            change=True,
            body=body_reset,
        ),
        Endpoint(
            "GET",
            "/api/links",
            "Relays (lag, holder) and inboxes (holder, sources, what they recorded)",
            lambda r, b: console.links(),
        ),
        Endpoint(
            "GET",
            "/api/workflows",
            "Workflow instances with state and pending timeouts",
            lambda r, b: console.workflows(),
        ),
        Endpoint(
            "GET",
            "/api/outcomes",
            "Sent commands' outcomes by status",
            lambda r, b: browser.outcomes(r.query_params.get("status") or None),
            query=("status",),
        ),
        Endpoint(
            "GET",
            "/api/messages",
            "The log, filtered",
            lambda r, b: browser.browse(dict(r.query_params)),
            query=("type", "stream", "correlation", "since", "until", "after"),
        ),
        Endpoint(
            "GET",
            "/api/messages/{position}",
            "A message with its causation parent, children and chain",
            message,
        ),
        Endpoint(
            "GET",
            "/api/correlations/{correlation}",
            "A correlation id's flow",
            lambda r, b: browser.flow(r.path_params["correlation"]),
        ),
        Endpoint(
            "GET", "/api/audit", "The audit trail, newest first", lambda r, b: console.audit()
        ),
        Endpoint(
            "GET",
            "/api/topology",
            "The advisor's findings and the map (format=mermaid, dot or svg: the map as a file)",
            lambda r, b: topology(site, r.query_params.get("format") or None),
            query=("format",),
        ),
    ]


async def topology(site: Site, format: str | None) -> Any:
    """The findings and the map as JSON, or the map as a file to download."""
    if format is None:
        return await site.topology.as_json()
    if format not in DOWNLOADS:
        raise FormError(f"format {format!r} is not one of {', '.join(DOWNLOADS)}; omit it for JSON")
    mapped = await site.topology.mapped()
    if mapped is None:
        return _json({"error": NO_REGISTRATIONS}, 404)
    media, extension = DOWNLOADS[format]
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", site.app.name)
    return Response(
        mapped.text(format),
        media_type=media,
        headers={"Content-Disposition": f'attachment; filename="{name}-map.{extension}"'},
    )


async def _actions(site: Site) -> list[dict[str, Any]]:
    return [
        {"name": a.name, "label": a.label, "mode": a.mode, "fields": fields(a.schema())}
        for a in site.app.operator_actions
    ]


async def _subs(console: Any) -> Any:
    view = await console.overview()
    return view["subscriptions"]


def _envelope(env: Any) -> Any:
    if env is None:
        return None
    return {
        "id": env.id,
        "kind": env.kind,
        "type": env.type,
        "version": env.version,
        "stream": env.stream,
        "stream_position": env.stream_position,
        "global_position": env.global_position,
        "recorded_at": env.recorded_at,
        "data": msgspec.json.decode(env.data) if env.data else None,
        "correlation_id": env.correlation_id,
        "causation_id": env.causation_id,
        "headers": env.headers,
    }


def _enc_hook(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, type):
        return value.__name__
    if isinstance(value, set | frozenset):
        return sorted(value)
    raise NotImplementedError(f"cannot encode {type(value).__name__}")


def api_routes(site: Site) -> list[BaseRoute]:
    """The API's routes and its OpenAPI document."""
    table = endpoints(site)
    ops = site.operations

    async def edit(r: Request, operator: str, body: dict[str, Any]) -> Any:
        payload = msgspec.json.encode(body.get("payload")).decode()
        return await ops.edit_retry(_int(r, "id"), payload, operator)

    async def run(r: Request, operator: str, body: dict[str, Any]) -> Any:
        return await ops.run_action(
            str(r.path_params["name"]), dict(body.get("values") or {}), operator
        )

    async def reset(r: Request, operator: str, body: dict[str, Any]) -> Any:
        return await ops.reset(str(r.path_params["name"]), str(body.get("to", "")), operator)

    with_body = {
        "/api/dead-letters/{id}/edit": edit,
        "/api/actions/{name}": run,
        "/api/subscriptions/{name}/reset": reset,
    }

    def handler(endpoint: Endpoint) -> Callable[[Request], Awaitable[Response]]:
        async def handle(request: Request) -> Response:
            try:
                if not endpoint.change:
                    assert endpoint.call is not None
                    found = await endpoint.call(request, None)
                else:
                    operator = site.guard.api_change(request)
                    if endpoint.body is not None:
                        raw = await request.body()
                        body = msgspec.json.decode(raw) if raw else {}
                        if not isinstance(body, dict):
                            raise FormError("send a JSON object")
                        found = await with_body[endpoint.path](request, operator, body)
                    else:
                        assert endpoint.call is not None
                        found = await endpoint.call(request, operator)
            except Refusal as refusal:
                return _json({"error": refusal.reason}, refusal.status)
            except DeadLetterNotFound as exc:
                return _json({"error": str(exc)}, 404)
            except (TidingsError, FormError, ValueError, msgspec.DecodeError) as exc:
                return _json({"error": str(exc)}, 400)
            if isinstance(found, Response):
                return found
            return Response(
                msgspec.json.encode(found, enc_hook=_enc_hook), media_type="application/json"
            )

        return handle

    async def openapi(_: Request) -> Response:
        return _json(openapi_document(site.app.name, table))

    routes: list[BaseRoute] = [Route("/api/openapi.json", openapi)]
    for endpoint in table:
        path = endpoint.path.replace("{id}", "{id:int}").replace("{position}", "{position:int}")
        routes.append(Route(path, handler(endpoint), methods=[endpoint.method]))
    return routes


def openapi_document(title: str, table: list[Endpoint]) -> dict[str, Any]:
    """The OpenAPI 3.1 description of ``table``."""
    paths: dict[str, Any] = {}
    error = {
        "description": "What went wrong",
        "content": {
            "application/json": {
                "schema": {"type": "object", "properties": {"error": {"type": "string"}}}
            }
        },
    }
    for e in table:
        params = [
            {
                "name": p,
                "in": "path",
                "required": True,
                "schema": {"type": "integer" if p in ("id", "position") else "string"},
            }
            for p in _path_params(e.path)
        ] + [
            {"name": q, "in": "query", "required": False, "schema": {"type": "string"}}
            for q in e.query
        ]
        op: dict[str, Any] = {
            "summary": e.summary,
            "operationId": (
                e.method.lower()
                + e.path.replace("/", "_").replace("{", "").replace("}", "").replace("-", "_")
            ),
            "parameters": params,
            "responses": {
                "200": {"description": "OK", "content": {"application/json": {"schema": {}}}},
                "400": error,
                "404": error,
            },
        }
        if e.change:
            op["security"] = [{"token": []}]
            op["responses"]["401"] = error
            op["responses"]["403"] = error
        if e.body is not None:
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": e.body}},
            }
        paths.setdefault(e.path, {})[e.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": f"tidings console: {title}", "version": "1"},
        "paths": paths,
        "components": {
            "securitySchemes": {
                "token": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The console token; send the operator's name in X-Tidings-Operator",
                }
            }
        },
    }


def _path_params(path: str) -> list[str]:
    return [part[1:-1] for part in path.split("/") if part.startswith("{")]
