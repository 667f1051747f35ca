"""`helm install / upgrade / uninstall` of the chart on a real control plane.

etcd, kube-apiserver, kube-controller-manager and kube-scheduler (v1.33) run on loopback
with three simulated Nodes from KWOK (tests/executors/apiserver.py, `cluster`): the
scheduler places the pods, KWOK marks them Running and Ready (no kubelet, no containers,
no images pulled), and the controllers do the rest (Deployments, ReplicaSets, HPAs,
PDBs, the PV binder, the garbage collector).

Values: charts/rlhf/ci/autoscaling-values.yaml (HPAs and PDBs for every service and
Triton, the PrometheusRule and dashboard ConfigMap) plus the console, Strimzi
KafkaTopics, ServiceMonitors and the PyTorchJob RBAC, so every template renders
something. As a user would, the test first creates what the chart expects to exist:
the gRPC token and TLS Secrets (a self-signed certificate naming every service), the
console's two Secrets, two PersistentVolumes for the chart's claims (no provisioner
here), and MINIMAL CRDs for KafkaTopic, ServiceMonitor and PrometheusRule (the right
group, version, kind and scope, with an open schema: they check that the objects are
accepted and deleted, not the operators' validation, which tests/charts/crd_schemas.py
covers).

No metrics API is served, so the HPAs cannot compute utilisation; they still resolve
their target and hold it at minReplicas, which is what the test checks.

Binaries come from scripts/setup.d/20-helm.sh; missing ones skip the test, or fail it
under CI (CI set, as in .ci/run).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests.charts.helmtools import CHART, helm, render, tool
from tests.executors.apiserver import (
    ADMIN_TOKEN,
    BIN,
    CACHE_BIN,
    ControlPlane,
    cluster,
    missing_binaries,
)

pytestmark = pytest.mark.helm

NS = "ml"
RELEASE = "t"  # the release helmtools.render() renders
FULL = f"{RELEASE}-rlhf"
INSTANCE = f"app.kubernetes.io/instance={RELEASE}"
VALUES = (str(CHART / "ci" / "autoscaling-values.yaml"),)
SETS = (
    "console.enabled=true",
    f"console.tokens.existingSecret={RELEASE}-console-tokens",
    f"console.grpcToken.existingSecret={RELEASE}-console-grpc-token",
    "kafka.strimzi.enabled=true",
    "metrics.serviceMonitor.enabled=true",
    "trainingJobs.pytorchJob.enabled=true",
)
UPGRADED = "reward"  # the one service whose image tag the upgrade changes
NEW_TAG = "9.9.9-test"
SERVICES = ("dataprep", "trainer", "reward", "adversary", "inference")


def values_args(*extra: str) -> list[str]:
    args = []
    for path in VALUES:
        args += ["-f", path]
    for item in (*SETS, *extra):
        args += ["--set", item]
    return args


def rendered() -> tuple[dict[str, Any], ...]:
    objs = render(VALUES, SETS)
    hooks = [o for o in objs if "helm.sh/hook" in (o["metadata"].get("annotations") or {})]
    return tuple(o for o in objs if o not in hooks)  # `helm test` pods are not installed


def refs(objs) -> list[str]:
    """kubectl's kind.group/name of each object (e.g. kafkatopic.kafka.strimzi.io/x)."""
    out = []
    for o in objs:
        group = o["apiVersion"].rpartition("/")[0]
        out.append(f"{o['kind'].lower()}{'.' + group if group else ''}/{o['metadata']['name']}")
    return out


def wait_for(predicate: Callable[[], Any], what: str, plane: ControlPlane, timeout_s: float = 120):
    deadline = time.monotonic() + timeout_s
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            logs = {
                name: (plane.workdir / f"{name}.log").read_text()[-1500:]
                for name in ("kube-controller-manager", "kube-scheduler", "kwok")
            }
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}; logs: {logs}")
        time.sleep(0.5)


def minimal_crd(group: str, version: str, kind: str, plural: str) -> dict[str, Any]:
    open_schema = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"kind": kind, "plural": plural, "singular": kind.lower(),
                      "listKind": f"{kind}List"},
            "versions": [{
                "name": version, "served": True, "storage": True,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {"spec": open_schema, "status": open_schema},
                }},
            }],
        },
    }  # fmt: skip


CRDS = (
    minimal_crd("kafka.strimzi.io", "v1beta2", "KafkaTopic", "kafkatopics"),
    minimal_crd("monitoring.coreos.com", "v1", "ServiceMonitor", "servicemonitors"),
    minimal_crd("monitoring.coreos.com", "v1", "PrometheusRule", "prometheusrules"),
)


def tls_secret(workdir: Path) -> dict[str, Any]:
    """A kubernetes.io/tls Secret whose self-signed certificate names every service."""
    names = [f"{FULL}-{s}.{NS}.svc" for s in (*SERVICES, "triton")]
    key, crt = workdir / "grpc.key", workdir / "grpc.crt"
    # fmt: off
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "1", "-subj", f"/CN={names[0]}", "-keyout", str(key), "-out", str(crt),
         "-addext", "subjectAltName=" + ",".join(f"DNS:{n}" for n in names)],
        check=True, capture_output=True,
    )
    # fmt: on
    return {
        "metadata": {"name": f"{FULL}-grpc-tls"},
        "type": "kubernetes.io/tls",
        "stringData": {
            "tls.crt": crt.read_text(),
            "tls.key": key.read_text(),
            "ca.crt": crt.read_text(),
        },
    }  # fmt: skip


class Kube:
    """The API clients and the helm/kubectl commands of one cluster."""

    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane
        api = plane.client(ADMIN_TOKEN)
        self.core = client.CoreV1Api(api)
        self.apps = client.AppsV1Api(api)
        self.policy = client.PolicyV1Api(api)
        self.autoscaling = client.AutoscalingV2Api(api)
        self.crds = client.ApiextensionsV1Api(api)
        self.kubeconfig = str(plane.kubeconfig(ADMIN_TOKEN))

    def helm(self, *args: str) -> str:
        return helm(*args, "--kubeconfig", self.kubeconfig, "--namespace", NS).stdout

    def kubectl(self, *args: str) -> str:
        proc = subprocess.run(
            [tool("kubectl"), "--kubeconfig", self.kubeconfig, *args],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert proc.returncode == 0, f"kubectl {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
        return proc.stdout

    def deployments(self) -> dict[str, client.V1Deployment]:
        items = self.apps.list_namespaced_deployment(NS, label_selector=INSTANCE).items
        return {d.metadata.name: d for d in items}

    def replica_sets(self, deployment: str) -> dict[str, client.V1ReplicaSet]:
        return {
            rs.metadata.name: rs
            for rs in self.apps.list_namespaced_replica_set(NS).items
            if any(o.name == deployment for o in rs.metadata.owner_references or [])
        }

    def pods(self, deployment: client.V1Deployment) -> list[client.V1Pod]:
        labels = deployment.spec.selector.match_labels
        selector = ",".join(f"{k}={v}" for k, v in labels.items())
        return self.core.list_namespaced_pod(NS, label_selector=selector).items


def rolled_out(d: client.V1Deployment) -> bool:
    """`kubectl rollout status`: the controller saw the spec, every replica is new and ready."""
    s, want = d.status, d.spec.replicas
    return (
        (s.observed_generation or 0) >= d.metadata.generation
        and (s.updated_replicas or 0) == want
        and (s.replicas or 0) == want
        and (s.ready_replicas or 0) == want
        and (s.available_replicas or 0) == want
    )


def hpa_minimums() -> dict[str, int]:
    return {
        o["spec"]["scaleTargetRef"]["name"]: o["spec"]["minReplicas"]
        for o in rendered()
        if o["kind"] == "HorizontalPodAutoscaler"
    }


def settled(kube: Kube) -> bool:
    """Every Deployment rolled out, at its HPA's minReplicas, with its pods Running."""
    deployments = kube.deployments()
    expected = {o["metadata"]["name"] for o in rendered() if o["kind"] == "Deployment"}
    if set(deployments) != expected:
        return False
    minimums = hpa_minimums()
    for name, d in deployments.items():
        if name in minimums and d.spec.replicas != minimums[name]:
            return False
        if not rolled_out(d):
            return False
    return True


@pytest.fixture(scope="module")
def kube(tmp_path_factory) -> Iterator[Kube]:
    missing = missing_binaries()
    if missing:
        message = (
            f"{', '.join(missing)} not found in {BIN}, {CACHE_BIN} or PATH: "
            "run scripts/setup.d/20-helm.sh"
        )
        if os.environ.get("CI"):  # .ci/run builds them: missing there is a failure
            pytest.fail(message)
        pytest.skip(message)
    workdir = tmp_path_factory.mktemp("k8s-cluster")
    with cluster(workdir, {}) as plane:
        k = Kube(plane)
        k.core.create_namespace({"metadata": {"name": NS}})
        for crd in CRDS:
            k.crds.create_custom_resource_definition(crd)
        for crd in CRDS:
            wait_for(
                lambda crd=crd: any(
                    c.type == "Established" and c.status == "True"
                    for c in k.crds.read_custom_resource_definition(
                        crd["metadata"]["name"]
                    ).status.conditions
                    or []
                ),
                f"CRD {crd['metadata']['name']} established",
                plane,
            )
        secrets = [
            tls_secret(workdir),
            {"metadata": {"name": f"{FULL}-grpc-tokens"},
             "stringData": {"tokens": "token-a\ntoken-b\n"}},
            {"metadata": {"name": f"{RELEASE}-console-tokens"},
             "stringData": {"tokens": "t1 alice operator\n"}},
            {"metadata": {"name": f"{RELEASE}-console-grpc-token"},
             "stringData": {"token": "token-a"}},
        ]  # fmt: skip
        for secret in secrets:
            k.core.create_namespaced_secret(NS, secret)
        for claim in (o for o in rendered() if o["kind"] == "PersistentVolumeClaim"):
            size = claim["spec"]["resources"]["requests"]["storage"]
            k.core.create_persistent_volume(
                {
                    "metadata": {"name": f"pv-{claim['metadata']['name']}"},
                    "spec": {
                        "capacity": {"storage": size},
                        "accessModes": claim["spec"]["accessModes"],
                        "hostPath": {"path": f"/srv/{claim['metadata']['name']}"},
                        "claimRef": {"namespace": NS, "name": claim["metadata"]["name"]},
                    },
                }
            )
        yield k


@pytest.fixture(scope="module")
def installed(kube: Kube) -> Kube:
    started = time.monotonic()
    kube.helm("install", RELEASE, str(CHART), *values_args(), "--wait", "--timeout", "90s")
    wait_for(lambda: settled(kube), "every Deployment rolled out at its HPA minimum", kube.plane)
    print(f"install + rollout: {time.monotonic() - started:.1f} s")
    return kube


def test_install_rolls_out_every_workload(installed: Kube) -> None:
    kube = installed
    objs = rendered()
    deployments = kube.deployments()
    expected = {o["metadata"]["name"] for o in objs if o["kind"] == "Deployment"}
    assert set(deployments) == expected
    assert {f"{FULL}-{s}" for s in (*SERVICES, "triton", "console")} == expected
    assert not [o for o in objs if o["kind"] == "StatefulSet"]  # the chart renders none
    nodes = {n.metadata.name for n in kube.core.list_node().items}
    for name, d in deployments.items():
        pods = kube.pods(d)
        assert len(pods) == d.spec.replicas >= 1, name
        for pod in pods:
            assert pod.spec.node_name in nodes, f"{pod.metadata.name} not scheduled"
            assert pod.status.phase == "Running", pod.metadata.name
            ready = {c.type: c.status for c in pod.status.conditions}
            assert ready.get("Ready") == "True", pod.metadata.name
    for claim in (o for o in objs if o["kind"] == "PersistentVolumeClaim"):
        pvc = kube.core.read_namespaced_persistent_volume_claim(claim["metadata"]["name"], NS)
        assert pvc.status.phase == "Bound", claim["metadata"]["name"]
    # Every rendered object exists: the API server (and the minimal CRDs) accepted it.
    assert {o["metadata"].get("namespace", NS) for o in objs} == {NS}
    found = kube.kubectl("get", "-n", NS, "-o", "name", *refs(objs)).split()
    assert len(found) == len(objs)
    status = json.loads(kube.helm("status", RELEASE, "-o", "json"))
    assert status["info"]["status"] == "deployed"


def test_pdbs_and_hpas_are_accepted_and_reconciled(installed: Kube) -> None:
    kube = installed
    objs = rendered()
    deployments = kube.deployments()

    pdbs = {p.metadata.name: p for p in kube.policy.list_namespaced_pod_disruption_budget(NS).items}
    want_pdbs = {o["metadata"]["name"] for o in objs if o["kind"] == "PodDisruptionBudget"}
    assert len(want_pdbs) == 6 and set(pdbs) == want_pdbs

    def pdbs_current() -> bool:
        current = kube.policy.list_namespaced_pod_disruption_budget(NS).items
        return all((p.status.observed_generation or 0) >= p.metadata.generation for p in current)

    wait_for(pdbs_current, "the disruption controller to observe every PDB", kube.plane)
    for pdb in kube.policy.list_namespaced_pod_disruption_budget(NS).items:
        # Its selector matches exactly its Deployment's pods, all healthy.
        replicas = deployments[pdb.metadata.name].spec.replicas
        assert pdb.status.expected_pods == replicas, pdb.metadata.name
        assert pdb.status.current_healthy == replicas, pdb.metadata.name

    hpas = kube.autoscaling.list_namespaced_horizontal_pod_autoscaler(NS).items
    want_hpas = [o for o in objs if o["kind"] == "HorizontalPodAutoscaler"]
    assert len(want_hpas) == 6
    assert {h.metadata.name for h in hpas} == {o["metadata"]["name"] for o in want_hpas}
    assert any(o["spec"]["minReplicas"] > 1 for o in want_hpas)  # so one visibly scales

    def able_to_scale(name: str):
        hpa = kube.autoscaling.read_namespaced_horizontal_pod_autoscaler(name, NS)
        return next((c for c in hpa.status.conditions or [] if c.type == "AbleToScale"), None)

    for hpa in want_hpas:
        name, target = hpa["metadata"]["name"], hpa["spec"]["scaleTargetRef"]["name"]
        # The HPA controller found its scaleTargetRef (a wrong one: AbleToScale False,
        # FailedGetScale) and, without metrics, holds the Deployment at minReplicas.
        condition = wait_for(lambda n=name: able_to_scale(n), f"HPA {name} reconciled", kube.plane)
        assert condition.status == "True", f"{name}: {condition.reason}: {condition.message}"
        assert deployments[target].spec.replicas == hpa["spec"]["minReplicas"], name
        rendered_deployment = next(
            o for o in objs if o["kind"] == "Deployment" and o["metadata"]["name"] == target
        )
        assert "replicas" not in rendered_deployment["spec"]  # left to the HPA


def snapshot(kube: Kube) -> dict[str, dict[str, Any]]:
    out = {}
    for name, d in kube.deployments().items():
        out[name] = {
            "generation": d.metadata.generation,
            "replica_sets": {rs.metadata.uid for rs in kube.replica_sets(name).values()},
            "pods": {p.metadata.uid for p in kube.pods(d)},
            "images": [c.image for c in d.spec.template.spec.containers],
        }
    return out


def test_upgrade_of_one_image_tag_rolls_only_that_deployment(installed: Kube) -> None:
    kube = installed
    before = snapshot(kube)
    target = f"{FULL}-{UPGRADED}"
    kube.helm(
        "upgrade", RELEASE, str(CHART),
        *values_args(f"services.{UPGRADED}.image.tag={NEW_TAG}"), "--wait", "--timeout", "90s",
    )  # fmt: skip

    def target_rolled() -> bool:
        d = kube.deployments()[target]
        return d.metadata.generation > before[target]["generation"] and rolled_out(d)

    wait_for(target_rolled, f"{target} to roll out the new image", kube.plane)
    wait_for(lambda: settled(kube), "every Deployment settled after the upgrade", kube.plane)
    after = snapshot(kube)

    # The upgraded Deployment: a new generation, a new ReplicaSet running the new tag,
    # the old ReplicaSet scaled to zero, every pod replaced.
    assert after[target]["generation"] == before[target]["generation"] + 1
    assert all(image.endswith(f":{NEW_TAG}") for image in after[target]["images"])
    assert not any(image.endswith(f":{NEW_TAG}") for image in before[target]["images"])
    new_sets = after[target]["replica_sets"] - before[target]["replica_sets"]
    assert len(new_sets) == 1
    for rs in kube.replica_sets(target).values():
        image = rs.spec.template.spec.containers[0].image
        if rs.metadata.uid in new_sets:
            assert image.endswith(f":{NEW_TAG}") and rs.status.ready_replicas == rs.spec.replicas
        else:
            assert rs.spec.replicas == 0, rs.metadata.name
    assert after[target]["pods"].isdisjoint(before[target]["pods"])

    # Every other Deployment is untouched: same generation, ReplicaSets, pods, images.
    others = set(before) - {target}
    assert len(others) >= 6  # the other services, Triton, the console
    for name in others:
        assert after[name] == before[name], name
    history = json.loads(kube.helm("history", RELEASE, "-o", "json"))
    assert [h["revision"] for h in history] == [1, 2] and history[-1]["status"] == "deployed"


def test_uninstall_leaves_nothing_behind(installed: Kube) -> None:
    kube = installed
    objs = rendered()
    kept = {
        (o["kind"], o["metadata"]["name"])
        for o in objs
        if (o["metadata"].get("annotations") or {}).get("helm.sh/resource-policy") == "keep"
    }
    assert kept == {
        ("PersistentVolumeClaim", f"{FULL}-artifacts"),
        ("PersistentVolumeClaim", f"{FULL}-models"),
    }
    kube.helm("uninstall", RELEASE, "--wait", "--timeout", "90s")

    # Every listable resource type the API server serves (built-in, CRDs; namespaced and
    # cluster-scoped), by the release's label: only the kept claims may remain, once the
    # garbage collector and KWOK have removed the ReplicaSets, pods and EndpointSlices.
    types = kube.kubectl("api-resources", "--verbs=list", "-o", "name").split()
    assert {"pods", "replicasets.apps", "kafkatopics.kafka.strimzi.io"} <= set(types)
    want = {f"persistentvolumeclaim/{name}" for _, name in kept}

    def leftovers() -> set[str]:
        out = kube.kubectl("get", ",".join(types), "-A", "-l", INSTANCE, "-o", "name")
        found = set()
        for line in out.split():  # e.g. deployment.apps/r-rlhf-trainer
            kind, name = line.split("/", 1)
            found.add(f"{kind.split('.', 1)[0]}/{name}")
        return found

    wait_for(lambda: leftovers() == want, f"only {sorted(want)} left", kube.plane, 120)
    # By name as well (an object without the label would escape the query above).
    gone = [o for o in objs if (o["kind"], o["metadata"]["name"]) not in kept]
    left = kube.kubectl("get", "-n", NS, "--ignore-not-found", "-o", "name", *refs(gone))
    assert left == "", f"left behind: {left}"
    # No pods, ReplicaSets or release records (helm's Secrets) of any kind remain.
    assert kube.kubectl("get", "pods,replicasets", "-n", NS, "-o", "name") == ""
    assert kube.kubectl("get", "secrets", "-n", NS, "-l", "owner=helm", "-o", "name") == ""
    gone = helm("status", RELEASE, "--kubeconfig", kube.kubeconfig, "-n", NS, check=False)
    assert gone.returncode != 0 and "not found" in gone.stderr, gone.stdout
