"""One trace from an invoke through every handler and message it causes, across a worker
process: the W3C trace context travels in the messages' headers."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _traced_app import PlaceOrder, make_app
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tidings.ops import instrument

WORKER = Path(__file__).with_name("_traced_app.py")


def read_spans(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


async def test_one_trace_from_invoke_through_a_worker_process(tmp_path: Path) -> None:
    db, spans_file = tmp_path / "shop.db", tmp_path / "spans.jsonl"
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = make_app(f"sqlite:///{db}")
    instrument(app, metrics=False, tracing=True, tracer_provider=provider)
    async with app:
        await app.invoke(PlaceOrder("o1"))
        placed = (await app.read_stream("order-o1"))[0]
    (invoke,) = exporter.get_finished_spans()
    assert invoke.name == "invoke PlaceOrder"
    assert invoke.context is not None
    trace_id = f"{invoke.context.trace_id:032x}"
    assert placed.headers["traceparent"].split("-")[1] == trace_id

    log = (tmp_path / "worker.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(WORKER), str(db), str(spans_file), stdout=log, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 30
        while not any(s["name"] == "handle CardCharged" for s in read_spans(spans_file)):
            assert proc.returncode is None, (tmp_path / "worker.log").read_text()
            assert time.monotonic() < deadline, "the worker exported no span of the last handler"
            await asyncio.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 30)
        log.close()

    spans = {s["name"]: s for s in read_spans(spans_file)}
    assert set(spans) == {"handle OrderPlaced", "handle ChargeCard", "handle CardCharged"}
    assert {s["trace_id"] for s in spans.values()} == {trace_id}
    placed_span, charge, charged = (
        spans["handle OrderPlaced"],
        spans["handle ChargeCard"],
        spans["handle CardCharged"],
    )
    # each handling is the child of the span that made its message
    assert placed_span["parent_id"] == f"{invoke.context.span_id:016x}"
    assert charge["parent_id"] == placed_span["span_id"]
    assert charged["parent_id"] == charge["span_id"]
    attributes = placed_span["attributes"]
    assert attributes["messaging.message.id"] == placed.id
    assert attributes["messaging.destination.name"] == "order-o1"
    assert attributes["messaging.consumer.group.name"] == "billing"
    assert attributes["tidings.message.type"] == "OrderPlaced"
    assert attributes["tidings.attempt"] == 1
    assert attributes["tidings.outcome"] == "succeeded"
    # the charge failed once and succeeded on its immediate retry
    assert charge["attributes"]["tidings.attempts"] == 2
    assert charge["attributes"]["tidings.outcome"] == "succeeded"
    assert charge["attributes"]["messaging.consumer.group.name"] == "cmd:ChargeCard"
    assert charged["attributes"]["tidings.correlation_id"] == placed.correlation_id


async def test_send_and_publish_start_traces_and_nothing_is_stamped_without_a_span(
    tmp_path: Path,
) -> None:
    from _traced_app import ChargeCard, OrderPlaced

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = make_app(f"sqlite:///{tmp_path / 'shop.db'}")
    async with app:
        await app.publish(OrderPlaced("o0"), stream="order-o0")  # not instrumented: no headers
        instrument(app, tracing=True, tracer_provider=provider)
        ticket = await app.send(ChargeCard("o1"), headers={"tenant": "t1"})
        await app.publish(OrderPlaced("o2"), stream="order-o2")
        plain, placed = (
            (await app.read_stream("order-o0"))[0],
            (await app.read_stream("order-o2"))[0],
        )
        sent = (await app.read_stream(ticket.stream))[0]
    assert plain.headers == {}
    send_span, publish_span = exporter.get_finished_spans()
    assert send_span.name == "send ChargeCard" and publish_span.name == "publish OrderPlaced"
    assert send_span.context is not None and publish_span.context is not None
    assert sent.headers["tenant"] == "t1"
    assert sent.headers["traceparent"].startswith(
        f"00-{send_span.context.trace_id:032x}-{send_span.context.span_id:016x}-"
    )
    assert placed.headers["traceparent"].split("-")[2] == f"{publish_span.context.span_id:016x}"
    # a no-op tracer provider (the API without an SDK) stamps nothing
    quiet = make_app("memory://")
    from opentelemetry.trace import NoOpTracerProvider

    instrument(quiet, metrics=False, tracing=True, tracer_provider=NoOpTracerProvider())
    async with quiet:
        await quiet.publish(OrderPlaced("o3"), stream="order-o3")
        assert (await quiet.read_stream("order-o3"))[0].headers == {}
