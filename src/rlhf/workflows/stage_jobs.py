"""Trainer stages run in the trainer's process or as Kubernetes workloads.

A stage's `executor:` (see `rlhf.pipelines.StageExecutor`) says where it trains. Either
way the trainer builds one `StageRequest`: locally `run_stage` executes it at once; as
a `job` or `pytorchjob` the trainer writes it as JSON beside the stage's output on the
artifact volume (every pod mounts it at the same path), submits `torchrun ... rlhf stage
run --request FILE` through the Kubernetes executor, mirrors the workload's status and
the progress file that the pod's rank 0 writes into the run, deletes the workload when
the run is cancelled, and reads back the result file rank 0 wrote.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from rlhf.executors.base import Executor, ExecutorError, JobPhase, JobStatus, TrainingJobSpec
from rlhf.pipelines import PipelineError, StageExecutor, parse_pipeline
from rlhf.runtime.runs import RunCancelled, RunContext
from rlhf.workflows import stages
from rlhf.workflows.stages import Report, StageResult

log = logging.getLogger(__name__)

REQUEST_FILE = "stage-request.json"
PROGRESS_FILE = "stage-progress.json"
RESULT_FILE = "stage-result.json"
# Stage function arguments that are directories typed as Path (policy directories may
# also be a model name such as "smollm2", so they stay strings).
_PATH_INPUTS = {"tokenizer_dir", "reward_dir", "judge_dir", "scorer_dir"}


@dataclass
class StageRequest:
    """Everything a trainer stage needs, in plain JSON: the training pod has only this
    file and the artifact volume."""

    spec: dict[str, Any]  # the resolved pipeline spec (quick overrides applied)
    stage: str
    datasets: dict[str, str]
    out_dir: str
    device: str = "cpu"
    # Keyword arguments of the stage function: model directories and numbers.
    inputs: dict[str, Any] = field(default_factory=dict)
    # A retraining round's feedback window (a `feedback_dataset` directory), or "".
    feedback_dir: str = ""

    def save(self, path: Path) -> None:
        _write_json(path, asdict(self))

    @classmethod
    def load(cls, path: Path) -> StageRequest:
        return cls(**json.loads(Path(path).read_text()))


def _write_json(path: Path, value: Any) -> None:
    """Atomic: the trainer polls these files while the pod writes them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        json.dump(value, handle)
    os.replace(tmp, path)


def run_stage(request: StageRequest, report: Report = stages._no_report) -> StageResult:
    """Execute the request with the stage functions (in the trainer or in a pod). Under
    torchrun every rank calls this; only rank 0 gets a model directory back."""
    from rlhf.workflows.feedback import load_window

    spec = parse_pipeline(request.spec, source=f"stage request {request.stage}")
    stage = spec.stage(request.stage)
    datasets = {k: Path(v) for k, v in request.datasets.items()}
    out = Path(request.out_dir)
    inputs = {k: Path(v) if k in _PATH_INPUTS and v else v for k, v in request.inputs.items()}
    feedback = load_window(Path(request.feedback_dir)) if request.feedback_dir else None
    common = {"device": request.device, "report": report, **inputs}
    if stage.kind in ("pretrain", "sft"):
        return stages.base_policy_stage(spec, stage, datasets, out, **common)
    if stage.kind == "dpo":
        pairs = feedback.preferences if feedback else []
        return stages.dpo_stage(spec, stage, datasets, out, extra_pairs=pairs, **common)
    if stage.kind in ("ppo", "rloo", "grpo"):
        prompts = feedback.prompts if feedback else []
        return stages.rl_stage(spec, stage, datasets, out, extra_prompts=prompts, **common)
    raise PipelineError(f"stages.{stage.name}: a {stage.kind} stage does not run in the trainer")


def progress_writer(out_dir: Path) -> Report:
    """The `report` of a stage in a pod: progress as a file the trainer polls."""
    path = Path(out_dir) / PROGRESS_FILE

    def report(step: int | None = None, total_steps: int | None = None, **metrics: float) -> None:
        _write_json(path, {"step": step, "total_steps": total_steps, "metrics": metrics})

    return report


def save_result(out_dir: Path, result: StageResult) -> None:
    _write_json(
        Path(out_dir) / RESULT_FILE,
        {"model_dir": str(result.model_dir), "metrics": result.metrics, "samples": result.samples},
    )


def load_result(out_dir: Path) -> StageResult:
    path = Path(out_dir) / RESULT_FILE
    if not path.exists():
        raise RuntimeError(f"the stage's workload succeeded but wrote no {path}")
    raw = json.loads(path.read_text())
    return StageResult(Path(raw["model_dir"]), raw["metrics"], raw["samples"])


def workload_spec(
    run_id: str, request_file: Path, stage: str, executor: StageExecutor
) -> TrainingJobSpec:
    """The executor's view of a stage: torchrun over `rlhf stage run`."""
    return TrainingJobSpec(
        run_id=run_id,
        run_config=str(request_file),
        stage=stage,
        nproc_per_node=executor.processes_per_node,
        nnodes=executor.nodes,
        gpus_per_node=executor.gpus_per_node,
        resources=executor.resources,
        program=["rlhf", "stage", "run", "--request", str(request_file)],
    )


def execute(
    request: StageRequest,
    run: RunContext,
    executor: StageExecutor | None,
    kubernetes: Callable[[], Executor],
    poll_s: float = 1.0,
) -> StageResult:
    """Run the stage where `executor` says (None or local: here, in this thread)."""
    if executor is None or executor.kind == "local":
        return run_stage(request, run.report)
    return run_workload(request, run, executor, kubernetes(), poll_s)


def run_workload(
    request: StageRequest,
    run: RunContext,
    executor: StageExecutor,
    kubernetes: Executor,
    poll_s: float = 1.0,
) -> StageResult:
    """Submit the stage as a Job/PyTorchJob (or adopt the one an earlier trainer process
    submitted for this run), mirror it into `run` until it ends, delete it on cancel."""
    # The pod trains on its own GPUs (or CPU), whatever the trainer's device.
    request = replace(request, device="cuda" if executor.gpus_per_node else "cpu")
    out = Path(request.out_dir)
    request_file = out / REQUEST_FILE
    note = run.record.message  # restored on success: the Job's phase is no lasting note
    try:
        kubernetes.status(run.run_id)  # resumed after a trainer restart: watch it again
        log.info("run %s: adopting its existing %s", run.run_id, executor.kind)
    except ExecutorError:
        for stale in (PROGRESS_FILE, RESULT_FILE):
            (out / stale).unlink(missing_ok=True)
        request.save(request_file)
        kubernetes.submit(workload_spec(run.run_id, request_file, request.stage, executor))

    latest: list[JobStatus] = []
    changed = threading.Event()

    def on_status(status: JobStatus) -> None:
        latest.append(status)
        changed.set()

    kubernetes.watch_in_background(run.run_id, on_status)
    shown: tuple[Any, ...] = ()
    last_report = 0.0
    try:
        while True:
            if run.cancelled.is_set():
                run.report()  # raises RunCancelled, keeping the cancel's reason
            status = latest[-1] if latest else None
            progress = _read_progress(out)
            seen = (status and (status.phase, status.message, status.active), progress)
            # report() records progress, and raises RunCancelled on a cancel another
            # replica noted: called on each change and at least every 10 s.
            if seen != shown or time.monotonic() - last_report > 10:
                if status is not None:
                    message = f"{executor.kind} {status.phase}: {status.message}"
                    run.record.message = message.strip().rstrip(":")
                pods = (
                    {"pods_active": status.active, "pods_failed": status.failed} if status else {}
                )
                run.report(
                    progress.get("step"),
                    progress.get("total_steps"),
                    **{**progress.get("metrics", {}), **pods},
                )
                shown, last_report = seen, time.monotonic()
            if status is not None and status.phase.terminal:
                break
            changed.wait(poll_s)
            changed.clear()
    except RunCancelled:
        try:
            kubernetes.cancel(run.run_id)
        except ExecutorError as exc:  # gone already: nothing left to delete
            log.warning("run %s: %s", run.run_id, exc)
        raise
    if status.phase is not JobPhase.SUCCEEDED:
        raise RuntimeError(
            f"stage {request.stage}: {executor.kind} {status.phase}: {status.message}"
        )
    run.record.message = note
    return load_result(out)


def _read_progress(out: Path) -> dict[str, Any]:
    try:
        return json.loads((out / PROGRESS_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
