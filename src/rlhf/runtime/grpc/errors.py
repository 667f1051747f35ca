"""Exceptions a handler raises instead of calling `context.abort` itself, and the
validation helpers that raise them.

The server's error interceptor turns each `ServiceError` into its gRPC status, so a
handler reads like ordinary Python:

    require(request, "name", "uri")
    check_match(request.name, "name", r"[a-z0-9][a-z0-9-]{0,62}")
    if request.name not in sources:
        raise NotFound(f"source {request.name!r} is not registered")

Anything else a handler raises becomes INTERNAL with a generic message (the traceback
goes to the server log, never to the client).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import grpc
from google.protobuf.message import Message


class ServiceError(Exception):
    """An error with a gRPC status code; the message is sent to the client as is.

    `retry_after_s` is the server's retry hint: sent as the `grpc-retry-pushback-ms`
    trailer, which gRPC clients with a retry policy (`make_channel`) wait out before
    retrying."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN
    retry_after_s: float | None = None

    def __init__(
        self,
        message: str,
        code: grpc.StatusCode | None = None,
        *,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        if retry_after_s is not None:
            self.retry_after_s = retry_after_s

    @property
    def details(self) -> str:
        return str(self)


class RequestInvalid(ServiceError):
    """A request field breaks a validation rule -> INVALID_ARGUMENT "field: message"."""

    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class NotFound(ServiceError):
    """The named thing (dataset, run, model) does not exist -> NOT_FOUND."""

    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(ServiceError):
    """Creating something whose name is taken with different content -> ALREADY_EXISTS."""

    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(ServiceError):
    """The request is valid but the system is not in a state to run it."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class Unavailable(ServiceError):
    """A dependency (model server, broker) is down; the client may retry -> UNAVAILABLE."""

    code = grpc.StatusCode.UNAVAILABLE


class ResourceExhausted(ServiceError):
    """A queue or quota is full; the client should back off -> RESOURCE_EXHAUSTED, by
    default with a 30 s retry hint."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    retry_after_s = 30.0


class DeadlineExceeded(ServiceError):
    """The caller's deadline passed while the handler was working."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


_MISSING = object()


def _field_value(request: Message, path: str) -> Any:
    """Follow a dotted field path ("config.lr"); `_MISSING` when a parent message is unset."""
    value: Any = request
    for part in path.split("."):
        descriptor = getattr(value, "DESCRIPTOR", None)
        if descriptor is None or part not in descriptor.fields_by_name:
            raise ValueError(f"{type(request).__name__} has no field {path!r}")
        field = descriptor.fields_by_name[part]
        is_message = field.message_type is not None and not _is_repeated(field)
        if is_message and not value.HasField(part):
            return _MISSING
        value = getattr(value, part)
    return value


def _is_repeated(field: Any) -> bool:
    # protobuf >= 5 exposes `is_repeated`; older releases only `label`.
    if hasattr(field, "is_repeated"):
        return bool(field.is_repeated)
    return field.label == field.LABEL_REPEATED


def require(request: Message, *fields: str) -> None:
    """Fail with INVALID_ARGUMENT for the first field that is unset, empty or zero.

    Proto3 scalars cannot tell "unset" from the default, so an empty string, 0, false,
    an empty list/map or an unset sub-message all count as missing.
    """
    for name in fields:
        value = _field_value(request, name)
        if value is _MISSING:
            raise RequestInvalid(name, "is required")
        if isinstance(value, Message):
            continue
        if not value:  # "", b"", 0, 0.0, False, [] and {} all read as unset in proto3
            raise RequestInvalid(name, "is required")


def check(condition: object, field: str, message: str) -> None:
    """Fail with INVALID_ARGUMENT "field: message" unless `condition` holds."""
    if not condition:
        raise RequestInvalid(field, message)


def check_in(value: object, field: str, choices: Iterable[object]) -> None:
    """Fail unless `value` is one of `choices`; the message lists them."""
    allowed = list(choices)
    if value not in allowed:
        listed = ", ".join(repr(c) for c in allowed)
        raise RequestInvalid(field, f"must be one of {listed} (got {value!r})")


def check_match(value: str, field: str, pattern: str) -> None:
    """Fail unless the whole of `value` matches the regular expression `pattern`."""
    if re.fullmatch(pattern, value) is None:
        raise RequestInvalid(field, f"must match {pattern} (got {value!r})")


def check_range(
    value: float,
    field: str,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
) -> None:
    """Fail unless `value` lies within the given bounds."""
    bounds = [
        (ge, lambda b: value >= b, ">="),
        (gt, lambda b: value > b, ">"),
        (le, lambda b: value <= b, "<="),
        (lt, lambda b: value < b, "<"),
    ]
    for bound, ok, symbol in bounds:
        if bound is not None and not ok(bound):
            raise RequestInvalid(field, f"must be {symbol} {bound} (got {value!r})")
