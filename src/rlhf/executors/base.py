"""What every training executor shares: the run request, its status, the interface.

The trainer service decides *what* to train; an executor decides *where*: a local
process (`LocalProcessExecutor`) or a Kubernetes Job (`KubernetesExecutor`). Both take
the same `TrainingJobSpec`, run the same command (`torchrun ... rlhf train
--run-config <file>`) and report the same `JobStatus` to a callback, which the trainer
turns into `rlhf.run.progress` events.
"""

from __future__ import annotations

import enum
import os
import re
import subprocess
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from rlhf.v1 import common_pb2


class ExecutorError(RuntimeError):
    """A run could not be submitted, watched or cancelled; the message says why."""


class JobPhase(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (JobPhase.SUCCEEDED, JobPhase.FAILED, JobPhase.CANCELLED)

    def to_run_state(self) -> common_pb2.RunState.ValueType:
        return _RUN_STATES[self]


_RUN_STATES = {
    JobPhase.PENDING: common_pb2.RUN_STATE_PENDING,
    JobPhase.RUNNING: common_pb2.RUN_STATE_RUNNING,
    JobPhase.SUCCEEDED: common_pb2.RUN_STATE_SUCCEEDED,
    JobPhase.FAILED: common_pb2.RUN_STATE_FAILED,
    JobPhase.CANCELLED: common_pb2.RUN_STATE_CANCELLED,
}


@dataclass(frozen=True)
class JobStatus:
    """One observation of a run's execution (not its training metrics)."""

    run_id: str
    phase: JobPhase
    # Why the run failed or was cancelled, or what it waits for.
    message: str = ""
    # Processes/pods now running, finished and failed (Job counters; 0/1 locally).
    active: int = 0
    succeeded: int = 0
    failed: int = 0
    observed_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def to_run_status(self, stage: str = "") -> common_pb2.RunStatus:
        """The RunStatus the trainer publishes in a RunProgress event."""
        status = common_pb2.RunStatus(
            run_id=self.run_id, state=self.phase.to_run_state(), stage=stage, message=self.message
        )
        status.updated_at.FromDatetime(self.observed_at)
        return status


StatusCallback = Callable[[JobStatus], None]


@dataclass
class TrainingJobSpec:
    """A training run to execute. Paths are as seen by the process that trains."""

    # The trainer's run id; names the Job and labels its pods.
    run_id: str
    # Run config file (YAML) the training command reads, e.g. on the artifact volume.
    run_config: str
    # Pipeline stage ("sft", "reward", "ppo", "dpo", ...), recorded as a label.
    stage: str = "train"
    # Worker processes per node (`torchrun --nproc_per_node`): one per GPU for DDP/FSDP.
    nproc_per_node: int = 1
    # Nodes (pods). More than one needs the Kubeflow Training Operator (PyTorchJob).
    nnodes: int = 1
    # GPUs per node; 0 trains on CPU.
    gpus_per_node: int = 0
    # Container resources ({"requests": {...}, "limits": {...}}); None = executor default.
    resources: dict[str, dict[str, str]] | None = None
    # Extra environment for the training processes.
    env: dict[str, str] = field(default_factory=dict)
    # Image override (Kubernetes only).
    image: str | None = None
    # The training program after torchrun; default `rlhf train --run-config <file>`.
    program: list[str] | None = None

    def __post_init__(self) -> None:
        if not self.run_id or not self.run_id.strip():
            raise ExecutorError("TrainingJobSpec.run_id must not be empty")
        if not self.run_config:
            raise ExecutorError("TrainingJobSpec.run_config must name the run config file")
        for name in ("nproc_per_node", "nnodes"):
            if getattr(self, name) < 1:
                raise ExecutorError(
                    f"TrainingJobSpec.{name} must be >= 1, got {getattr(self, name)}"
                )
        if self.gpus_per_node < 0:
            raise ExecutorError(
                f"TrainingJobSpec.gpus_per_node must be >= 0, got {self.gpus_per_node}"
            )
        if self.gpus_per_node and self.nproc_per_node > self.gpus_per_node:
            raise ExecutorError(
                f"TrainingJobSpec.nproc_per_node={self.nproc_per_node} exceeds "
                f"gpus_per_node={self.gpus_per_node}: torchrun starts one process per GPU"
            )
        for key in self.env:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
                raise ExecutorError(f"TrainingJobSpec.env: {key!r} is not a valid variable name")

    def training_program(self) -> list[str]:
        return list(self.program or ["rlhf", "train", "--run-config", self.run_config])

    def torchrun_command(self, torchrun: str = "torchrun") -> list[str]:
        """`torchrun` for this spec. Multi-node rendezvous comes from the PET_* environment
        (the Kubeflow Training Operator sets PET_NODE_RANK, PET_MASTER_ADDR/PORT)."""
        command = [torchrun]
        if self.nnodes == 1:
            command.append("--standalone")
        command += [
            f"--nnodes={self.nnodes}",
            f"--nproc_per_node={self.nproc_per_node}",
            # The program is the `rlhf` console script, not a Python file.
            "--no-python",
        ]
        return command + self.training_program()


class Executor(ABC):
    """Runs training somewhere and reports its status."""

    @abstractmethod
    def submit(self, spec: TrainingJobSpec) -> str:
        """Starts the run; returns the name of what was created (Job, process)."""

    @abstractmethod
    def status(self, run_id: str) -> JobStatus:
        """The run's status now."""

    @abstractmethod
    def watch(
        self, run_id: str, on_status: StatusCallback, timeout_s: float | None = None
    ) -> JobStatus:
        """Calls `on_status` on every change until the run ends (or `timeout_s`);
        returns the last status."""

    @abstractmethod
    def cancel(self, run_id: str) -> None:
        """Stops the run; its watcher then reports CANCELLED."""

    def watch_in_background(self, run_id: str, on_status: StatusCallback) -> threading.Thread:
        """`watch` on a daemon thread; an error is reported as a FAILED status."""

        def run() -> None:
            try:
                self.watch(run_id, on_status)
            except Exception as exc:  # the run's status is all the trainer can act on
                on_status(JobStatus(run_id, JobPhase.FAILED, message=f"watch failed: {exc}"))

        thread = threading.Thread(target=run, name=f"watch-{run_id}", daemon=True)
        thread.start()
        return thread


class LocalProcessExecutor(Executor):
    """Runs the training command as a child process of the trainer (one machine).

    The same command line as the Kubernetes Job, so a config that trains here trains
    there; `torchrun` is skipped for a single CPU process to save its start-up.
    """

    def __init__(self, torchrun: str = "torchrun", env: dict[str, str] | None = None) -> None:
        self.torchrun = torchrun
        self.env = env
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._cancelled: set[str] = set()
        self._lock = threading.Lock()

    def command(self, spec: TrainingJobSpec) -> list[str]:
        if spec.nnodes > 1:
            raise ExecutorError(
                f"run {spec.run_id}: nnodes={spec.nnodes} needs the kubernetes executor"
            )
        if spec.nproc_per_node == 1 and spec.gpus_per_node == 0:
            return spec.training_program()
        return spec.torchrun_command(self.torchrun)

    def submit(self, spec: TrainingJobSpec) -> str:
        with self._lock:
            if spec.run_id in self._procs and self._procs[spec.run_id].poll() is None:
                raise ExecutorError(f"run {spec.run_id} is already running")
            env = {**(self.env if self.env is not None else os.environ), **spec.env}
            env["RLHF_RUN_ID"] = spec.run_id
            try:
                proc = subprocess.Popen(self.command(spec), env=env)
            except FileNotFoundError as exc:
                raise ExecutorError(f"run {spec.run_id}: cannot start {exc.filename}") from exc
            self._procs[spec.run_id] = proc
            self._cancelled.discard(spec.run_id)
        return f"pid-{proc.pid}"

    def _proc(self, run_id: str) -> subprocess.Popen[bytes]:
        try:
            return self._procs[run_id]
        except KeyError:
            raise ExecutorError(f"no local run {run_id!r}") from None

    def status(self, run_id: str) -> JobStatus:
        proc = self._proc(run_id)
        code = proc.poll()
        if code is None:
            return JobStatus(run_id, JobPhase.RUNNING, active=1)
        if run_id in self._cancelled:
            return JobStatus(run_id, JobPhase.CANCELLED, message="cancelled", failed=1)
        if code == 0:
            return JobStatus(run_id, JobPhase.SUCCEEDED, succeeded=1)
        return JobStatus(run_id, JobPhase.FAILED, message=f"exit code {code}", failed=1)

    def watch(
        self, run_id: str, on_status: StatusCallback, timeout_s: float | None = None
    ) -> JobStatus:
        proc = self._proc(run_id)
        status = self.status(run_id)
        on_status(status)
        if status.phase.terminal:
            return status
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return status
        status = self.status(run_id)
        on_status(status)
        return status

    def cancel(self, run_id: str) -> None:
        proc = self._proc(run_id)
        with self._lock:
            if proc.poll() is None:
                self._cancelled.add(run_id)
                proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
