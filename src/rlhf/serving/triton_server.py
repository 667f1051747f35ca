"""Run the real `tritonserver` binary that ships inside the nvidia-pytriton wheel.

Local mode starts this process next to the inference service; cluster mode skips it and
points the client at a Triton Deployment. Both load the same model repository (Python
backend `model.py` + `config.pbtxt`, see `rlhf.serving.repository`), so the model code
tested here is the code a cluster runs.

Two details make the wheel's binary work outside PyTriton: the backend directory must
hold the Python-backend stub built for this interpreter's version, and the stub must
load this interpreter's own libpython (pyenv builds differ from Debian's), so its
LIBDIR goes first on `LD_LIBRARY_PATH`; the venv's site-packages go on `PYTHONPATH` so
`model.py` can import torch and transformers.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from rlhf.runtime.ports import free_port

log = logging.getLogger(__name__)


class TritonStartError(RuntimeError):
    """tritonserver exited or did not become ready; the message carries its last log lines."""


def _pytriton_dist() -> Path:
    import pytriton

    return Path(pytriton.__file__).parent / "tritonserver"


def _pytriton_libs() -> Path:
    from pytriton.utils.distribution import get_libs_path

    return Path(get_libs_path())


@dataclass
class LocalTritonConfig:
    """How to start a local tritonserver."""

    model_repository: Path
    """Triton model repository root (one folder per Triton model)."""
    host: str = "127.0.0.1"
    grpc_port: int = 0
    """0 picks a free port."""
    http_port: int = 0
    metrics_port: int = 0
    startup_timeout_s: float = 120.0
    log_verbose: int = 0
    model_control_mode: str = "explicit"
    """"explicit" (models loaded through the client) or "poll" (Triton loads what it finds)."""
    repository_poll_secs: int = 1
    """Seconds between repository polls in poll mode."""
    extra_pythonpath: list[str] = field(default_factory=list)
    """Added to the stub's PYTHONPATH (the venv's site-packages are always there)."""


class LocalTritonServer:
    """A tritonserver child process in explicit (or poll) model-control mode.

    Use as a context manager or call `start()`/`stop()`. Models are loaded and unloaded
    through the client (`rlhf.serving.client.TritonClient.load_model`).
    """

    def __init__(self, config: LocalTritonConfig) -> None:
        self.config = config
        self._proc: subprocess.Popen[bytes] | None = None
        self._workdir: Path | None = None
        self._log_tail: deque[str] = deque(maxlen=200)
        self._log_thread: threading.Thread | None = None
        self.grpc_port = config.grpc_port or free_port()
        self.http_port = config.http_port or free_port()
        self.metrics_port = config.metrics_port or free_port()

    @property
    def grpc_url(self) -> str:
        return f"{self.config.host}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.config.host}:{self.metrics_port}/metrics"

    def logs(self) -> str:
        return "".join(self._log_tail)

    def _backend_dir(self) -> Path:
        """A backend folder with the stub for this interpreter (PyTriton does the same)."""
        assert self._workdir is not None
        dist = _pytriton_dist()
        backend = self._workdir / "backends" / "python"
        backend.mkdir(parents=True)
        for name in ("libtriton_python.so", "triton_python_backend_utils.py"):
            os.symlink(dist / "backends" / "python" / name, backend / name)
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        stub = dist / "python_backend_stubs" / version / "triton_python_backend_stub"
        if not stub.exists():
            raise TritonStartError(f"nvidia-pytriton has no Python-backend stub for {version}")
        shutil.copy(stub, backend / "triton_python_backend_stub")
        return backend.parent

    def _env(self) -> dict[str, str]:
        env = os.environ.copy()
        libdir = sysconfig.get_config_var("LIBDIR") or ""
        lib_paths = [libdir, str(_pytriton_libs()), env.get("LD_LIBRARY_PATH", "")]
        env["LD_LIBRARY_PATH"] = ":".join(p for p in lib_paths if p)
        site_paths = [p for p in sys.path if p.endswith("site-packages")]
        py_paths = [*self.config.extra_pythonpath, *site_paths, env.get("PYTHONPATH", "")]
        env["PYTHONPATH"] = ":".join(p for p in py_paths if p)
        env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
        # CPU serving: one intra-op pool per model process, no oversubscription surprises.
        env.setdefault("TOKENIZERS_PARALLELISM", "false")
        return env

    def start(self) -> LocalTritonServer:
        self._workdir = Path(tempfile.mkdtemp(prefix="rlhf-triton-"))
        backend_dir = self._backend_dir()
        self.config.model_repository.mkdir(parents=True, exist_ok=True)
        cmd = [
            str(_pytriton_dist() / "bin" / "tritonserver"),
            f"--model-repository={self.config.model_repository}",
            f"--model-control-mode={self.config.model_control_mode}",
            *(
                [f"--repository-poll-secs={self.config.repository_poll_secs}"]
                if self.config.model_control_mode == "poll"
                else []
            ),
            f"--backend-directory={backend_dir}",
            f"--backend-config=python,shm-region-prefix-name=rlhf{uuid.uuid4().hex[:8]}",
            "--backend-config=python,shm-default-byte-size=4194304",
            f"--grpc-address={self.config.host}",
            f"--grpc-port={self.grpc_port}",
            f"--http-address={self.config.host}",
            f"--http-port={self.http_port}",
            f"--metrics-address={self.config.host}",
            f"--metrics-port={self.metrics_port}",
            "--allow-metrics=true",
            "--allow-cpu-metrics=true",
            "--allow-gpu-metrics=false",
            "--strict-readiness=true",
            "--exit-on-error=false",
            f"--log-verbose={self.config.log_verbose}",
        ]
        log.info("starting tritonserver: grpc %s", self.grpc_url)
        self._proc = subprocess.Popen(
            cmd,
            env=self._env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=self._workdir,
            start_new_session=True,
        )
        self._log_thread = threading.Thread(target=self._pump_logs, daemon=True)
        self._log_thread.start()
        self._wait_live()
        return self

    def _pump_logs(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for raw in self._proc.stdout:
            line = raw.decode("utf-8", "replace")
            self._log_tail.append(line)
            log.debug("tritonserver: %s", line.rstrip())

    def _wait_live(self) -> None:
        import tritonclient.grpc as grpcclient

        deadline = time.monotonic() + self.config.startup_timeout_s
        client = grpcclient.InferenceServerClient(self.grpc_url)
        try:
            while time.monotonic() < deadline:
                if self._proc is not None and self._proc.poll() is not None:
                    raise TritonStartError(
                        f"tritonserver exited with {self._proc.returncode}:\n{self.logs()}"
                    )
                try:
                    if client.is_server_live(client_timeout=1.0):
                        return
                except Exception:  # noqa: BLE001 - not listening yet
                    pass
                time.sleep(0.2)
        finally:
            client.close()
        self.stop()
        raise TritonStartError(f"tritonserver not live after {self.config.startup_timeout_s}s")

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM (Triton unloads models and stops its stubs), then SIGKILL if needed."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self._proc.pid, 9)
                self._proc.wait()
        self._proc = None
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def __enter__(self) -> LocalTritonServer:
        return self.start() if self._proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()
