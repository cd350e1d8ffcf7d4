"""Transports: services talking over a broker, each with its own store as the source of truth.

``Routes`` say where messages go; ``app.connect(url, routes)`` links an App to a broker; the
worker then runs the relay (log → broker) and the inbox (broker → log). See docs/transports.md.
"""

from __future__ import annotations

from tidings.transports.broker import Broker, Delivery, Outgoing, open_broker
from tidings.transports.inbox import Inbox, InboxUnreadable
from tidings.transports.link import Link
from tidings.transports.relay import Relay
from tidings.transports.routes import Routes

__all__ = [
    "Broker",
    "Delivery",
    "Inbox",
    "InboxUnreadable",
    "Link",
    "Outgoing",
    "Relay",
    "Routes",
    "open_broker",
]
