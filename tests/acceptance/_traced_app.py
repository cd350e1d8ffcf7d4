"""The app of the tracing test: an order is placed (invoked), billed by a subscriber that sends a
command, whose handler publishes an event an e-mail subscriber takes. Run as a worker process
(``python _traced_app.py DB SPANS``) it exports its spans as JSON lines to SPANS."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import Sequence

from tidings import App, Command, Context, Event
from tidings.delivery.policy import RetryPolicy


class PlaceOrder(Command):
    order: str


class OrderPlaced(Event):
    order: str


class ChargeCard(Command):
    order: str


class CardCharged(Event):
    order: str


def make_app(store: str) -> App:
    app = App("shop", store=store)

    @app.command
    def place(cmd: PlaceOrder, ctx: Context) -> None:
        ctx.publish(OrderPlaced(cmd.order), stream=f"order-{cmd.order}")

    @app.subscriber("billing")
    def bill(event: OrderPlaced, ctx: Context) -> None:
        ctx.send(ChargeCard(event.order))

    @app.command(policy=RetryPolicy(max_attempts=3, immediate=2))
    def charge(cmd: ChargeCard, ctx: Context) -> None:
        if ctx.attempt == 1:
            raise RuntimeError("card network timeout")
        ctx.publish(CardCharged(cmd.order), stream=f"order-{cmd.order}")

    @app.subscriber("email")
    def email(event: CardCharged, ctx: Context) -> None:
        pass

    return app


def main(db: str, spans: str) -> None:
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import (
        SimpleSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

    from tidings.ops import instrument

    class FileExporter(SpanExporter):
        def export(self, batch: Sequence[ReadableSpan]) -> SpanExportResult:
            with open(spans, "a") as out:
                for span in batch:
                    context, parent = span.get_span_context(), span.parent
                    assert context is not None
                    row = {
                        "name": span.name,
                        "trace_id": f"{context.trace_id:032x}",
                        "span_id": f"{context.span_id:016x}",
                        "parent_id": None if parent is None else f"{parent.span_id:016x}",
                        "attributes": dict(span.attributes or {}),
                    }
                    out.write(json.dumps(row) + "\n")
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(FileExporter()))
    app = make_app(f"sqlite:///{db}")
    instrument(app, metrics=False, tracing=True, tracer_provider=provider)

    async def run() -> None:
        async with app:
            worker = app.worker(idle_poll=0.05)
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, worker.stop)
            await worker.run()

    asyncio.run(run())
    provider.shutdown()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
