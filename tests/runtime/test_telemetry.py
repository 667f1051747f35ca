"""The OTLP trace exporter is an extra: without it `otlp` says which one to install."""

from __future__ import annotations

import sys

import pytest

from rlhf.runtime import telemetry


def test_otlp_without_the_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(telemetry, "_configured_provider", None)
    # None in sys.modules makes the import raise ModuleNotFoundError.
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.grpc.trace_exporter", None)
    with pytest.raises(RuntimeError, match=r"rlhf-platform\[otlp\]"):
        telemetry.configure_tracing("rlhf-tests", exporter="otlp")


def test_otlp_exporter_is_installed_with_the_extra() -> None:
    """setup.sh installs `[all]`, which has `otlp`: the exporter imports."""
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    assert OTLPSpanExporter
