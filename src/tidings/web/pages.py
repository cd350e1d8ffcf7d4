"""The console's HTML pages and the forms that change things (each answered by a redirect back
with a notice, or by a page that says why it was refused)."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from tidings.errors import TidingsError
from tidings.web.browse import Browser
from tidings.web.forms import FormError, fields
from tidings.web.security import CSRF, SESSION, Refusal, valid_operator
from tidings.web.topology import NO_REGISTRATIONS

if TYPE_CHECKING:
    from tidings.web.server import Site

Handler = Callable[[Request], Awaitable[Response]]


def _back(request: Request, form: Any, default: str) -> str:
    """Where a form returns to: a path on this site only."""
    back = str(form.get("back") or default)
    return back if back.startswith("/") and not back.startswith("//") else default


def page_routes(site: Site) -> list[BaseRoute]:
    """Every page and form route of the console ``site``."""
    console, ops, guard = site.console, site.operations, site.guard
    browser = Browser(site.app)

    def change(default: str, act: Callable[[Request, Any, str], Awaitable[Any]]) -> Handler:
        async def handle(request: Request) -> Response:
            form = await request.form()
            try:
                operator = guard.form_change(request, str(form.get("csrf", "")))
            except Refusal as refusal:
                return site.render(request, "refused.html", refusal.status, reason=refusal.reason)
            back = _back(request, form, default)
            try:
                done = await act(request, form, operator)
            except (TidingsError, FormError, ValueError) as exc:
                sep = "&" if "?" in back else "?"
                return RedirectResponse(f"{back}{sep}{urlencode({'failed': str(exc)})}", 303)
            key = "notice" if done.ok else "failed"
            sep = "&" if "?" in back else "?"
            return RedirectResponse(f"{back}{sep}{urlencode({key: done.message})}", 303)

        return handle

    async def overview(request: Request) -> Response:
        return site.render(request, "overview.html", view=await console.overview())

    async def counts(request: Request) -> Response:
        return site.render(request, "_counts.html", view=await console.overview())

    async def dead_letters(request: Request) -> Response:
        sub = request.query_params.get("subscription") or None
        return site.render(request, "causes.html", causes=await console.causes(sub))

    async def cause(request: Request) -> Response:
        try:
            found, rows = await console.cause(request.path_params["key"])
        except TidingsError as exc:
            return site.render(request, "error.html", 404, reason=str(exc))
        return site.render(request, "cause.html", cause=found, rows=rows)

    async def dead_letter(request: Request) -> Response:
        try:
            shown = await console.dead_letter(request.path_params["id"])
        except TidingsError as exc:
            return site.render(request, "error.html", 404, reason=str(exc))
        chain = await browser.chain(shown["envelope"]) if shown["envelope"] else []
        return site.render(request, "dead_letter.html", d=shown, chain=chain)

    async def actions(request: Request) -> Response:
        return site.render(request, "actions.html", actions=list(site.app.operator_actions))

    async def action(request: Request) -> Response:
        found = site.app.operator_actions.get(request.path_params["name"])
        if found is None:
            return site.render(request, "error.html", 404, reason="no such operator action")
        prefill: dict[str, Any] | None = None
        source = request.query_params.get("message")
        if source and source.isdigit():
            decoded = await browser.decoded(int(source))
            prefill = found.values_for(decoded) if decoded is not None else None
        return site.render(
            request,
            "action.html",
            action=found,
            fields=fields(found.schema(), prefill),
            source=source,
        )

    async def login_page(request: Request) -> Response:
        return site.render(request, "login.html")

    async def login(request: Request) -> Response:
        form = await request.form()
        csrf = request.cookies.get(CSRF, "")
        back = _back(request, form, "/")
        try:
            if not csrf or not hmac.compare_digest(
                csrf.encode(), str(form.get("csrf", "")).encode()
            ):
                raise Refusal(403, "the form's CSRF check failed; reload the page and retry")
            if guard.token is None:
                raise Refusal(403, guard.readonly_reason())
            if not guard.check_token(str(form.get("token", ""))):
                raise Refusal(401, "wrong token: changes stay refused")
            operator = valid_operator(str(form.get("operator", "")))
        except Refusal as refusal:
            return site.render(request, "refused.html", refusal.status, reason=refusal.reason)
        response = RedirectResponse(
            f"{back}?{urlencode({'notice': f'signed in as {operator}'})}", 303
        )
        response.set_cookie(
            SESSION, guard.session_value(operator), httponly=True, samesite="strict"
        )
        return response

    async def logout(request: Request) -> Response:
        response = RedirectResponse("/?notice=signed+out", 303)
        response.delete_cookie(SESSION)
        return response

    async def subscriptions(request: Request) -> Response:
        return site.render(request, "subscriptions.html", view=await console.overview())

    async def workflows(request: Request) -> Response:
        return site.render(request, "workflows.html", workflows=await console.workflows())

    async def audit(request: Request) -> Response:
        return site.render(request, "audit.html", entries=await console.audit())

    async def messages(request: Request) -> Response:
        found = await browser.browse(dict(request.query_params))
        return site.render(request, "messages.html", found=found, q=request.query_params)

    async def message(request: Request) -> Response:
        shown = await browser.message(request.path_params["position"])
        if shown is None:
            return site.render(request, "error.html", 404, reason="no message at that position")
        return site.render(request, "message.html", m=shown)

    async def correlation(request: Request) -> Response:
        flow = await browser.flow(request.path_params["id"])
        return site.render(request, "correlation.html", flow=flow)

    async def outcomes(request: Request) -> Response:
        return site.render(request, "outcomes.html", view=await browser.outcomes())

    async def topology(request: Request) -> Response:
        try:
            mapped = await site.topology.mapped()
        except TidingsError as exc:
            return site.render(request, "topology.html", 500, mapped=None, error=str(exc))
        return site.render(request, "topology.html", mapped=mapped, hint=NO_REGISTRATIONS)

    def by_id(act: Callable[[int, str], Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        return lambda request, form, operator: act(request.path_params["id"], operator)

    def by_key(act: Callable[[str, str], Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        return lambda request, form, operator: act(request.path_params["key"], operator)

    def by_name(act: Callable[[str, str], Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        return lambda request, form, operator: act(request.path_params["name"], operator)

    return [
        Route("/", overview),
        Route("/partials/counts", counts),
        Route("/login", login_page),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/dead-letters", dead_letters),
        Route("/dead-letters/causes/{key}", cause),
        Route(
            "/dead-letters/causes/{key}/retry",
            change("/dead-letters", by_key(ops.retry_cause)),
            methods=["POST"],
        ),
        Route(
            "/dead-letters/causes/{key}/skip",
            change("/dead-letters", by_key(ops.skip_cause)),
            methods=["POST"],
        ),
        Route("/dead-letters/{id:int}", dead_letter),
        Route(
            "/dead-letters/{id:int}/retry",
            change("/dead-letters", by_id(ops.retry)),
            methods=["POST"],
        ),
        Route(
            "/dead-letters/{id:int}/skip",
            change("/dead-letters", by_id(ops.skip)),
            methods=["POST"],
        ),
        Route(
            "/dead-letters/{id:int}/edit",
            change(
                "/dead-letters",
                lambda r, f, o: ops.edit_retry(r.path_params["id"], str(f.get("payload", "")), o),
            ),
            methods=["POST"],
        ),
        Route("/actions", actions),
        Route("/actions/{name}", action),
        Route(
            "/actions/{name}",
            change(
                "/actions",
                lambda r, f, o: ops.run_action(
                    r.path_params["name"], {k: str(v) for k, v in f.items()}, o
                ),
            ),
            methods=["POST"],
        ),
        Route("/subscriptions", subscriptions),
        Route(
            "/subscriptions/{name}/pause",
            change("/subscriptions", by_name(ops.pause)),
            methods=["POST"],
        ),
        Route(
            "/subscriptions/{name}/resume",
            change("/subscriptions", by_name(ops.resume)),
            methods=["POST"],
        ),
        Route(
            "/subscriptions/{name}/reset",
            change(
                "/subscriptions",
                lambda r, f, o: ops.reset(r.path_params["name"], str(f.get("to", "")), o),
            ),
            methods=["POST"],
        ),
        Route("/workflows", workflows),
        Route("/outcomes", outcomes),
        Route("/audit", audit),
        Route("/messages", messages),
        Route("/messages/{position:int}", message),
        Route("/correlations/{id}", correlation),
        Route("/topology", topology),
    ]
