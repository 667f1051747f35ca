"""The Kubernetes executor against a REAL kube-apiserver (with etcd), under the chart's RBAC.

The trainer's identity gets exactly the Role and RoleBinding that `helm template`
renders; the executor then creates, watches and deletes Jobs through the real API
(server-side validation, RBAC, watch streams). No controller runs the Jobs, so the test
writes their status subresource the way the Job controller would.
"""

from __future__ import annotations

import threading

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from rlhf.executors import ExecutorError, JobPhase, JobStatus, TrainingJobSpec
from rlhf.executors.kubernetes import KubernetesExecutor, KubernetesExecutorSettings
from tests.executors.apiserver import ADMIN_TOKEN, TRAINER_TOKEN, ControlPlane
from tests.executors.conftest import NS, now, wait_for

pytestmark = pytest.mark.helm  # renders the chart's RBAC with helm


def set_job_status(plane: ControlPlane, name: str, status: dict) -> None:
    """Acts as the Job controller: writes .status through the status subresource."""
    client.BatchV1Api(plane.client(ADMIN_TOKEN)).patch_namespaced_job_status(
        name, NS, {"status": status}
    )


def watch_in_thread(
    ex: KubernetesExecutor, run_id: str
) -> tuple[list[JobStatus], threading.Thread]:
    seen: list[JobStatus] = []
    thread = threading.Thread(target=ex.watch, args=(run_id, seen.append, 60), daemon=True)
    thread.start()
    return seen, thread


def test_run_is_created_watched_to_success_under_chart_rbac(plane, executor) -> None:
    spec = TrainingJobSpec(
        run_id="sft-001",
        run_config="/var/lib/rlhf/artifacts/runs/sft-001.yaml",
        stage="sft",
        nproc_per_node=2,
    )
    name = executor.submit(spec)
    stored = client.BatchV1Api(plane.client(ADMIN_TOKEN)).read_namespaced_job(name, NS)
    container = stored.spec.template.spec.containers[0]
    assert container.command[:4] == ["torchrun", "--standalone", "--nnodes=1", "--nproc_per_node=2"]
    assert stored.spec.template.spec.service_account_name == "t-rlhf-training-job"
    assert executor.status("sft-001").phase is JobPhase.PENDING

    seen, thread = watch_in_thread(executor, "sft-001")
    wait_for(lambda: seen, "the first status")
    started = now()
    set_job_status(plane, name, {"startTime": started, "active": 1, "ready": 1})
    wait_for(lambda: seen[-1].phase is JobPhase.RUNNING, "RUNNING")
    set_job_status(
        plane,
        name,
        {
            "active": 0, "ready": 0, "succeeded": 1, "completionTime": now(),
            "conditions": [
                {"type": "SuccessCriteriaMet", "status": "True", "lastTransitionTime": now()},
                {"type": "Complete", "status": "True", "lastTransitionTime": now()},
            ],
        },
    )  # fmt: skip
    thread.join(30)
    assert not thread.is_alive()
    assert [s.phase for s in seen] == [JobPhase.PENDING, JobPhase.RUNNING, JobPhase.SUCCEEDED]
    assert seen[-1].to_run_status("sft").state == 3  # RUN_STATE_SUCCEEDED
    assert "sft-001" in executor.list_runs()


def test_failure_is_reported_with_the_reason(plane, executor) -> None:
    name = executor.submit(TrainingJobSpec(run_id="dpo-bad", run_config="/r.yaml"))
    reason = {
        "reason": "BackoffLimitExceeded",
        "message": "Job has reached the specified backoff limit",
        "lastTransitionTime": now(),
    }
    conditions = [
        {"type": "FailureTarget", "status": "True", **reason},
        {"type": "Failed", "status": "True", **reason},
    ]
    set_job_status(plane, name, {"startTime": now(), "failed": 1, "conditions": conditions})
    final = executor.watch("dpo-bad", lambda s: None, timeout_s=30)
    assert final.phase is JobPhase.FAILED
    assert "BackoffLimitExceeded" in final.message


def test_cancel_deletes_the_job_and_the_watcher_reports_cancelled(plane, executor) -> None:
    name = executor.submit(TrainingJobSpec(run_id="ppo-cancel", run_config="/r.yaml"))
    seen, thread = watch_in_thread(executor, "ppo-cancel")
    wait_for(lambda: seen, "the first status")
    executor.cancel("ppo-cancel")
    thread.join(30)
    assert not thread.is_alive()
    assert seen[-1].phase is JobPhase.CANCELLED
    with pytest.raises(ApiException) as exc:
        client.BatchV1Api(plane.client(ADMIN_TOKEN)).read_namespaced_job(name, NS)
    assert exc.value.status == 404
    assert executor.status("ppo-cancel").phase is JobPhase.CANCELLED
    executor.cancel("ppo-cancel")  # again: a no-op, as the trainer may repeat it
    with pytest.raises(ExecutorError, match="no training job"):
        executor.cancel("never-submitted")
    with pytest.raises(ExecutorError, match="already exists"):
        executor.submit(TrainingJobSpec(run_id="sft-001", run_config="/r.yaml"))


def test_chart_rbac_allows_nothing_beyond_the_executor(plane) -> None:
    trainer = plane.client(TRAINER_TOKEN)
    forbidden = [
        lambda: client.CoreV1Api(trainer).list_namespaced_secret(NS),
        lambda: client.AppsV1Api(trainer).list_namespaced_deployment(NS),
        lambda: client.BatchV1Api(trainer).list_namespaced_job("default"),
        lambda: client.CoreV1Api(trainer).create_namespaced_pod(
            NS, {"metadata": {"name": "x"}, "spec": {"containers": [{"name": "x", "image": "x"}]}}
        ),
        lambda: client.BatchV1Api(trainer).patch_namespaced_job_status(
            "t-rlhf-run-sft-001", NS, {"status": {}}
        ),
        lambda: client.RbacAuthorizationV1Api(trainer).list_namespaced_role(NS),
    ]
    for call in forbidden:
        with pytest.raises(ApiException) as exc:
            call()
        assert exc.value.status == 403
    # What failure_logs needs is granted: authorisation comes before the lookup, so a
    # missing pod gives 404 where a missing permission would give 403.
    core = client.CoreV1Api(trainer)
    assert core.list_namespaced_pod(NS, label_selector="rlhf.io/run-id=x").items == []
    with pytest.raises(ApiException) as exc:
        core.read_namespaced_pod_log("no-such-pod", NS)
    assert exc.value.status == 404


def test_multi_node_run_without_the_training_operator_is_refused(plane) -> None:
    settings = KubernetesExecutorSettings(namespace=NS, pytorch_job=True)
    ex = KubernetesExecutor(settings, api_client=plane.client(TRAINER_TOKEN))
    assert ex.pytorchjob_available() is False  # real API discovery: no kubeflow.org CRD
    with pytest.raises(ExecutorError, match="PyTorchJob CRD"):
        ex.submit(TrainingJobSpec(run_id="big", run_config="/r.yaml", nnodes=2))
