"""Who may change things: the console token, the operator's session and the CSRF check.

Reading needs nothing. A change needs the token: a browser signs in once with it and gets a
session cookie (the operator's name, signed with an HMAC keyed by the token, so the cookie never
holds the token); each form carries the CSRF value of a second cookie (double submit). A script
sends ``Authorization: Bearer <token>`` and ``X-Tidings-Operator: <name>`` instead (no cookie, so
no CSRF). Every comparison is in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

from starlette.requests import Request

SESSION = "tidings_session"
CSRF = "tidings_csrf"
_OPERATOR = re.compile(r"^[\w .@-]{1,64}$")


class Refusal(Exception):
    """A change was refused: ``status`` (401, 403) and what to do."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def valid_operator(name: str) -> str:
    name = name.strip()
    if not _OPERATOR.match(name):
        raise Refusal(
            400, "give your name (letters, digits, spaces, '.', '@', '-'; at most 64 characters)"
        )
    return name


class Guard:
    """Checks changes against ``token`` (``None``: the console is read-only)."""

    def __init__(self, token: str | None) -> None:
        self.token = token or None

    def _sign(self, text: str) -> str:
        assert self.token is not None
        return hmac.new(self.token.encode(), text.encode(), hashlib.sha256).hexdigest()

    def check_token(self, given: str) -> bool:
        if self.token is None:
            return False
        return hmac.compare_digest(given.encode(), self.token.encode())

    def session_value(self, operator: str) -> str:
        """The session cookie's value for ``operator``: name, nonce, signature."""
        nonce = secrets.token_hex(8)
        return f"{operator}|{nonce}|{self._sign(f'{operator}|{nonce}')}"

    def operator(self, request: Request) -> str | None:
        """The operator signed in on this browser (``None`` if nobody is, or the token changed)."""
        if self.token is None:
            return None
        value = request.cookies.get(SESSION, "")
        parts = value.split("|")
        if len(parts) != 3:
            return None
        name, nonce, signature = parts
        if not hmac.compare_digest(signature.encode(), self._sign(f"{name}|{nonce}").encode()):
            return None
        return name

    def readonly_reason(self) -> str:
        return (
            "this console is read-only: start it with --token (or TIDINGS_CONSOLE_TOKEN) to allow "
            "changes"
        )

    def form_change(self, request: Request, form_csrf: str) -> str:
        """The operator allowed to make this form's change, or a ``Refusal``."""
        if self.token is None:
            raise Refusal(403, self.readonly_reason())
        operator = self.operator(request)
        if operator is None:
            raise Refusal(401, "refused: sign in with the console token to make changes")
        cookie = request.cookies.get(CSRF, "")
        if not cookie or not hmac.compare_digest(cookie.encode(), form_csrf.encode()):
            raise Refusal(403, "refused: the form's CSRF check failed; reload the page and retry")
        return operator

    def api_change(self, request: Request) -> str:
        """The operator allowed to make this API change, or a ``Refusal``."""
        if self.token is None:
            raise Refusal(403, self.readonly_reason())
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not self.check_token(given.strip()):
            raise Refusal(401, "refused: send the console token as 'Authorization: Bearer <token>'")
        return valid_operator(request.headers.get("x-tidings-operator", "api"))


def new_csrf() -> str:
    return secrets.token_urlsafe(24)
