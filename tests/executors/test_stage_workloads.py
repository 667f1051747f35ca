"""Pipeline stages as Kubernetes Jobs, against a REAL kube-apiserver under the chart's RBAC.

The trainer's side of `stage_jobs.run_workload` runs inside a real RunManager run: the
Job it submits is read back from the API server, the test plays the Job controller
(status subresource) and the pod's rank 0 (the progress and result files on the
artifact volume), and checks what the run shows: state, step, metrics, message.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from rlhf.executors.kubernetes import KubernetesExecutor
from rlhf.pipelines import parse_pipeline
from rlhf.runtime.runs import RunManager, RunRecord
from rlhf.workflows import stage_jobs
from tests.executors.apiserver import ADMIN_TOKEN, ControlPlane
from tests.executors.conftest import NS, now, wait_for

pytestmark = pytest.mark.helm  # renders the chart's RBAC with helm

SPEC = {
    "name": "tiny",
    "task": "sentiment",
    "datasets": {"reviews": {"format": "jsonl", "path": "reviews.jsonl"}},
    "stages": [
        {
            "name": "ppo",
            "kind": "ppo",
            "data": "reviews",
            "config": {"total_steps": 10},
            "executor": {"kind": "job", "workers": 2, "resources": {"limits": {"cpu": "3"}}},
        }
    ],
}


@pytest.fixture()
def runs(tmp_path: Path) -> Iterator[RunManager]:
    manager = RunManager(tmp_path / "runs", service="trainer", replica="trainer-0")
    yield manager
    manager.shutdown(wait=False)


def start(runs: RunManager, executor: KubernetesExecutor, out: Path) -> tuple[RunRecord, dict]:
    """A policy run whose PPO stage is a Job; returns (its record, what it returned)."""
    spec = parse_pipeline(SPEC)
    request = stage_jobs.StageRequest(
        spec=spec.model_dump(mode="json"),
        stage="ppo",
        datasets={"reviews": "/var/lib/rlhf/artifacts/datasets/reviews"},
        out_dir=str(out),
        device="cuda",  # the trainer's device; a CPU Job trains on "cpu"
        inputs={"policy_dir": "smollm2", "reward_dir": "/m/reward", "judge_dir": None},
    )
    returned: dict = {}

    def work(ctx):
        result = stage_jobs.run_workload(
            request, ctx, spec.stage("ppo").executor, executor, poll_s=0.05
        )
        returned["result"] = result
        return {"model_dir": str(result.model_dir)}

    return runs.submit("train-policy", work), returned


def job_of(plane: ControlPlane, executor: KubernetesExecutor, run_id: str):
    batch = client.BatchV1Api(plane.client(ADMIN_TOKEN))
    name = executor.job_name(run_id)
    found: list = []

    def exists() -> bool:
        try:
            found.append(batch.read_namespaced_job(name, NS))
        except ApiException as exc:
            if exc.status != 404:
                raise
        return bool(found)

    wait_for(exists, f"Job {name}")
    return found[0]


def set_status(plane: ControlPlane, name: str, status: dict) -> None:
    client.BatchV1Api(plane.client(ADMIN_TOKEN)).patch_namespaced_job_status(
        name, NS, {"status": status}
    )


def test_stage_job_runs_rlhf_stage_under_torchrun_and_mirrors_into_the_run(
    plane, executor, runs, tmp_path
) -> None:
    out = tmp_path / "models" / "tiny" / "ppo" / "run-1"
    record, returned = start(runs, executor, out)
    job = job_of(plane, executor, record.run_id)
    pod = job.spec.template.spec
    request_file = out / stage_jobs.REQUEST_FILE
    assert pod.containers[0].command == [
        "torchrun", "--standalone", "--nnodes=1", "--nproc_per_node=2", "--no-python",
        "rlhf", "stage", "run", "--request", str(request_file),
    ]  # fmt: skip
    assert pod.containers[0].resources.limits == {"cpu": "3"}
    claims = [v.persistent_volume_claim.claim_name for v in pod.volumes if v.name == "artifacts"]
    assert claims == ["t-rlhf-artifacts"]
    assert job.metadata.labels["rlhf.io/stage"] == "ppo"
    saved = stage_jobs.StageRequest.load(request_file)
    assert (
        saved.device == "cpu" and saved.stage == "ppo" and saved.inputs["reward_dir"] == "/m/reward"
    )
    assert parse_pipeline(saved.spec).stage("ppo").config == {"total_steps": 10}

    # The pod starts; its rank 0 reports step 3 of 10 through the progress file.
    set_status(plane, job.metadata.name, {"startTime": now(), "active": 1, "ready": 1})
    stage_jobs.progress_writer(out)(3, 10, reward=0.25)
    wait_for(lambda: runs.get(record.run_id).step == 3, "step 3 in the run")
    mirrored = runs.get(record.run_id)
    assert mirrored.state == "running" and mirrored.total_steps == 10
    assert mirrored.metrics["reward"] == 0.25 and mirrored.metrics["pods_active"] == 1
    wait_for(lambda: "job running" in runs.get(record.run_id).message, "the Job's phase")

    # Rank 0 saves the model and the result; the Job completes.
    stage_jobs.save_result(out, stage_jobs.StageResult(out / "model", {"reward_after": 0.9}))
    set_status(
        plane,
        job.metadata.name,
        {
            "active": 0, "ready": 0, "succeeded": 1, "completionTime": now(),
            "conditions": [
                {"type": "SuccessCriteriaMet", "status": "True", "lastTransitionTime": now()},
                {"type": "Complete", "status": "True", "lastTransitionTime": now()},
            ],
        },
    )  # fmt: skip
    final = runs.wait(record.run_id, timeout=30)
    assert final.state == "succeeded", final.message
    assert returned["result"].model_dir == out / "model"
    assert returned["result"].metrics == {"reward_after": 0.9}


def test_a_failed_stage_job_fails_the_run_with_its_reason(plane, executor, runs, tmp_path) -> None:
    record, _ = start(runs, executor, tmp_path / "out")
    job = job_of(plane, executor, record.run_id)
    reason = {
        "reason": "BackoffLimitExceeded",
        "message": "Job has reached the specified backoff limit",
        "lastTransitionTime": now(),
    }
    set_status(
        plane,
        job.metadata.name,
        {
            "startTime": now(), "failed": 1,
            "conditions": [
                {"type": "FailureTarget", "status": "True", **reason},
                {"type": "Failed", "status": "True", **reason},
            ],
        },
    )  # fmt: skip
    final = runs.wait(record.run_id, timeout=30)
    assert final.state == "failed"
    assert "stage ppo: job failed: BackoffLimitExceeded" in final.message
    assert "backoff limit" in final.message


def test_cancelling_the_run_deletes_the_stage_job(plane, executor, runs, tmp_path) -> None:
    record, _ = start(runs, executor, tmp_path / "out")
    job = job_of(plane, executor, record.run_id)
    wait_for(lambda: runs.get(record.run_id).state == "running", "the run to start")
    runs.cancel(record.run_id, "operator cancelled")
    final = runs.wait(record.run_id, timeout=30)
    assert final.state == "cancelled" and final.message == "operator cancelled"
    with pytest.raises(ApiException) as exc:
        client.BatchV1Api(plane.client(ADMIN_TOKEN)).read_namespaced_job(job.metadata.name, NS)
    assert exc.value.status == 404


def test_a_pytorchjob_stage_on_a_chart_without_pytorchjobs_fails_naming_the_value(
    plane, executor, runs, tmp_path
) -> None:
    spec = json.loads(json.dumps(SPEC))
    spec["stages"][0]["executor"] = {"kind": "pytorchjob", "workers": 4, "nodes": 2}
    parsed = parse_pipeline(spec)
    request = stage_jobs.StageRequest(
        spec=parsed.model_dump(mode="json"), stage="ppo", datasets={}, out_dir=str(tmp_path)
    )
    record = runs.submit(
        "train-policy",
        lambda ctx: stage_jobs.run_workload(request, ctx, parsed.stage("ppo").executor, executor),
    )
    final = runs.wait(record.run_id, timeout=30)
    assert final.state == "failed"
    assert "trainingJobs.pytorchJob.enabled" in final.message
