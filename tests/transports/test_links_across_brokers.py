"""A service's link to each broker (RabbitMQ, NATS JetStream, Kafka on tansu), SQLite stores: a
command sent elsewhere is not unhandled, the relay shows its lag, a long stream keeps its order,
one process of a service receives at a time, and the broker's own client and the CloudEvents
SDK read tidings' events and write one that reaches a subscriber."""

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


async def test_plain_clients_and_the_cloudevents_sdk_read_and_write_its_events(
    tmp_path: Path, any_broker: BrokerUnderTest
) -> None:
    from cloudevents.core.v1.event import CloudEvent

    seen: list[tuple[str, int]] = []
    a = cinema(_store(tmp_path, "cinema"), any_broker)
    b = payments(_store(tmp_path, "payments"), any_broker, seen)
    async with a, b:
        await b.links[0].open()
        async with any_broker.plain_consumer("cinema.seats") as receive, running(a, b):
            event_id = await a.publish(
                Reserved("s1", 3),
                stream="screening-1",
                headers={"traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01"},
            )
            # The broker's own client reads tidings' event; the SDK's binding parses it.
            message = await receive()
            parsed = any_broker.parse_cloud_event(message)
            assert parsed.get_id() == event_id
            assert parsed.get_type() == "xb.Reserved"
            assert parsed.get_source() == "cinema"
            assert parsed.get_subject() == "screening-1"
            assert parsed.get_data() == {"screening": "s1", "seat": 3}
            assert parsed.get_extension("correlationid") == event_id
            assert parsed.get_extension("traceparent").startswith("00-aaaa")
            if any_broker.kind == "nats":
                assert message.headers["Nats-Msg-Id"] == event_id  # JetStream dedups by it
            if any_broker.kind == "kafka":
                assert message.key == b"screening-1"  # a stream stays on one partition
            # A CloudEvent made by the SDK and sent by the broker's own client reaches a
            # subscriber.
            made = CloudEvent(
                attributes={
                    "id": "sdk-1",
                    "type": "xb.Reserved",
                    "source": "/elsewhere",
                    "subject": "screening-7",
                },
                data={"screening": "s7", "seat": 11},
            )
            await any_broker.publish_cloud_event("cinema.seats", "screening-7", made)

            async def sdk_event_seen() -> bool:
                return ("s7", 11) in seen

            await wait_until(sdk_event_seen)
        (recorded,) = await b.read_stream("screening-7")
    assert recorded.id == "sdk-1" and recorded.message == Reserved("s7", 11)
