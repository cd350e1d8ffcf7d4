"""Operator actions: commands an operator may run by hand from the console (the compensating button).

``app.operator_action(IssueReceipt, label="Issue the receipt again", prefill=...)`` registers one.
The console renders a form from the command's JSON schema (``msgspec.json.schema``), prefilled
from a message in context by ``prefill(message)`` (a mapping of field values, or ``None`` when the
action does not apply to that message), and invokes or sends the command with the operator
recorded in the audit trail.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import msgspec

from tidings.errors import ConfigurationError
from tidings.messages import Command

Prefill = Callable[[Any], Mapping[str, Any] | None]

_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")


class OperatorAction(msgspec.Struct, frozen=True):
    """A command an operator may run: its type, the button's label, how it is run (``invoke``:
    now, its result or refusal shown; ``send``: queued, its outcome followed), and how its form is
    prefilled from a message."""

    name: str
    command: type[Command]
    label: str
    mode: str = "invoke"
    prefill: Prefill | None = None

    def schema(self) -> dict[str, Any]:
        """The command's JSON schema (its own definition, not a ``$ref``)."""
        found: dict[str, Any] = msgspec.json.schema(self.command)
        ref = found.get("$ref", "")
        if ref.startswith("#/$defs/"):
            return dict(found["$defs"][ref.removeprefix("#/$defs/")])
        return found

    def values_for(self, message: Any) -> dict[str, Any] | None:
        """The form's values prefilled from ``message`` (``None``: the action does not apply)."""
        if self.prefill is None:
            return msgspec.to_builtins(message) if isinstance(message, self.command) else None
        found = self.prefill(message)
        return None if found is None else dict(found)


class OperatorActions:
    """The operator actions an App registered, by name (unique)."""

    def __init__(self) -> None:
        self._actions: dict[str, OperatorAction] = {}

    def add(
        self,
        command: type[Command],
        *,
        label: str,
        prefill: Prefill | None = None,
        mode: str = "invoke",
        name: str | None = None,
    ) -> OperatorAction:
        if not (isinstance(command, type) and issubclass(command, Command)):
            raise ConfigurationError(
                f"operator_action({command!r}): give a Command class (an operator action runs a "
                "command; an event cannot be run, only followed by others)"
            )
        if mode not in ("invoke", "send"):
            raise ConfigurationError(f"operator_action mode {mode!r}: give 'invoke' or 'send'")
        name = name or command.__name__
        if not _NAME.match(name):
            raise ConfigurationError(
                f"operator action name {name!r}: use letters, digits, '_', '.', '-' (1-100)"
            )
        if name in self._actions:
            raise ConfigurationError(
                f"operator action {name!r} is registered twice: give one of them name=..."
            )
        if not label.strip():
            raise ConfigurationError(f"operator action {name!r}: give a label for its button")
        action = OperatorAction(name, command, label, mode, prefill)
        self._actions[name] = action
        return action

    def get(self, name: str) -> OperatorAction | None:
        return self._actions.get(name)

    def __iter__(self) -> Iterator[OperatorAction]:
        return iter(self._actions.values())

    def __len__(self) -> int:
        return len(self._actions)

    def applicable(self, message: Any) -> list[tuple[OperatorAction, dict[str, Any]]]:
        """The actions that apply to ``message``, each with its prefilled values."""
        found = []
        for action in self._actions.values():
            try:
                values = action.values_for(message)
            except Exception:
                values = None
            if values is not None:
                found.append((action, values))
        return found
