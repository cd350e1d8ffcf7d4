"""Marks the advisor reads from code: rules allowed on a handler or a message type."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, TypeVar

from tidings.errors import ConfigurationError

T = TypeVar("T")

RULE_ID = re.compile(r"TD\d{3}")
_ALLOW = "__tidings_allow__"


def allow(*rules: str) -> Callable[[T], T]:
    """Let ``tidings check`` keep quiet about ``rules`` (ids such as ``"TD002"``) wherever this
    handler function, decide function, workflow handler or message class is concerned::

        @allow("TD002")          # invoked by the web request, outside the code the advisor reads
        class ReserveSeat(Command): ...
    """
    for rule in rules:
        if not RULE_ID.fullmatch(rule):
            raise ConfigurationError(
                f"allow({rule!r}): name rules by their id, e.g. allow('TD002'); "
                "`tidings check --format json` shows each finding's rule"
            )

    def mark(target: T) -> T:
        setattr(target, _ALLOW, allowed(target) | frozenset(rules))
        return target

    return mark


def allowed(target: Any) -> frozenset[str]:
    """The rules allowed on ``target`` by :func:`allow`."""
    found: object = getattr(target, _ALLOW, frozenset())
    return found if isinstance(found, frozenset) else frozenset()
