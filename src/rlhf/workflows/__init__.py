"""Pipeline workflows: what each stage of a pipeline spec does with the engine.

Services call these functions from their event handlers and RPCs; `rlhf demo` calls
the same services in one process. Nothing here knows about gRPC or Kafka.
"""
