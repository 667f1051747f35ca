"""Fuzzed requests for every RPC of the five services (used by bench/chaos.py and
tests/chaos).

Two kinds of input per method:

* **property-based** (Hypothesis): request messages built from the method's protobuf
  descriptor, every field optional, with values drawn from the field's type (extreme
  integers, NaN/inf floats, unknown enum numbers, long and odd Unicode strings, nested
  messages, long lists, maps) mixed with pools of *meaningful* values (real model
  versions, run ids, pipeline names, paths outside the roots, broken JSON), so the
  fuzzer reaches past the first `require()`;
* **raw garbage bytes** sent as the request body (random bytes, truncated and
  bit-flipped encodings of a valid request).

The property: no answer is INTERNAL or UNKNOWN (an unhandled exception in a handler),
and no call hangs past its deadline. Calls that start real work are kept away from it:
their pools never hold a real dataset, so they stop at validation or NOT_FOUND.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hyp_seed
from hypothesis import strategies as st

from rlhf.v1 import (  # noqa: F401 - registers the services' descriptors
    adversary_pb2,
    dataprep_pb2,
    inference_pb2,
    reward_pb2,
    trainer_pb2,
)

#: gRPC service (full name) of each service of the dev stack.
SERVICES = {
    "dataprep": "rlhf.v1.DataPrepService",
    "reward": "rlhf.v1.RewardModelService",
    "adversary": "rlhf.v1.AdversaryService",
    "trainer": "rlhf.v1.TrainerService",
    "inference": "rlhf.v1.InferenceService",
}
#: Answers that mean a handler failed on its input rather than refusing it.
BAD_CODES = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
#: Methods that start real work when their request is valid: never given real datasets.
STARTS_WORK = {"PrepareDataset", "StartRun", "Train", "Attack", "RedTeam"}

_INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}

ODD_STRINGS = [
    "",
    " ",
    "\t\n",
    "\x00",
    "a" * 70,
    "x" * 5000,
    "../../../../etc/passwd",
    "/etc/passwd",
    "file:///etc/passwd",
    "file://",
    "http://127.0.0.1:1/x",
    "~/.ssh/id_rsa",
    "%s%n%x",
    "{oops",
    "[1, 2]",
    "null",
    '{"total_steps": -1}',
    '{"total_steps": 1e309}',
    '{"lr": NaN}',
    '{"a": {"b": {"c": [[[[[]]]]]}}}',
    "NaN",
    "-1",
    "质量很好，非常满意",
    "🙂" * 30,
    "\u202eevil",
    "A\u0301" * 10,
    "Bad Name",
    "ghost-v1",
    "ghost",
    "policy",
    "classifier",
]


@dataclass
class Pools:
    """Meaningful values by field name, read from the running stack."""

    versions: list[str] = field(default_factory=list)
    run_ids: list[str] = field(default_factory=list)
    pipelines: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)


@dataclass
class FuzzReport:
    pools: Pools = field(default_factory=Pools)
    requests: int = 0
    by_method: Counter = field(default_factory=Counter)
    codes: Counter = field(default_factory=Counter)
    # (method, code, details, request repr) of each INTERNAL / UNKNOWN answer
    internal: list[tuple[str, str, str, str]] = field(default_factory=list)
    # (method, request repr) of calls that ran past their deadline
    hangs: list[tuple[str, str]] = field(default_factory=list)
    # feedback ids RecordFeedback acknowledged (durable=True) during the fuzz
    acknowledged_feedback: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "fuzzed_requests": self.requests,
            "internal_errors": len(self.internal),
            "fuzz_hangs": len(self.hangs),
            "fuzz_codes": dict(sorted(self.codes.items())),
            "fuzz_feedback_acknowledged": len(self.acknowledged_feedback),
            "internal_examples": [list(x) for x in self.internal[:10]],
            "hang_examples": [list(x) for x in self.hangs[:10]],
        }


def methods() -> list[tuple[str, Any]]:
    """(service, method descriptor) for every RPC of the five services."""
    pool = descriptor_pool.Default()
    out = []
    for service, full_name in SERVICES.items():
        for method in pool.FindServiceByName(full_name).methods:
            out.append((service, method))
    return out


# -- strategies ----------------------------------------------------------------------
def _string_strategy(name: str, pools: Pools, method: str) -> st.SearchStrategy[str]:
    meaningful: list[str] = []
    if "version" in name or name in ("model",):
        meaningful += pools.versions
    if "run_id" in name:
        meaningful += pools.run_ids
    if "pipeline" in name:
        meaningful += pools.pipelines
    if name in ("name", "source", "dataset"):
        meaningful += pools.names
    if name == "uri" and method not in STARTS_WORK:
        meaningful += ["reviews", "uploads/reviews.jsonl"]
    options = [st.text(max_size=40), st.sampled_from(ODD_STRINGS)]
    if meaningful:
        options.append(st.sampled_from(meaningful))
    return st.one_of(*options)


def _scalar_strategy(f: FieldDescriptor, pools: Pools, method: str) -> st.SearchStrategy:
    t = f.type
    if t in _INT_RANGES:
        lo, hi = _INT_RANGES[t]
        return st.one_of(
            st.integers(-3, 300).filter(lambda v: lo <= v <= hi),
            st.sampled_from([lo, hi, 0, 1, 5, 8, 100_000, 10**6]).filter(lambda v: lo <= v <= hi),
            st.integers(lo, hi),
        )
    if t in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        width = 32 if t == FieldDescriptor.TYPE_FLOAT else 64
        return st.one_of(
            st.floats(width=width),
            st.sampled_from([0.0, 0.5, 1.0, -1.0, 1.5, 1e9]),
        )
    if t == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if t == FieldDescriptor.TYPE_ENUM:
        known = [v.number for v in f.enum_type.values]
        return st.one_of(st.sampled_from(known), st.integers(-5, 50))
    if t == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=64)
    if t == FieldDescriptor.TYPE_STRING:
        return _string_strategy(f.name, pools, method)
    raise TypeError(f"unhandled field type {t}")


def _is_repeated(f: FieldDescriptor) -> bool:
    if hasattr(f, "is_repeated"):
        return bool(f.is_repeated)
    return f.label == FieldDescriptor.LABEL_REPEATED


def message_strategy(
    desc: Descriptor, pools: Pools, method: str = "", depth: int = 0
) -> st.SearchStrategy:
    """Messages of type `desc` with any subset of fields set to fuzzed values."""
    cls = message_factory.GetMessageClass(desc)
    parts: dict[str, st.SearchStrategy] = {}
    for f in desc.fields:
        if f.message_type is not None and f.message_type.GetOptions().map_entry:
            key_f, value_f = (
                f.message_type.fields_by_name["key"],
                f.message_type.fields_by_name["value"],
            )
            if value_f.message_type is not None:
                if depth >= 2:
                    continue
                value = message_strategy(value_f.message_type, pools, method, depth + 1)
            else:
                value = _scalar_strategy(value_f, pools, method)
            parts[f.name] = st.dictionaries(
                _scalar_strategy(key_f, pools, method), value, max_size=4
            )
            continue
        if f.message_type is not None:
            if f.message_type.full_name.startswith("google.protobuf.") or depth >= 2:
                continue
            element = message_strategy(f.message_type, pools, method, depth + 1)
        else:
            element = _scalar_strategy(f, pools, method)
        if _is_repeated(f):
            many = st.lists(element, max_size=6)
            if f.message_type is None:  # sometimes far past any sane limit
                many = st.one_of(many, st.lists(element, min_size=200, max_size=300))
            parts[f.name] = many
        else:
            parts[f.name] = element

    def build(values: dict[str, Any]) -> Any:
        msg = cls()
        for name, value in values.items():
            f = desc.fields_by_name[name]
            target = getattr(msg, name)
            if f.message_type is not None and f.message_type.GetOptions().map_entry:
                for k, v in value.items():
                    if hasattr(v, "SerializeToString"):
                        target[k].CopyFrom(v)
                    else:
                        target[k] = v
            elif _is_repeated(f):
                if f.message_type is not None:
                    for v in value:
                        target.add().CopyFrom(v)
                else:
                    target.extend(value)
            elif f.message_type is not None:
                target.CopyFrom(value)
            else:
                setattr(msg, name, value)
        return msg

    return st.fixed_dictionaries({}, optional=parts).map(build)


def garbage_strategy(desc: Descriptor, pools: Pools, method: str) -> st.SearchStrategy[bytes]:
    """Raw bodies: random bytes, and truncated or bit-flipped valid encodings."""
    valid = message_strategy(desc, pools, method).map(lambda m: m.SerializeToString())

    def damage(args: tuple[bytes, int, int]) -> bytes:
        body, cut, flip = args
        if not body:
            return b"\xff"
        data = bytearray(body[: max(1, cut % (len(body) + 1))])
        data[flip % len(data)] ^= 0xFF
        return bytes(data)

    return st.one_of(
        st.binary(min_size=1, max_size=512),
        st.tuples(valid, st.integers(0, 10**6), st.integers(0, 10**6)).map(damage),
        st.sampled_from([b"\x0a\xff\xff\xff\xff\x0f", b"\x08" * 11, b"\xff" * 64]),
    )


# -- calling ------------------------------------------------------------------------
def call_once(
    channel: grpc.Channel,
    method: Any,
    body: Any,
    timeout: float,
) -> tuple[grpc.StatusCode, str, Any]:
    """Send one request (a message or raw bytes); returns (code, details, response)."""
    path = f"/{method.containing_service.full_name}/{method.name}"
    serialize = (lambda b: b) if isinstance(body, bytes) else (lambda m: m.SerializeToString())
    output = message_factory.GetMessageClass(method.output_type)
    try:
        if method.server_streaming:
            stream = channel.unary_stream(
                path, request_serializer=serialize, response_deserializer=output.FromString
            )(body, timeout=timeout)
            first = None
            for i, item in enumerate(stream):  # a few messages prove the stream works
                first = first or item
                if i >= 2:
                    stream.cancel()
                    break
            return grpc.StatusCode.OK, "", first
        reply = channel.unary_unary(
            path, request_serializer=serialize, response_deserializer=output.FromString
        )(body, timeout=timeout)
        return grpc.StatusCode.OK, "", reply
    except grpc.RpcError as exc:
        code = exc.code()
        if code == grpc.StatusCode.CANCELLED and method.server_streaming:
            return grpc.StatusCode.OK, "", None  # our own cancel after a few messages
        return code, exc.details() or "", None


def fuzz(
    addresses: dict[str, str],
    total: int,
    pools: Pools,
    *,
    seed: int = 0,
    timeout: float = 30.0,
    raw_share: float = 0.3,
    strict: bool = False,
    only: Iterable[str] | None = None,
    log: Callable[[str], None] = lambda m: None,
) -> FuzzReport:
    """About `total` fuzzed requests spread over every method of the five services.

    `strict` (tests): raise AssertionError at the first INTERNAL/UNKNOWN answer, with
    the request that caused it.
    """
    report = FuzzReport(pools=pools)
    targets = [(s, m) for s, m in methods() if only is None or s in set(only)]
    channels = {s: grpc.insecure_channel(addresses[s]) for s, _ in targets}
    rng = random.Random(seed)
    try:
        # Hypothesis never sends the same example twice, so a method with few distinct
        # requests may take fewer than its share: later passes make up the difference.
        for _ in range(4):
            missing = total - report.requests
            if missing <= 0:
                break
            share = [
                missing // len(targets) + (i < missing % len(targets)) for i in range(len(targets))
            ]
            _fuzz_pass(report, channels, targets, share, rng, timeout, raw_share, strict, log)
    finally:
        for channel in channels.values():
            channel.close()
    return report


def _fuzz_pass(
    report: FuzzReport,
    channels: dict[str, grpc.Channel],
    targets: list[tuple[str, Any]],
    share: list[int],
    rng: random.Random,
    timeout: float,
    raw_share: float,
    strict: bool,
    log: Callable[[str], None],
) -> None:
    """One pass: `share[i]` requests to method i, `raw_share` of them raw bytes."""
    for (service, method), per_method in zip(targets, share, strict=True):
        if per_method <= 0:
            continue
        n_raw = int(per_method * raw_share)
        n_msg = per_method - n_raw
        channel = channels[service]
        for kind, strategy, n in (
            ("msg", message_strategy(method.input_type, report.pools, method.name), n_msg),
            ("raw", garbage_strategy(method.input_type, report.pools, method.name), n_raw),
        ):
            if n <= 0:
                continue
            check = _checker(report, channel, method, kind, timeout, strict, log)
            run = settings(
                max_examples=n,
                database=None,
                deadline=None,
                phases=[Phase.generate],
                suppress_health_check=list(HealthCheck),
                print_blob=False,
            )(given(body=strategy)(check))
            # Hypothesis draws from its own random source, seeded per method.
            hyp_seed(rng.randrange(2**32))(run)()


def _checker(
    report: FuzzReport,
    channel: grpc.Channel,
    method: Any,
    kind: str,
    timeout: float,
    strict: bool,
    log: Callable[[str], None],
) -> Callable[[Any], None]:
    def check(body: Any) -> None:
        start = time.monotonic()
        code, details, reply = call_once(channel, method, body, timeout)
        report.requests += 1
        report.by_method[method.name] += 1
        report.codes[code.name] += 1
        shown = repr(body)[:300]
        if code in BAD_CODES:
            report.internal.append((method.full_name, code.name, details[:200], shown))
            log(f"{method.full_name} -> {code.name} {details[:120]} for {shown}")
            if strict:
                raise AssertionError(
                    f"{method.full_name} answered {code.name} ({details}) to {kind} input {shown}"
                )
        elif (
            code == grpc.StatusCode.DEADLINE_EXCEEDED and time.monotonic() - start >= timeout * 0.9
        ):
            report.hangs.append((method.full_name, shown))
            log(f"{method.full_name} ran past its {timeout}s deadline for {shown}")
        if method.name == "RecordFeedback" and reply is not None and reply.durable:
            report.acknowledged_feedback.append(reply.feedback_id)

    return check
