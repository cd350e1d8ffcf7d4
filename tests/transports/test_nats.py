"""A ``nats://`` URL opens the NATS JetStream transport, its namespace made a stream name (what
it does on the wire: test_services_across_brokers.py and test_links_across_brokers.py)."""

from __future__ import annotations

import pytest

from tidings.transports import open_broker
from tidings.transports.nats import NATS


def test_a_nats_url_opens_the_jetstream_transport() -> None:
    broker = open_broker("nats://127.0.0.1:4222", namespace="a.b", ack_wait=5.0)
    assert isinstance(broker, NATS)
    assert (broker.stream, broker.ack_wait) == ("a_b", 5.0)
    with pytest.raises(Exception, match="no transport"):
        open_broker("mqtt://127.0.0.1:1883")
