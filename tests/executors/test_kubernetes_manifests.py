"""Manifests the Kubernetes executor builds, validated against the Kubernetes 1.33 schemas."""

from __future__ import annotations

import kubernetes_validate
import pytest
from kubernetes import client

from rlhf.executors import ExecutorError, JobPhase, TrainingJobSpec
from rlhf.executors.kubernetes import (
    KubernetesExecutor,
    KubernetesExecutorSettings,
    job_status_from_job,
    job_status_from_pytorchjob,
)
from rlhf.v1 import common_pb2

K8S = "1.33.0"


def executor(**settings) -> KubernetesExecutor:
    # An ApiClient only; building manifests makes no API call.
    return KubernetesExecutor(KubernetesExecutorSettings(**settings), api_client=client.ApiClient())


def test_gpu_run_becomes_a_valid_job_with_torchrun() -> None:
    ex = executor(
        namespace="ml",
        artifact_claim="t-rlhf-artifacts",
        labels={"app.kubernetes.io/instance": "t"},
    )
    spec = TrainingJobSpec(
        run_id="ppo-2026-11-28T15:40", run_config="/var/lib/rlhf/artifacts/runs/ppo/run.yaml",
        stage="ppo", nproc_per_node=4, gpus_per_node=4, env={"NCCL_DEBUG": "WARN"},
    )  # fmt: skip
    job = ex.build_job(spec)
    assert kubernetes_validate.validate(job, K8S, strict=True) == "1.33"
    assert job["metadata"]["name"] == ex.job_name(spec.run_id)
    assert len(job["metadata"]["name"]) <= 63
    assert job["metadata"]["annotations"]["rlhf.io/run-id"] == spec.run_id
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["command"] == [
        "torchrun", "--standalone", "--nnodes=1", "--nproc_per_node=4", "--no-python",
        "rlhf", "train", "--run-config", "/var/lib/rlhf/artifacts/runs/ppo/run.yaml",
    ]  # fmt: skip
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "4"
    assert container["resources"]["requests"]["nvidia.com/gpu"] == "4"
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["RLHF_DEVICE"] == "cuda" and env["NCCL_DEBUG"] == "WARN"
    assert env["RLHF_RUN_ID"] == spec.run_id
    claims = [
        v["persistentVolumeClaim"]["claimName"]
        for v in pod["volumes"]
        if "persistentVolumeClaim" in v
    ]
    assert claims == ["t-rlhf-artifacts"]
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] and not sc["allowPrivilegeEscalation"]
    assert sc["capabilities"] == {"drop": ["ALL"]} and pod["securityContext"]["runAsNonRoot"]
    assert pod["automountServiceAccountToken"] is False and pod["restartPolicy"] == "Never"
    labels = job["spec"]["template"]["metadata"]["labels"]
    assert labels["app.kubernetes.io/component"] == "training-job"
    assert labels["app.kubernetes.io/instance"] == "t"


def test_cpu_run_has_no_gpu_and_validates() -> None:
    job = executor().build_job(TrainingJobSpec(run_id="sft-1", run_config="/r.yaml"))
    kubernetes_validate.validate(job, K8S, strict=True)
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in container["resources"]["limits"]
    assert {e["name"]: e["value"] for e in container["env"]}["RLHF_DEVICE"] == "cpu"


def test_run_ids_become_unique_dns_names() -> None:
    ex = executor(job_name_prefix="t-rlhf-run")
    names = {ex.job_name(r) for r in ("Run_1", "run-1", "run.1", "x" * 200, "x" * 201)}
    assert len(names) == 5
    for name in names:
        assert len(name) <= 63 and name == name.lower() and name[0].isalnum() and name[-1].isalnum()


def test_multi_node_run_becomes_a_pytorchjob_with_valid_pod_templates() -> None:
    ex = executor(pytorch_job=True)
    spec = TrainingJobSpec(
        run_id="dpo-big", run_config="/r.yaml", nproc_per_node=8, nnodes=3, gpus_per_node=8
    )
    job = ex.build_pytorchjob(spec)
    assert job["apiVersion"] == "kubeflow.org/v1" and job["kind"] == "PyTorchJob"
    assert job["spec"]["nprocPerNode"] == "8"
    replicas = job["spec"]["pytorchReplicaSpecs"]
    assert replicas["Master"]["replicas"] == 1 and replicas["Worker"]["replicas"] == 2
    for role in replicas.values():
        template = {
            "apiVersion": "v1",
            "kind": "PodTemplate",
            "metadata": {"name": "x"},
            "template": role["template"],
        }
        kubernetes_validate.validate(template, K8S, strict=True)
        container = role["template"]["spec"]["containers"][0]
        assert container["name"] == "pytorch"  # the operator injects PET_* into this one
        assert "--nnodes=3" in container["command"] and "--standalone" not in container["command"]
    with pytest.raises(ExecutorError, match="one node"):
        ex.build_job(spec)


def test_bad_specs_fail_naming_the_field() -> None:
    with pytest.raises(ExecutorError, match="nproc_per_node"):
        TrainingJobSpec(run_id="r", run_config="/r.yaml", nproc_per_node=0)
    with pytest.raises(ExecutorError, match="gpus_per_node=2"):
        TrainingJobSpec(run_id="r", run_config="/r.yaml", nproc_per_node=4, gpus_per_node=2)
    with pytest.raises(ExecutorError, match="run_id"):
        TrainingJobSpec(run_id=" ", run_config="/r.yaml")
    with pytest.raises(ExecutorError, match="env"):
        TrainingJobSpec(run_id="r", run_config="/r.yaml", env={"BAD-NAME": "1"})


def test_settings_come_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("RLHF_KUBERNETES__NAMESPACE", "ml")
    monkeypatch.setenv("RLHF_KUBERNETES__NODE_SELECTOR", '{"gpu": "a100"}')
    monkeypatch.setenv(
        "RLHF_KUBERNETES__TOLERATIONS", '[{"key": "nvidia.com/gpu", "operator": "Exists"}]'
    )
    monkeypatch.setenv("RLHF_KUBERNETES__PYTORCH_JOB", "true")
    s = KubernetesExecutorSettings()
    assert s.namespace == "ml" and s.node_selector == {"gpu": "a100"} and s.pytorch_job is True
    pod = KubernetesExecutor(s, api_client=client.ApiClient()).pod_template(
        TrainingJobSpec(run_id="r", run_config="/r.yaml")
    )["spec"]
    assert (
        pod["nodeSelector"] == {"gpu": "a100"} and pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    )


@pytest.mark.parametrize(
    ("status", "phase"),
    [
        ({}, JobPhase.PENDING),
        ({"active": 1, "ready": 0}, JobPhase.PENDING),
        ({"active": 1, "ready": 1}, JobPhase.RUNNING),
        (
            {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]},
            JobPhase.SUCCEEDED,
        ),
        (
            {
                "failed": 1,
                "conditions": [
                    {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}
                ],
            },
            JobPhase.FAILED,
        ),
        (
            {"conditions": [{"type": "Failed", "status": "False"}], "active": 1, "ready": 1},
            JobPhase.RUNNING,
        ),
        ({"conditions": [{"type": "Suspended", "status": "True"}]}, JobPhase.PENDING),
    ],
)
def test_job_status_mapping(status: dict, phase: JobPhase) -> None:
    result = job_status_from_job("r", {"metadata": {}, "status": status})
    assert result.phase is phase
    if phase is JobPhase.FAILED:
        assert "BackoffLimitExceeded" in result.message
        assert result.to_run_status("ppo").state == common_pb2.RUN_STATE_FAILED


def test_deleting_job_reads_as_cancelled_and_pytorchjob_conditions_map() -> None:
    deleting = {"metadata": {"deletionTimestamp": "2026-11-28T00:00:00Z"}, "status": {"active": 1}}
    assert job_status_from_job("r", deleting).phase is JobPhase.CANCELLED
    running = {
        "status": {
            "conditions": [
                {"type": "Created", "status": "True"},
                {"type": "Running", "status": "True"},
            ]
        }
    }
    assert job_status_from_pytorchjob("r", running).phase is JobPhase.RUNNING
    done = {
        "status": {
            "conditions": [
                {"type": "Running", "status": "False"},
                {"type": "Succeeded", "status": "True"},
            ]
        }
    }
    assert job_status_from_pytorchjob("r", done).phase is JobPhase.SUCCEEDED
