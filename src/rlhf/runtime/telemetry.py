"""OpenTelemetry tracing, set up once per process, and W3C trace-context helpers.

gRPC interceptors and the event bus both use `inject_context` / `extract_context`, so
one trace follows a request from a gRPC call through Kafka into the consumer.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

_configured_provider: TracerProvider | None = None
memory_exporter: InMemorySpanExporter | None = None


def configure_tracing(service_name: str, exporter: str = "none") -> TracerProvider:
    """Install the global tracer provider (idempotent).

    exporter: "none" (spans are created, so context propagates, but not exported),
    "console", "memory" (kept in `memory_exporter`, for tests) or "otlp".
    """
    global _configured_provider, memory_exporter
    if _configured_provider is not None:
        return _configured_provider
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    if exporter == "console":
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    elif exporter == "memory":
        memory_exporter = InMemorySpanExporter()
        provider.add_span_processor(SimpleSpanProcessor(memory_exporter))
    elif exporter == "otlp":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        except ModuleNotFoundError as exc:  # an optional dependency: say which extra has it
            raise RuntimeError(
                "telemetry.traces_exporter 'otlp' needs the OTLP exporter: "
                "pip install 'rlhf-platform[otlp]' (opentelemetry-exporter-otlp-proto-grpc)"
            ) from exc

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    _configured_provider = provider
    return provider


def tracer(name: str) -> trace.Tracer:
    return trace.get_tracer(name)


def inject_context(carrier: MutableMapping[str, str]) -> MutableMapping[str, str]:
    """Write the current trace context (traceparent, tracestate) into a carrier."""
    propagate.inject(carrier)
    return carrier


def extract_context(carrier: Mapping[str, str]) -> otel_context.Context:
    """Read a trace context from a carrier (message headers, gRPC metadata)."""
    return propagate.extract(dict(carrier))
