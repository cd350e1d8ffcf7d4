"""A service's link to each broker (RabbitMQ, NATS JetStream, Kafka on tansu), SQLite stores: a
command sent elsewhere is not unhandled, the relay shows its lag, a long stream keeps its order,
one process of a service receives at a time."""

from __future__ import annotations

from pathlib import Path

from _brokers import BrokerUnderTest, Pay, Reserved, cinema, payments, running, wait_until


def _store(tmp_path: Path, name: str) -> str:
    return f"sqlite:///{tmp_path / f'{name}.db'}"


async def test_a_command_handled_elsewhere_is_not_unhandled(
    tmp_path: Path, any_broker: BrokerUnderTest
) -> None:
    a = cinema(_store(tmp_path, "cinema"), any_broker)
    async with a:
        await a.send(Pay("o1", 5))
        assert await a.unhandled() == []


async def test_the_relay_shows_its_lag_as_a_subscription(
    tmp_path: Path, any_broker: BrokerUnderTest
) -> None:
    a = cinema(_store(tmp_path, "cinema"), any_broker)
    b = payments(_store(tmp_path, "payments"), any_broker, [])
    async with a, b:
        await b.links[0].open()
        await a.links[0].relay.setup()
        for seat in range(3):
            await a.publish(Reserved("s1", seat), stream="screening-1")
        (before,) = await a.subscriptions.list("relay:cinema")
        assert (before.state, before.partitions[0].pending) == ("stopped", 3)
        async with running(a, b):

            async def relayed() -> bool:
                (state,) = await a.subscriptions.list("relay:cinema")
                return state.partitions[0].pending == 0 and state.state == "running"

            await wait_until(relayed)


async def test_a_long_stream_keeps_its_order(tmp_path: Path, any_broker: BrokerUnderTest) -> None:
    # One stream of 500: the relay publishes them in one go, without waiting for each
    # confirmation; they must arrive, and be recorded, in the order of the sender's log.
    a = cinema(_store(tmp_path, "cinema"), any_broker)
    b = payments(_store(tmp_path, "payments"), any_broker, [])
    async with a, b:
        await a.append("screening-long", [Reserved("long", n) for n in range(500)])
        await b.links[0].open()

        async def all_recorded() -> bool:
            return await b.store.stream_version("screening-long") >= 500

        async with running(a, b):
            await wait_until(all_recorded, 30)
        got = [e.message.seat for e in await b.read_stream("screening-long")]
    assert got == list(range(500))


async def test_one_process_of_a_service_receives_at_a_time(
    tmp_path: Path, any_broker: BrokerUnderTest
) -> None:
    seen: list[tuple[str, int]] = []
    a = cinema(_store(tmp_path, "cinema"), any_broker)
    # Two processes of the payments service on one store: one holds the inbox's lease.
    b1 = payments(_store(tmp_path, "payments"), any_broker, seen)
    b2 = payments(_store(tmp_path, "payments"), any_broker, seen)
    async with a, b1, b2:
        await b1.links[0].open()
        async with running(a, b1, b2):
            for seat in range(60):
                await a.publish(Reserved(f"s{seat % 3}", seat), stream=f"screening-{seat % 3}")

            async def all_seen() -> bool:
                return len(seen) >= 60

            await wait_until(all_seen)
        inboxes = [b1.links[0].inbox.received, b2.links[0].inbox.received]
        (state,) = await b1.subscriptions.list("inbox:payments")
    assert sorted(inboxes)[0] == 0 and sorted(inboxes)[1] >= 60, inboxes
    assert state.state != "orphaned"
    for screening in range(3):
        got = [e.id for e in await b1.read_stream(f"screening-{screening}")]
        assert got == [e.id for e in await a.read_stream(f"screening-{screening}")]
