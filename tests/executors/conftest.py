"""The control plane the executor tests share: a real kube-apiserver with the chart's
RBAC (its Role, RoleBinding and ServiceAccounts) in namespace `NS`, one per test module,
and an executor that talks to it as the trainer's service account."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from kubernetes import client, utils

from rlhf.executors.kubernetes import KubernetesExecutor, KubernetesExecutorSettings
from tests.charts.helmtools import render
from tests.executors.apiserver import ADMIN_TOKEN, TRAINER_TOKEN, ControlPlane, control_plane

NS = "ml"
TRAINER_USER = f"system:serviceaccount:{NS}:t-rlhf-trainer"  # the chart's trainer SA


@pytest.fixture(scope="module")
def plane(tmp_path_factory) -> Iterator[ControlPlane]:
    with control_plane(tmp_path_factory.mktemp("k8s"), {TRAINER_TOKEN: TRAINER_USER}) as cp:
        admin = cp.client(ADMIN_TOKEN)
        client.CoreV1Api(admin).create_namespace({"metadata": {"name": NS}})
        for obj in render():  # the chart's Role, RoleBinding and ServiceAccounts
            if obj["kind"] in ("Role", "RoleBinding", "ServiceAccount"):
                utils.create_from_dict(admin, obj, namespace=NS)
        yield cp


@pytest.fixture()
def executor(plane: ControlPlane) -> KubernetesExecutor:
    settings = KubernetesExecutorSettings(
        namespace=NS, job_name_prefix="t-rlhf-run", artifact_claim="t-rlhf-artifacts",
        service_account="t-rlhf-training-job", labels={"app.kubernetes.io/instance": "t"},
    )  # fmt: skip
    return KubernetesExecutor(settings, api_client=plane.client(TRAINER_TOKEN))


def wait_for(predicate, what: str, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
