"""gRPC scaffolding shared by every service: the asyncio server, its interceptors,
validation errors and client channels. See docs/grpc.md."""

from rlhf.runtime.grpc.auth import TokenFile
from rlhf.runtime.grpc.client import make_channel
from rlhf.runtime.grpc.errors import (
    AlreadyExists,
    DeadlineExceeded,
    FailedPrecondition,
    NotFound,
    RequestInvalid,
    ResourceExhausted,
    ServiceError,
    Unavailable,
    check,
    check_in,
    check_match,
    check_range,
    require,
)
from rlhf.runtime.grpc.health import HealthServicer
from rlhf.runtime.grpc.interceptors import check_deadline, remaining_time
from rlhf.runtime.grpc.server import GrpcServer, run_server, server_credentials

__all__ = [
    "AlreadyExists",
    "DeadlineExceeded",
    "FailedPrecondition",
    "GrpcServer",
    "HealthServicer",
    "NotFound",
    "RequestInvalid",
    "ResourceExhausted",
    "ServiceError",
    "TokenFile",
    "Unavailable",
    "check",
    "check_deadline",
    "check_in",
    "check_match",
    "check_range",
    "make_channel",
    "remaining_time",
    "require",
    "run_server",
    "server_credentials",
]
