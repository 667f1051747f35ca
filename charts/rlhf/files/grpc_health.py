"""grpc.health.v1 check of one or more gRPC servers; exits 0 only if all are SERVING.

Used by the chart's `helm test` pod (every service) and, when the services serve TLS,
as their exec probes: kubelet's native gRPC probe cannot speak TLS. Needs only grpcio
and grpcio-health-checking, both in every service image.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

# Run as `python /etc/rlhf/scripts/grpc_health.py` (the probes, the test pod), this file's
# directory is sys.path[0] and the file itself would shadow the grpc_health package.
if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    del sys.path[0]

import grpc  # noqa: E402
from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("targets", nargs="+", help="host:port of each server")
    parser.add_argument("--service", default="", help="health service name ('' = server)")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds per check")
    parser.add_argument("--retries", type=int, default=1, help="attempts per target")
    parser.add_argument("--ca", help="CA bundle: connect with TLS")
    parser.add_argument("--cert", help="client certificate (mTLS)")
    parser.add_argument("--key", help="client key (mTLS)")
    parser.add_argument("--server-name", help="TLS name to verify instead of the host")
    parser.add_argument("--token-file", help="file whose first line is a bearer token")
    return parser.parse_args(argv)


def open_channel(target: str, args: argparse.Namespace) -> grpc.Channel:
    if not args.ca:
        return grpc.insecure_channel(target)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=Path(args.ca).read_bytes(),
        private_key=Path(args.key).read_bytes() if args.key else None,
        certificate_chain=Path(args.cert).read_bytes() if args.cert else None,
    )
    options = [("grpc.ssl_target_name_override", args.server_name)] if args.server_name else []
    return grpc.secure_channel(target, credentials, options=options)


def check(target: str, args: argparse.Namespace, metadata: list[tuple[str, str]]) -> str | None:
    """Returns None when SERVING, else a one-line reason."""
    reason = "not checked"
    for attempt in range(max(1, args.retries)):
        if attempt:
            time.sleep(min(2.0 * attempt, 10.0))
        with open_channel(target, args) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            try:
                response = stub.Check(
                    health_pb2.HealthCheckRequest(service=args.service),
                    timeout=args.timeout,
                    metadata=metadata,
                )
            except grpc.RpcError as exc:
                reason = f"{exc.code().name}: {exc.details()}"
                continue
        status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
        if response.status == health_pb2.HealthCheckResponse.SERVING:
            return None
        reason = status
    return reason


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    metadata: list[tuple[str, str]] = []
    if args.token_file:
        token = Path(args.token_file).read_text().splitlines()[0].strip()
        metadata.append(("authorization", f"Bearer {token}"))
    failures = 0
    for target in args.targets:
        reason = check(target, args, metadata)
        print(f"{target}: {'SERVING' if reason is None else reason}", flush=True)
        failures += reason is not None
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
