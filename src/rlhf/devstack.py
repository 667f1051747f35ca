"""The five services as local processes over one Kafka cluster: `rlhf up`, and the
end-to-end test. Each service is `python -m rlhf.cli serve <name>` on its own port,
with its output in `<log_dir>/<name>.log`; they share one artifact directory.

`replicas={"trainer": 2}` runs more copies of a service, as a Deployment would: the
copies are named `trainer`, `trainer-2`, ... (their replica ids), each on its own port,
all in one Kafka consumer group and on the same artifact directory."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from rlhf.contract import SERVICES
from rlhf.runtime.ports import free_port


class DevStack:
    def __init__(
        self,
        bootstrap_servers: str,
        artifact_dir: Path,
        log_dir: Path,
        *,
        base_port: int = 0,
        env: dict[str, str] | None = None,
        replicas: dict[str, int] | None = None,
    ) -> None:
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.processes = [
            name if i == 1 else f"{name}-{i}"
            for name in SERVICES
            for i in range(1, (replicas or {}).get(name, 1) + 1)
        ]
        self.ports = {
            name: (base_port + i if base_port else free_port())
            for i, name in enumerate(self.processes)
        }
        self.procs: dict[str, subprocess.Popen] = {}
        self.env = {
            **os.environ,
            "RLHF_BUS": "kafka",
            "RLHF_KAFKA__BOOTSTRAP_SERVERS": bootstrap_servers,
            "RLHF_ARTIFACT_DIR": str(Path(artifact_dir).resolve()),
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }

    def address(self, name: str) -> str:
        return f"127.0.0.1:{self.ports[name]}"

    def log(self, name: str) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self, name: str, timeout: float = 300) -> None:
        """Start one service (or one replica: `trainer-2`) and wait until its health
        check says SERVING."""
        service = name.split("-")[0]
        command = [sys.executable, "-m", "rlhf.cli", "serve", service]
        with open(self.log_dir / f"{name}.log", "ab") as log:
            self.procs[name] = subprocess.Popen(
                [*command, "--port", str(self.ports[name])],
                env={**self.env, "RLHF_REPLICA_ID": name},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.wait_serving(name, timeout)

    def start_all(self, timeout: float = 300) -> None:
        for name in self.processes:
            self.start(name, timeout)

    def wait_serving(self, name: str, timeout: float = 300) -> None:
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        deadline = time.monotonic() + timeout
        with grpc.insecure_channel(self.address(name)) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                if self.procs[name].poll() is not None:
                    raise RuntimeError(f"{name} exited:\n{self.log(name)[-3000:]}")
                try:
                    reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                time.sleep(0.5)
        raise RuntimeError(f"{name} never became SERVING:\n{self.log(name)[-3000:]}")

    def kill(self, name: str) -> None:
        """SIGKILL: no drain, no cleanup (a crash)."""
        self.procs[name].send_signal(signal.SIGKILL)
        self.procs[name].wait(30)

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM every service (graceful drain), SIGKILL what is left after timeout."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
