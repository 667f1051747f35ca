"""Training runs as Kubernetes Jobs: the trainer's executor when `executor = kubernetes`.

A run becomes a `batch/v1` Job whose one pod runs `torchrun --nproc_per_node=N
--no-python rlhf train --run-config <file>` (DDP/FSDP over the pod's GPUs). A run that
asks for several nodes becomes a Kubeflow Training Operator `PyTorchJob` (Master + Workers,
rendezvous through the operator's PET_* variables), when its CRD is installed. The Job is
created with the `kubernetes` client, watched, and every change of its status is handed to
a callback (the trainer publishes it as `rlhf.run.progress`); cancel deletes the Job with
background propagation so its pods go too.

Configuration comes from RLHF_KUBERNETES__* environment variables (the Helm chart sets
them on the trainer), see `KubernetesExecutorSettings`. The RBAC the executor needs is
`REQUIRED_RBAC_RULES`; the chart's Role grants exactly that (tests/charts checks it).
"""

from __future__ import annotations

import copy
import hashlib
import logging
import re
import threading
import time
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from rlhf import __version__
from rlhf.executors.base import (
    Executor,
    ExecutorError,
    JobPhase,
    JobStatus,
    StatusCallback,
    TrainingJobSpec,
)

log = logging.getLogger(__name__)

# What the executor does through the API, as RBAC rules (namespace scope). Pods and
# their logs are read only to say why a run failed.
REQUIRED_RBAC_RULES: tuple[dict[str, list[str]], ...] = (
    {
        "apiGroups": ["batch"],
        "resources": ["jobs"],
        "verbs": ["create", "get", "list", "watch", "delete"],
    },
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]},
    {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
)
PYTORCHJOB_RBAC_RULE: dict[str, list[str]] = {
    "apiGroups": ["kubeflow.org"],
    "resources": ["pytorchjobs"],
    "verbs": ["create", "get", "list", "watch", "delete"],
}

RUN_ID_LABEL = "rlhf.io/run-id"
STAGE_LABEL = "rlhf.io/stage"
PYTORCHJOB_GROUP, PYTORCHJOB_VERSION, PYTORCHJOB_PLURAL = "kubeflow.org", "v1", "pytorchjobs"


class KubernetesExecutorSettings(BaseSettings):
    """Where and how training Jobs run. Env: RLHF_KUBERNETES__<FIELD> (JSON for maps/lists)."""

    model_config = SettingsConfigDict(env_prefix="RLHF_KUBERNETES__", extra="ignore")

    namespace: str = Field("default", description="namespace of the Jobs (the trainer's own)")
    image: str = Field(
        f"ghcr.io/rlhf-platform/rlhf-trainer:{__version__}", description="training image"
    )
    image_pull_policy: str = "IfNotPresent"
    image_pull_secrets: list[dict[str, str]] = Field(default_factory=list)
    service_account: str | None = Field(None, description="SA of the Job pods (no API access)")
    job_name_prefix: str = Field("rlhf-run", description="Job name = <prefix>-<run id>")
    labels: dict[str, str] = Field(default_factory=dict, description="labels on Jobs and pods")
    artifact_claim: str | None = Field(None, description="PVC with the artifact store")
    artifact_mount_path: str = "/var/lib/rlhf/artifacts"
    resources: dict[str, dict[str, str]] = Field(
        default_factory=lambda: {
            "requests": {"cpu": "2", "memory": "8Gi"},
            "limits": {"cpu": "8", "memory": "32Gi"},
        },
        description="default container resources of a run",
    )
    gpu_resource_name: str = "nvidia.com/gpu"
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[dict[str, Any]] = Field(default_factory=list)
    ttl_seconds_after_finished: int = Field(86400, ge=0)
    backoff_limit: int = Field(0, ge=0)
    active_deadline_seconds: int = Field(0, ge=0, description="0 = no limit")
    pytorch_job: bool = Field(False, description="allow multi-node runs as PyTorchJobs")
    run_as_user: int = Field(10001, ge=1)
    shm_size: str = Field("2Gi", description="/dev/shm size (DataLoader workers, NCCL)")
    torchrun: str = "torchrun"


def _slug(run_id: str, limit: int) -> str:
    """A DNS-1123 label from a run id; a hash keeps truncated or altered ids unique."""
    slug = re.sub(r"[^a-z0-9-]+", "-", run_id.lower()).strip("-")
    if slug == run_id and len(slug) <= limit:
        return slug
    digest = hashlib.sha1(run_id.encode()).hexdigest()[:8]
    return f"{slug[: limit - 9].rstrip('-')}-{digest}".lstrip("-")


def job_status_from_job(run_id: str, job: dict[str, Any]) -> JobStatus:
    """Maps a batch/v1 Job (as a dict in API field names) to a JobStatus."""
    status = job.get("status") or {}
    active, succeeded, failed = (int(status.get(k) or 0) for k in ("active", "succeeded", "failed"))
    true = {c["type"]: c for c in status.get("conditions") or [] if c.get("status") == "True"}
    counts = {"active": active, "succeeded": succeeded, "failed": failed}
    if (job.get("metadata") or {}).get("deletionTimestamp"):
        return JobStatus(run_id, JobPhase.CANCELLED, message="job is being deleted", **counts)
    if "Complete" in true:
        return JobStatus(run_id, JobPhase.SUCCEEDED, **counts)
    if "Failed" in true:
        cond = true["Failed"]
        reason = ": ".join(x for x in (cond.get("reason"), cond.get("message")) if x)
        return JobStatus(run_id, JobPhase.FAILED, message=reason or "job failed", **counts)
    if "Suspended" in true:
        return JobStatus(run_id, JobPhase.PENDING, message="job is suspended", **counts)
    if int(status.get("ready") or 0) > 0:
        return JobStatus(run_id, JobPhase.RUNNING, **counts)
    message = "waiting for the training pod to start" if active else "waiting for scheduling"
    return JobStatus(run_id, JobPhase.PENDING, message=message, **counts)


def job_status_from_pytorchjob(run_id: str, job: dict[str, Any]) -> JobStatus:
    """Maps a kubeflow.org/v1 PyTorchJob to a JobStatus (its latest true condition)."""
    if (job.get("metadata") or {}).get("deletionTimestamp"):
        return JobStatus(run_id, JobPhase.CANCELLED, message="job is being deleted")
    status = job.get("status") or {}
    replicas = status.get("replicaStatuses") or {}
    counts = {
        k: sum(int((r or {}).get(k) or 0) for r in replicas.values())
        for k in ("active", "succeeded", "failed")
    }
    conditions = [c for c in status.get("conditions") or [] if c.get("status") == "True"]
    kinds = {c["type"]: c for c in conditions}
    if "Succeeded" in kinds:
        return JobStatus(run_id, JobPhase.SUCCEEDED, **counts)
    if "Failed" in kinds:
        cond = kinds["Failed"]
        reason = ": ".join(x for x in (cond.get("reason"), cond.get("message")) if x)
        return JobStatus(run_id, JobPhase.FAILED, message=reason or "job failed", **counts)
    if "Running" in kinds:
        return JobStatus(run_id, JobPhase.RUNNING, **counts)
    return JobStatus(run_id, JobPhase.PENDING, message="waiting for the operator", **counts)


class KubernetesExecutor(Executor):
    """Runs training as Jobs (or PyTorchJobs) in one namespace."""

    def __init__(
        self,
        settings: KubernetesExecutorSettings | None = None,
        api_client: Any | None = None,
    ) -> None:
        from kubernetes import client, config

        self.settings = settings or KubernetesExecutorSettings()
        if api_client is None:
            try:
                config.load_incluster_config()
            except config.ConfigException:
                config.load_kube_config()
            api_client = client.ApiClient()
        self.api_client = api_client
        self.batch = client.BatchV1Api(api_client)
        self.core = client.CoreV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self._kinds: dict[str, str] = {}  # run id -> "Job" | "PyTorchJob"
        self._cancelled: set[str] = set()
        self._lock = threading.Lock()

    # ---- manifests ---------------------------------------------------------------

    def job_name(self, run_id: str) -> str:
        prefix = self.settings.job_name_prefix.rstrip("-")
        return f"{prefix}-{_slug(run_id, 62 - len(prefix))}"

    def _labels(self, spec: TrainingJobSpec) -> dict[str, str]:
        labels = dict(self.settings.labels)
        labels["app.kubernetes.io/component"] = "training-job"
        labels.setdefault("app.kubernetes.io/part-of", "rlhf")
        labels[RUN_ID_LABEL] = _slug(spec.run_id, 63)
        labels[STAGE_LABEL] = _slug(spec.stage, 63)
        return labels

    def _resources(self, spec: TrainingJobSpec) -> dict[str, dict[str, str]]:
        resources = copy.deepcopy(spec.resources or self.settings.resources)
        for key in ("requests", "limits"):
            resources.setdefault(key, {})
        if spec.gpus_per_node:
            # Extended resources: requests must equal limits.
            gpus = str(spec.gpus_per_node)
            resources["limits"][self.settings.gpu_resource_name] = gpus
            resources["requests"][self.settings.gpu_resource_name] = gpus
        return resources

    def pod_template(self, spec: TrainingJobSpec, container_name: str = "train") -> dict[str, Any]:
        """Pod template of a run: hardened like the chart's pods, artifact volume mounted."""
        s = self.settings
        env = {
            "RLHF_RUN_ID": spec.run_id,
            "RLHF_ARTIFACT_DIR": s.artifact_mount_path,
            "RLHF_DEVICE": "cuda" if spec.gpus_per_node else "cpu",
            "HOME": "/tmp",
            "TMPDIR": "/tmp",
            "XDG_CACHE_HOME": "/var/cache/rlhf",
            "HF_HOME": "/var/cache/rlhf/huggingface",
            **spec.env,
        }
        mounts = [
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "cache", "mountPath": "/var/cache/rlhf"},
            {"name": "shm", "mountPath": "/dev/shm"},
        ]
        volumes: list[dict[str, Any]] = [
            {"name": "tmp", "emptyDir": {}},
            {"name": "cache", "emptyDir": {}},
            {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": s.shm_size}},
        ]
        if s.artifact_claim:
            mounts.append({"name": "artifacts", "mountPath": s.artifact_mount_path})
            volumes.append(
                {"name": "artifacts", "persistentVolumeClaim": {"claimName": s.artifact_claim}}
            )
        security = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
        pod_spec: dict[str, Any] = {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "securityContext": {
                **security,
                "runAsUser": s.run_as_user,
                "runAsGroup": s.run_as_user,
                "fsGroup": s.run_as_user,
            },
            "containers": [
                {
                    "name": container_name,
                    "image": spec.image or s.image,
                    "imagePullPolicy": s.image_pull_policy,
                    "command": spec.torchrun_command(s.torchrun),
                    "env": [{"name": k, "value": v} for k, v in env.items()],
                    "resources": self._resources(spec),
                    "volumeMounts": mounts,
                    "securityContext": {
                        **security,
                        "runAsUser": s.run_as_user,
                        "allowPrivilegeEscalation": False,
                        "privileged": False,
                        "readOnlyRootFilesystem": True,
                        "capabilities": {"drop": ["ALL"]},
                    },
                }
            ],
            "volumes": volumes,
        }
        if s.service_account:
            pod_spec["serviceAccountName"] = s.service_account
        if s.node_selector:
            pod_spec["nodeSelector"] = dict(s.node_selector)
        if s.tolerations:
            pod_spec["tolerations"] = copy.deepcopy(s.tolerations)
        if s.image_pull_secrets:
            pod_spec["imagePullSecrets"] = copy.deepcopy(s.image_pull_secrets)
        return {"metadata": {"labels": self._labels(spec)}, "spec": pod_spec}

    def _metadata(self, spec: TrainingJobSpec) -> dict[str, Any]:
        return {
            "name": self.job_name(spec.run_id),
            "namespace": self.settings.namespace,
            "labels": self._labels(spec),
            "annotations": {RUN_ID_LABEL: spec.run_id, "rlhf.io/run-config": spec.run_config},
        }

    def build_job(self, spec: TrainingJobSpec) -> dict[str, Any]:
        """The batch/v1 Job of a single-node run."""
        if spec.nnodes != 1:
            raise ExecutorError(f"run {spec.run_id}: a Job runs one node; use build_pytorchjob")
        s = self.settings
        job_spec: dict[str, Any] = {
            "backoffLimit": s.backoff_limit,
            "completions": 1,
            "parallelism": 1,
            "ttlSecondsAfterFinished": s.ttl_seconds_after_finished,
            "template": self.pod_template(spec),
        }
        if s.active_deadline_seconds:
            job_spec["activeDeadlineSeconds"] = s.active_deadline_seconds
        return {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": self._metadata(spec),
            "spec": job_spec,
        }

    def build_pytorchjob(self, spec: TrainingJobSpec) -> dict[str, Any]:
        """The kubeflow.org/v1 PyTorchJob of a multi-node run (Master + nnodes-1 Workers)."""
        s = self.settings
        template = self.pod_template(spec, container_name="pytorch")  # the operator's name
        run_policy: dict[str, Any] = {
            "cleanPodPolicy": "None",
            "backoffLimit": s.backoff_limit,
            "ttlSecondsAfterFinished": s.ttl_seconds_after_finished,
        }
        if s.active_deadline_seconds:
            run_policy["activeDeadlineSeconds"] = s.active_deadline_seconds
        replicas = {"Master": {"replicas": 1, "restartPolicy": "Never", "template": template}}
        if spec.nnodes > 1:
            replicas["Worker"] = {
                "replicas": spec.nnodes - 1,
                "restartPolicy": "Never",
                "template": copy.deepcopy(template),
            }
        return {
            "apiVersion": f"{PYTORCHJOB_GROUP}/{PYTORCHJOB_VERSION}",
            "kind": "PyTorchJob",
            "metadata": self._metadata(spec),
            "spec": {
                "nprocPerNode": str(spec.nproc_per_node),
                "runPolicy": run_policy,
                "pytorchReplicaSpecs": replicas,
            },
        }

    # ---- API calls ---------------------------------------------------------------

    def pytorchjob_available(self) -> bool:
        """True when the Training Operator's PyTorchJob CRD is served (API discovery)."""
        from kubernetes.client.rest import ApiException

        try:
            resources = self.custom.get_api_resources(PYTORCHJOB_GROUP, PYTORCHJOB_VERSION)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return any(r.name == PYTORCHJOB_PLURAL for r in resources.resources or [])

    def submit(self, spec: TrainingJobSpec) -> str:
        from kubernetes.client.rest import ApiException

        ns = self.settings.namespace
        try:
            if spec.nnodes == 1:
                body = self.build_job(spec)
                self.batch.create_namespaced_job(ns, body)
                kind = "Job"
            else:
                if not self.settings.pytorch_job:
                    raise ExecutorError(
                        f"run {spec.run_id} asks for {spec.nnodes} nodes: multi-node runs need "
                        "RLHF_KUBERNETES__PYTORCH_JOB=true (chart: trainingJobs.pytorchJob.enabled)"
                    )
                if not self.pytorchjob_available():
                    raise ExecutorError(
                        f"run {spec.run_id} asks for {spec.nnodes} nodes, but the Kubeflow "
                        "Training Operator's PyTorchJob CRD (kubeflow.org/v1) is not installed"
                    )
                body = self.build_pytorchjob(spec)
                self.custom.create_namespaced_custom_object(
                    PYTORCHJOB_GROUP, PYTORCHJOB_VERSION, ns, PYTORCHJOB_PLURAL, body
                )
                kind = "PyTorchJob"
        except ApiException as exc:
            if exc.status == 409:
                raise ExecutorError(
                    f"run {spec.run_id}: {body['metadata']['name']} already exists"
                ) from exc
            raise ExecutorError(
                f"run {spec.run_id}: create failed: {exc.status} {exc.reason}: {exc.body}"
            ) from exc
        with self._lock:
            self._kinds[spec.run_id] = kind
            self._cancelled.discard(spec.run_id)
        log.info("submitted run %s as %s %s/%s", spec.run_id, kind, ns, body["metadata"]["name"])
        return body["metadata"]["name"]

    def _read(self, run_id: str) -> tuple[str, dict[str, Any]] | None:
        """(kind, object as a dict) of a run, or None when neither a Job nor a PyTorchJob exists."""
        from kubernetes.client.rest import ApiException

        name, ns = self.job_name(run_id), self.settings.namespace
        kinds = [self._kinds.get(run_id)] if run_id in self._kinds else ["Job", "PyTorchJob"]
        for kind in kinds:
            if kind == "PyTorchJob" and not self.settings.pytorch_job:
                continue
            try:
                if kind == "Job":
                    obj = self.api_client.sanitize_for_serialization(
                        self.batch.read_namespaced_job(name, ns)
                    )
                else:
                    obj = self.custom.get_namespaced_custom_object(
                        PYTORCHJOB_GROUP, PYTORCHJOB_VERSION, ns, PYTORCHJOB_PLURAL, name
                    )
            except ApiException as exc:
                if exc.status == 404:
                    continue
                raise
            self._kinds[run_id] = kind
            return kind, obj
        return None

    def _to_status(self, run_id: str, kind: str, obj: dict[str, Any]) -> JobStatus:
        mapper = job_status_from_job if kind == "Job" else job_status_from_pytorchjob
        status = mapper(run_id, obj)
        if status.phase is JobPhase.FAILED and run_id in self._cancelled:
            return JobStatus(run_id, JobPhase.CANCELLED, message="cancelled")
        return status

    def status(self, run_id: str) -> JobStatus:
        found = self._read(run_id)
        if found is None:
            if run_id in self._cancelled:
                return JobStatus(run_id, JobPhase.CANCELLED, message="cancelled")
            raise ExecutorError(f"no training job for run {run_id!r} in {self.settings.namespace}")
        return self._to_status(run_id, *found)

    def failure_logs(self, run_id: str, tail_lines: int = 20) -> str:
        """Last lines of the run's most recent failed pod (empty when none can be read)."""
        from kubernetes.client.rest import ApiException

        try:
            pods = self.core.list_namespaced_pod(
                self.settings.namespace, label_selector=f"{RUN_ID_LABEL}={_slug(run_id, 63)}"
            ).items
            failed = [p for p in pods if p.status and p.status.phase == "Failed"] or pods
            if not failed:
                return ""
            pod = max(failed, key=lambda p: str(p.metadata.creation_timestamp or ""))
            return self.core.read_namespaced_pod_log(
                pod.metadata.name, self.settings.namespace, tail_lines=tail_lines
            )
        except ApiException as exc:
            log.warning("cannot read logs of run %s: %s %s", run_id, exc.status, exc.reason)
            return ""

    def watch(
        self, run_id: str, on_status: StatusCallback, timeout_s: float | None = None
    ) -> JobStatus:
        """Streams the Job's (or PyTorchJob's) events; calls `on_status` on each change."""
        from kubernetes import watch as k8s_watch
        from kubernetes.client.rest import ApiException

        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        found = self._read(run_id)
        if found is None:
            status = self.status(run_id)  # CANCELLED, or raises: no such run
            on_status(status)
            return status
        kind, obj = found
        last = self._to_status(run_id, kind, obj)
        on_status(last)
        resource_version = (obj.get("metadata") or {}).get("resourceVersion")
        name, ns = self.job_name(run_id), self.settings.namespace

        while not last.phase.terminal:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return last
            window = int(min(remaining or 300, 300)) or 1
            watcher = k8s_watch.Watch()
            if kind == "Job":
                stream = watcher.stream(
                    self.batch.list_namespaced_job,
                    ns,
                    field_selector=f"metadata.name={name}",
                    resource_version=resource_version,
                    timeout_seconds=window,
                )
            else:
                stream = watcher.stream(
                    self.custom.list_namespaced_custom_object,
                    PYTORCHJOB_GROUP,
                    PYTORCHJOB_VERSION,
                    ns,
                    PYTORCHJOB_PLURAL,
                    field_selector=f"metadata.name={name}",
                    resource_version=resource_version,
                    timeout_seconds=window,
                )
            try:
                for event in stream:
                    raw = event["object"]
                    obj = (
                        raw
                        if isinstance(raw, dict)
                        else self.api_client.sanitize_for_serialization(raw)
                    )
                    resource_version = (obj.get("metadata") or {}).get(
                        "resourceVersion", resource_version
                    )
                    if event["type"] == "DELETED":
                        status = JobStatus(run_id, JobPhase.CANCELLED, message="job was deleted")
                    elif event["type"] in ("ADDED", "MODIFIED"):
                        status = self._to_status(run_id, kind, obj)
                    else:
                        continue
                    if status.phase is JobPhase.FAILED:
                        logs = self.failure_logs(run_id)
                        if logs:
                            status = JobStatus(
                                run_id,
                                status.phase,
                                f"{status.message}\n{logs}".strip(),
                                status.active,
                                status.succeeded,
                                status.failed,
                            )
                    if _changed(last, status):
                        on_status(status)
                    last = status
                    if last.phase.terminal:
                        watcher.stop()
                        break
            except ApiException as exc:
                if exc.status != 410:  # 410 Gone: our resourceVersion expired; re-read
                    raise
                found = self._read(run_id)
                if found is None:
                    status = JobStatus(run_id, JobPhase.CANCELLED, message="job was deleted")
                    on_status(status)
                    return status
                kind, obj = found
                resource_version = obj["metadata"].get("resourceVersion")
                status = self._to_status(run_id, kind, obj)
                if _changed(last, status):
                    on_status(status)
                last = status
        return last

    def cancel(self, run_id: str) -> None:
        """Deletes the run's Job (propagation Background: the pods are removed too).
        Idempotent: cancelling a run again once its Job is gone does nothing."""
        from kubernetes import client
        from kubernetes.client.rest import ApiException

        found = self._read(run_id)
        if found is None:
            if run_id in self._cancelled:
                return  # cancelled before: nothing left to delete
            raise ExecutorError(f"no training job for run {run_id!r} in {self.settings.namespace}")
        kind, _ = found
        with self._lock:
            self._cancelled.add(run_id)
        name, ns = self.job_name(run_id), self.settings.namespace
        options = client.V1DeleteOptions(propagation_policy="Background")
        try:
            if kind == "Job":
                self.batch.delete_namespaced_job(name, ns, body=options)
            else:
                self.custom.delete_namespaced_custom_object(
                    PYTORCHJOB_GROUP, PYTORCHJOB_VERSION, ns, PYTORCHJOB_PLURAL, name, body=options
                )
        except ApiException as exc:
            if exc.status != 404:
                raise ExecutorError(
                    f"run {run_id}: delete failed: {exc.status} {exc.reason}"
                ) from exc
        log.info("cancelled run %s (%s %s/%s deleted)", run_id, kind, ns, name)

    def list_runs(self) -> dict[str, JobStatus]:
        """Every run of this executor's Jobs in the namespace (e.g. after a trainer restart)."""
        labels = {**self.settings.labels, "app.kubernetes.io/component": "training-job"}
        selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        jobs = self.batch.list_namespaced_job(self.settings.namespace, label_selector=selector)
        runs = {}
        for job in jobs.items:
            obj = self.api_client.sanitize_for_serialization(job)
            run_id = (obj["metadata"].get("annotations") or {}).get(RUN_ID_LABEL)
            if run_id:
                runs[run_id] = job_status_from_job(run_id, obj)
        return runs


def _changed(old: JobStatus, new: JobStatus) -> bool:
    keys = ("phase", "message", "active", "succeeded", "failed")
    return any(getattr(old, k) != getattr(new, k) for k in keys)
