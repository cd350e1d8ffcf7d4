"""Two services, each on a store of its own (SQLite files; PostgreSQL schemas), over each broker
(RabbitMQ, NATS JetStream, Kafka on tansu): events cross over once each and in order per stream,
a sent command's outcome comes back to the sender's store, the relays' checkpoints catch up, a
message delivered again is recorded and handled once and a malformed one is kept."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from _brokers import (
    BrokerUnderTest,
    Pay,
    Released,
    Reserved,
    caught_up,
    cinema,
    payments,
    redelivered_once_and_malformed_kept,
    running,
    wait_until,
)

from tidings import Refused

EVENTS, STREAMS = 60, 5


async def test_services_exchange_events_and_outcomes(
    any_broker: BrokerUnderTest, any_store: Callable[[], str]
) -> None:
    seen: list[tuple[str, int]] = []
    a = cinema(any_store(), any_broker)
    b = payments(any_store(), any_broker, seen)
    assert a.validate() == []  # Pay is handled elsewhere: no wiring problem
    async with a, b:
        await b.links[0].open()  # its queue exists before anything is published
        async with running(a, b):
            for n in range(EVENTS):
                await a.publish(Reserved(f"s{n % STREAMS}", n), stream=f"screening-{n % STREAMS}")
            await a.publish(Released("s0", 1), stream="screening-0")
            ticket = await a.send(Pay("o1", 1200))
            refused = await a.send(Pay("o2", 0))
            assert await ticket.result(timeout=20) == "paid-o1"
            outcome = await refused.outcome(timeout=20)
            assert (outcome.status, outcome.reason, outcome.code) == (
                "refused",
                "nothing to pay",
                "empty",
            )
            with pytest.raises(Refused):
                await refused.result(timeout=1)

            async def settled() -> bool:
                return (
                    len(seen) >= EVENTS
                    and await caught_up(b, "ledger")
                    and await caught_up(a, "relay:cinema")
                    and await caught_up(b, "relay:payments")
                )

            await wait_until(settled)
        for n in range(STREAMS):
            received = await b.read_stream(f"screening-{n}")
            sent = await a.read_stream(f"screening-{n}")
            # the sender's ids, in its order; Released is relayed but not taken from the topic
            assert [e.id for e in received] == [
                e.id for e in sent if isinstance(e.message, Reserved)
            ]
            assert [e.message.seat for e in received] == [
                seat for screening, seat in seen if screening == f"s{n}"
            ]
        (relay,) = await a.subscriptions.list("relay:cinema")
        assert relay.pending == 0
        # the command was recorded and handled in payments once; its outcome is in cinema's store
        assert [e.id for e in await b.read_stream(ticket.stream)] == [ticket.message_id]
        assert (await b.outcome(ticket.message_id)).status == "succeeded"
        assert (await a.outcome(ticket.message_id)).status == "succeeded"
    assert len(seen) == EVENTS, "an event was handled more than once"
    assert sorted(seen) == sorted((f"s{n % STREAMS}", n) for n in range(EVENTS))
    for n in range(STREAMS):
        seats = [seat for screening, seat in seen if screening == f"s{n}"]
        assert seats == sorted(seats), "order per stream was not kept"


async def test_redelivered_is_recorded_once_and_malformed_is_kept(
    any_broker: BrokerUnderTest, any_store: Callable[[], str]
) -> None:
    seen: list[tuple[str, int]] = []
    receiver = payments(any_store(), any_broker, seen)
    await redelivered_once_and_malformed_kept(receiver, any_broker, seen)
