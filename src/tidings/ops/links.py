"""Relays and inboxes as operators see them, derived from the store (and the App's routes when
it is at hand): who holds each, the relay's lag, what each inbox recorded and could not read."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import msgspec

from tidings.delivery.subscriptions import SubscriptionState
from tidings.errors import MessageDecodeError
from tidings.records import DEAD
from tidings.store import Store
from tidings.topology.links import links_of
from tidings.transports.inbox import UNREADABLE_STREAM

if TYPE_CHECKING:
    from tidings.app import App

#: the subscription names a relay and an inbox's lease take (``relay:<service>``)
RELAY, INBOX = "relay:", "inbox:"


class RelayState(msgspec.Struct, frozen=True):
    """A relay: routed messages not yet confirmed by the broker, its checkpoint, its holder."""

    service: str
    subscription: str
    pending: int | None
    oldest_age: float | None
    #: the last global position the broker confirmed
    position: int
    holder: str | None
    until: float | None


class InboxState(msgspec.Struct, frozen=True):
    """An inbox: who receives (holds its lease, until when), from where, and what it recorded.

    ``received`` counts the messages in the log that arrived through a broker (each is recorded
    with the header ``tidings-source``, the service it came from): ``commands`` and ``events``.
    ``unreadable`` are the arrivals kept in ``$inbox-unreadable`` (not CloudEvents tidings can
    read); ``undecodable`` the dead letters of received types whose JSON did not fit their class.
    Duplicates are skipped by the store without a trace, so they are not counted."""

    service: str
    subscription: str
    holder: str | None
    until: float | None
    broker: str | None
    consumes: list[str]
    received: int
    commands: int
    events: int
    last_received_at: float | None
    unreadable: int
    undecodable: int
    unreadable_stream: str = UNREADABLE_STREAM


class Links(msgspec.Struct, frozen=True):
    relays: list[RelayState]
    inboxes: list[InboxState]


def _lease(state: SubscriptionState) -> tuple[str | None, float | None]:
    part = state.partitions[0]
    return part.owner, part.info.lease_expires if part.owner is not None else None


async def link_states(
    store: Store, states: Sequence[SubscriptionState], app: App | None = None
) -> Links:
    """Every relay and inbox among the subscriptions ``states`` (as ``Subscriptions.list`` gives
    them), and those of ``app``'s links not started yet."""
    described = {link.inbox: link for link in (links_of(app) if app is not None else [])}
    relays = [
        RelayState(
            s.name.removeprefix(RELAY),
            s.name,
            s.pending,
            s.oldest_age,
            s.partitions[0].info.position,
            *_lease(s),
        )
        for s in states
        if s.name.startswith(RELAY)
    ]
    by_name = {s.name: s for s in states if s.name.startswith(INBOX)}
    names = sorted({*by_name, *described})
    if not names:
        return Links(relays, [])
    arrived = await store.arrivals()
    commands = sum(a.count for a in arrived if a.kind == "command")
    events = sum(a.count for a in arrived if a.kind == "event")
    received_types = {a.type for a in arrived}
    unreadable = await store.stream_version(UNREADABLE_STREAM)
    undecodable = sum(
        1
        for h in await store.held_summaries(status=DEAD)
        if h.type in received_types and (h.error or "").startswith(MessageDecodeError.__name__)
    )
    inboxes = []
    for name in names:
        state, link = by_name.get(name), described.get(name)
        holder, until = _lease(state) if state is not None else (None, None)
        inboxes.append(
            InboxState(
                name.removeprefix(INBOX),
                name,
                holder,
                until,
                f"{link.protocol}://{link.host}" if link is not None else None,
                link.consumed() if link is not None else [],
                commands + events,
                commands,
                events,
                max((a.last_recorded_at for a in arrived), default=None),
                unreadable,
                undecodable,
            )
        )
    return Links(relays, inboxes)
