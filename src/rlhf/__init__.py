"""Kubernetes-native RLHF platform.

Import layout (one root, dependencies point one way):
  rlhf.services.*  -> gRPC services (one package each, under services/)
  rlhf.engine      -> the ML library: data, models, algorithms, evaluation
  rlhf.runtime     -> shared runtime: settings, event bus, telemetry, gRPC scaffolding
  rlhf.v1          -> generated protobuf/gRPC code (python -m rlhf.protogen)
"""

__version__ = "0.1.0"
