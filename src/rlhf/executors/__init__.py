"""Where training runs: a local process or a Kubernetes Job (see base.py, kubernetes.py)."""

from rlhf.executors.base import (
    Executor,
    ExecutorError,
    JobPhase,
    JobStatus,
    LocalProcessExecutor,
    StatusCallback,
    TrainingJobSpec,
)

__all__ = [
    "Executor",
    "ExecutorError",
    "JobPhase",
    "JobStatus",
    "LocalProcessExecutor",
    "StatusCallback",
    "TrainingJobSpec",
]
