"""What every web integration answers alike: a refusal as RFC 9457 problem JSON, an outcome as JSON."""

from __future__ import annotations

from typing import Any

from tidings.errors import Refused
from tidings.records import Outcome

#: the media type of an RFC 9457 problem details body
PROBLEM_JSON = "application/problem+json"
#: a refused command is a conflict with the state of the resource
REFUSED_STATUS = 409


def problem(refused: Refused) -> dict[str, Any]:
    """The RFC 9457 body for a refusal: the standard members, plus its ``reason`` and ``code``."""
    return {
        "type": "about:blank",
        "title": "Conflict",
        "status": REFUSED_STATUS,
        "detail": refused.reason,
        "reason": refused.reason,
        "code": refused.code,
    }


def outcome_body(outcome: Outcome) -> dict[str, Any]:
    """A sent command's outcome as JSON: its status, and its result, refusal or error."""
    return {
        "id": outcome.message_id,
        "type": outcome.type or None,
        "status": outcome.status,
        "final": outcome.final,
        "result": outcome.value(),
        "reason": outcome.reason,
        "code": outcome.code,
        "error": outcome.error,
        "attempts": outcome.attempts,
    }
