"""tidings — commands ask, events tell.

A framework for systems that talk in messages: typed commands and events, one durable log, and
delivery that an operator can see and repair.
"""

from __future__ import annotations

import logging

from tidings.app import App
from tidings.blocking import BlockingApp
from tidings.context import Context
from tidings.decider import Decider
from tidings.errors import (
    ConfigurationError,
    DocumentConflict,
    DuplicateHandler,
    HandlerNotFound,
    MessageDecodeError,
    MessageValidationError,
    NotCaughtUp,
    Refused,
    StateMutated,
    StoreUnavailable,
    TidingsError,
    WrongExpectedVersion,
)
from tidings.ids import uuid7
from tidings.messages import Command, Envelope, Event, Message, asdict
from tidings.records import ANY, NO_STREAM
from tidings.registry import Problem
from tidings.ticket import Ticket

# A library logs; the application decides where it goes (nothing is printed unless it configures
# logging).
logging.getLogger("tidings").addHandler(logging.NullHandler())

__all__ = [
    "ANY",
    "NO_STREAM",
    "App",
    "BlockingApp",
    "Command",
    "ConfigurationError",
    "Context",
    "Decider",
    "DocumentConflict",
    "DuplicateHandler",
    "Envelope",
    "Event",
    "HandlerNotFound",
    "Message",
    "MessageDecodeError",
    "MessageValidationError",
    "NotCaughtUp",
    "Problem",
    "Refused",
    "StateMutated",
    "StoreUnavailable",
    "Ticket",
    "TidingsError",
    "WrongExpectedVersion",
    "asdict",
    "uuid7",
]
