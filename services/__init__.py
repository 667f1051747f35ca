"""The platform's gRPC services, one package each (installed as rlhf.services.<name>)."""
