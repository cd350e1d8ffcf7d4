"""Operating an App: metrics, tracing, health probes, alert rules and sinks."""

from tidings.ops.instrument import Instrumentation, instrument

__all__ = ["Instrumentation", "instrument"]
