"""The inbox on every broker (RabbitMQ, NATS JetStream, Kafka on tansu), with SQLite stores: a
message delivered again is recorded and handled once, and a malformed one is kept."""

from __future__ import annotations

from pathlib import Path

from _brokers import BrokerUnderTest, payments, redelivered_once_and_malformed_kept


async def test_redelivered_is_recorded_once_and_malformed_is_kept(
    tmp_path: Path, any_broker: BrokerUnderTest
) -> None:
    seen: list[tuple[str, int]] = []
    receiver = payments(f"sqlite:///{tmp_path / 'payments.db'}", any_broker, seen)
    await redelivered_once_and_malformed_kept(receiver, any_broker, seen)
