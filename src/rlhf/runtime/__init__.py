"""Shared runtime used by every service: settings, logging, telemetry, event bus,
gRPC scaffolding and the artifact store. Written once, imported everywhere."""
