"""OpenTelemetry tracing of one App: spans for invoke, send, publish and every handling, one trace.

The W3C trace context (``traceparent``, ``tracestate``) of the span current when a message is
made travels in the message's headers, so the handling of that message — in this process or a
worker in another — continues the same trace, and what its handler causes continues it further.
Only the OpenTelemetry *API* is needed; without an SDK's tracer provider the spans cost little
and record nothing. Correlation and causation ids are kept as they are, beside the trace.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

try:
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError(
        "tidings tracing needs opentelemetry-api: pip install 'tidings[otel]'"
    ) from exc

from tidings.messages import Envelope

#: The headers the trace context travels in (W3C Trace Context).
TRACE_HEADERS = ("traceparent", "tracestate")


class Tracing:
    """Makes the spans of one App with ``tracer_provider`` (default: the global one)."""

    def __init__(self, app: str, tracer_provider: trace.TracerProvider | None = None) -> None:
        self.app = app
        self.tracer = trace.get_tracer("tidings", tracer_provider=tracer_provider)
        self.propagator = TraceContextTextMapPropagator()

    def stamp(self, headers: dict[str, str] | None) -> dict[str, str] | None:
        """``headers`` with the current span's trace context (unchanged when there is none)."""
        if not trace.get_current_span().get_span_context().is_valid:
            return headers
        carrier = dict(headers) if headers else {}
        self.propagator.inject(carrier)
        return carrier

    @contextmanager
    def recording(self, verb: str, message: Any) -> Iterator[trace.Span]:
        """The span of an App's ``send`` or ``publish`` (``verb``) of ``message``."""
        with self.tracer.start_as_current_span(
            f"{verb} {message.__type_name__}",
            kind=trace.SpanKind.PRODUCER,
            attributes={
                "messaging.system": "tidings",
                "messaging.operation.name": verb,
                "tidings.app": self.app,
                "tidings.message.type": message.__type_name__,
            },
        ) as span:
            yield span

    @contextmanager
    def invoking(self, subscription: str, command: Any) -> Iterator[trace.Span]:
        """The span of an invoked command's handling."""
        with self.tracer.start_as_current_span(
            f"invoke {command.__type_name__}",
            kind=trace.SpanKind.INTERNAL,
            attributes={
                "messaging.system": "tidings",
                "messaging.operation.name": "invoke",
                "tidings.app": self.app,
                "tidings.handler": subscription,
                "tidings.message.type": command.__type_name__,
            },
        ) as span:
            yield span

    @contextmanager
    def handling(self, subscription: str, env: Envelope, attempts: int) -> Iterator[trace.Span]:
        """The span of a worker's handling of ``env``, a child of the span that made it."""
        parent = self.propagator.extract(_headers(env)) if env.headers_json else None
        with self.tracer.start_as_current_span(
            f"handle {env.type}",
            context=parent,
            kind=trace.SpanKind.CONSUMER,
            attributes={
                "messaging.system": "tidings",
                "messaging.operation.name": "process",
                "messaging.message.id": env.id,
                "messaging.destination.name": env.stream,
                "messaging.consumer.group.name": subscription,
                "tidings.app": self.app,
                "tidings.message.type": env.type,
                "tidings.message.kind": env.kind,
                "tidings.correlation_id": env.correlation_id or env.id,
                "tidings.attempt": attempts + 1,
            },
        ) as span:
            yield span

    @staticmethod
    def finished(span: trace.Span, outcome: str, attempts: int | None = None) -> None:
        """Say how a span's handling ended: its outcome, and its last attempt."""
        span.set_attribute("tidings.outcome", outcome)
        if attempts is not None:
            span.set_attribute("tidings.attempts", attempts)
        if outcome in ("failed", "retrying", "parked"):
            span.set_status(trace.StatusCode.ERROR, outcome)


def _headers(env: Envelope) -> dict[str, str]:
    """The headers of ``env``; none when they cannot be read (the handling reports that)."""
    try:
        return env.headers
    except Exception:
        return {}
