"""The ``Ticket`` of a sent command: its id, its stream, and the way to its outcome and result."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from tidings.errors import CommandDead, restore_refusal
from tidings.records import DEAD, REFUSED, SUCCEEDED, Outcome


class Outcomes(Protocol):
    """Where outcomes are waited for and results decoded: the App that sent the command."""

    async def wait_outcome(self, message_id: str, timeout: float | None = None) -> Outcome: ...

    def result(self, outcome: Outcome) -> Any: ...


@dataclass(frozen=True, slots=True)
class Ticket:
    """The receipt for a sent command: its id, and the way to its outcome."""

    app: Outcomes
    message_id: str
    stream: str

    async def outcome(self, timeout: float | None = None) -> Outcome:
        """Wait up to ``timeout`` seconds for the command's final outcome (``succeeded``,
        ``refused`` or ``dead``); after that, the latest known (``failed`` while it is being
        retried, ``pending`` before it was first handled)."""
        return await self.app.wait_outcome(self.message_id, timeout)

    async def result(self, timeout: float | None = None) -> Any:
        """The handler's result, decoded to the type its handler declares it returns (plain JSON
        values when it declares none, or the handler is not in this App); raises the handler's
        ``Refused`` (of its class, when that is loaded here) if it refused, ``CommandDead`` if it was given up on, ``TimeoutError`` if it has not ended
        within ``timeout``."""
        outcome = await self.outcome(timeout)
        if outcome.status == SUCCEEDED:
            return self.app.result(outcome)
        if outcome.status == REFUSED:
            raise restore_refusal(
                outcome.reason or "refused", outcome.code, outcome.error, outcome.result
            )
        if outcome.status == DEAD:
            raise CommandDead(
                f"command {self.message_id} is dead after {outcome.attempts} attempt(s): {outcome.error}; "
                "see `tidings dlq list`"
            )
        raise TimeoutError(
            f"command {self.message_id} has not ended within {timeout}s (status {outcome.status}"
            f", {outcome.attempts} attempt(s)); is a worker running?"
        )
