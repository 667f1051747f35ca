"""Prometheus metrics: one registry per process and the HTTP endpoint that serves it.

Every module asks for its metrics through `counter` / `histogram` / `gauge`, which
return the existing metric when the name is already registered, so running several
services in one process (the laptop mode) or re-creating a server never fails with
"Duplicated timeseries". `start_metrics_server(port)` serves `REGISTRY` on /metrics.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any, TypeVar

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    start_http_server,
)
from prometheus_client import (
    generate_latest as _generate_latest,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)
GCCollector(registry=REGISTRY)

# Latency buckets (seconds) covering fast lookups up to long generation calls.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

_lock = threading.Lock()
_metrics: dict[str, Any] = {}
MetricT = TypeVar("MetricT", Counter, Gauge, Histogram)


def _get_or_create(
    kind: type[MetricT], name: str, doc: str, labels: Sequence[str], **kw
) -> MetricT:
    with _lock:
        existing = _metrics.get(name)
        if existing is not None:
            if not isinstance(existing, kind) or tuple(existing._labelnames) != tuple(labels):
                raise ValueError(
                    f"metric {name!r} already registered as {type(existing).__name__}"
                    f" with labels {existing._labelnames}"
                )
            return existing
        metric = kind(name, doc, labelnames=tuple(labels), registry=REGISTRY, **kw)
        _metrics[name] = metric
        return metric


def counter(name: str, doc: str, labels: Sequence[str] = ()) -> Counter:
    """A counter in REGISTRY (name without the `_total` suffix; prometheus adds it)."""
    return _get_or_create(Counter, name, doc, labels)


def gauge(name: str, doc: str, labels: Sequence[str] = ()) -> Gauge:
    return _get_or_create(Gauge, name, doc, labels)


def histogram(
    name: str, doc: str, labels: Sequence[str] = (), buckets: Sequence[float] = LATENCY_BUCKETS
) -> Histogram:
    return _get_or_create(Histogram, name, doc, labels, buckets=tuple(buckets))


def generate_latest() -> bytes:
    """The text exposition of REGISTRY (what /metrics serves)."""
    return _generate_latest(REGISTRY)


def start_metrics_server(port: int, addr: str = "0.0.0.0") -> int:
    """Serve REGISTRY on http://addr:port/metrics in a daemon thread; returns the port.

    Port 0 binds a free port (handy in tests); the bound port is returned.
    """
    server, _thread = start_http_server(port, addr=addr, registry=REGISTRY)
    return int(server.server_port)
