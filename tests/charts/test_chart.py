"""The Helm chart, rendered offline: lint, Kubernetes 1.33 schemas, hardening, RBAC, wiring."""

from __future__ import annotations

import importlib
import json
import shutil
import subprocess
import sys
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from pydantic import BaseModel

from rlhf.executors.kubernetes import (
    PYTORCHJOB_RBAC_RULE,
    REQUIRED_RBAC_RULES,
    KubernetesExecutorSettings,
)
from rlhf.runtime.settings import Settings, load_settings
from tests.charts.crd_schemas import BY_KIND
from tests.charts.helmtools import (
    CHART,
    CI_VALUES,
    K8S_VERSION,
    SERVICES,
    by_name,
    env_of,
    helm,
    of_kind,
    pod_specs,
    render,
    render_error,
)

pytestmark = pytest.mark.helm

VARIANTS = {"default": ()} | {p.name.removesuffix("-values.yaml"): (str(p),) for p in CI_VALUES}


def test_ci_values_cover_the_required_variants() -> None:
    assert {"minimal", "gpu-inference", "autoscaling", "external-kafka-tls-sasl"} <= set(VARIANTS)


@pytest.mark.parametrize("variant", VARIANTS)
def test_lint_strict_is_clean(variant: str) -> None:
    args = ["lint", "--strict", str(CHART)]
    for path in VARIANTS[variant]:
        args += ["-f", path]
    out = helm(*args).stdout
    assert "0 chart(s) failed" in out
    assert "[WARNING]" not in out and "[ERROR]" not in out, out


def test_kubernetes_validate_knows_1_33_and_is_strict() -> None:
    assert (
        kubernetes_validate.validate(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}},
            K8S_VERSION,
            strict=True,
        )
        == "1.33"
    )
    bad = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "x"},
        "spec": {"ports": [{"port": 1}], "typo": True},
    }
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_object_validates_against_kubernetes_1_33(variant: str) -> None:
    objs = render(VARIANTS[variant])
    assert objs
    for obj in objs:
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        if obj["kind"] in BY_KIND:
            jsonschema.validate(obj, BY_KIND[obj["kind"]])
            continue
        try:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{variant}: {where}: {exc.message} at {list(exc.path)}")


def _closed(schema: dict[str, Any], path: str = "$") -> list[str]:
    """Paths of objects in the values schema that accept unknown keys."""
    open_paths = []
    if "properties" in schema and schema.get("additionalProperties") is not False:
        open_paths.append(path)
    for key, sub in schema.get("properties", {}).items():
        open_paths += _closed(sub, f"{path}.{key}")
    for key, sub in schema.get("definitions", {}).items():
        open_paths += _closed(sub, f"#/definitions/{key}")
    return open_paths


def test_values_schema_rejects_unknown_keys_everywhere() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert _closed(schema) == []


def test_values_schema_is_the_generators_output() -> None:
    generator = CHART / "hack" / "gen_values_schema.py"
    out = subprocess.run(
        [sys.executable, str(generator)], capture_output=True, text=True, check=True
    )
    committed = json.loads((CHART / "values.schema.json").read_text())
    assert json.loads(out.stdout) == committed, (
        f"regenerate: python {generator} > values.schema.json"
    )


@pytest.mark.parametrize(
    ("setting", "named"),
    [
        ("services.trainer.replicas=2", "replicas"),  # replicaCount
        ("tirton.enabled=true", "tirton"),
        ("kafka.bootstrapServer=x:9092", "bootstrapServer"),
        ("services.inference.autoscaling.maxReplica=3", "maxReplica"),
        ("services.trainning.enabled=true", "trainning"),
        # inside an embedded Kubernetes type: the API server would drop it silently
        ("containerSecurityContext.readOnlyRootFileSystem=true", "readOnlyRootFileSystem"),
    ],
)
def test_typo_key_fails_schema_validation(setting: str, named: str) -> None:
    err = render_error(setting)
    assert "values don't meet the specifications of the schema" in err or "schema" in err
    assert named in err


@pytest.mark.parametrize(
    "setting",
    [
        "grpc.port=http",
        "services.trainer.replicaCount=-1",
        "kafka.securityProtocol=TLS",
        "triton.modelRepository.type=nfs",
    ],
)
def test_wrong_type_or_value_fails_schema_validation(setting: str) -> None:
    assert "schema" in render_error(setting)


@pytest.mark.parametrize(
    ("setting", "named"),
    [
        ("kafka.securityProtocol=SASL_SSL", "kafka.sasl.mechanism"),
        ("artifacts.objectStorage.enabled=true", "artifacts.objectStorage.uri"),
    ],
)
def test_missing_secret_fails_with_the_key_to_set(setting: str, named: str) -> None:
    assert named in render_error(setting)


def test_default_values_turn_auth_and_tls_on_with_named_secrets() -> None:
    objs = render()
    for name in SERVICES:
        spec = by_name(objs, "Deployment", f"t-rlhf-{name}")["spec"]["template"]["spec"]
        env = env_of(spec["containers"][0])
        assert env["RLHF_GRPC__AUTH_ENABLED"] == "true", name
        assert env["RLHF_GRPC__AUTH_TOKENS_FILE"] == "/etc/rlhf/auth/tokens", name
        assert env["RLHF_GRPC__TLS_CERT_FILE"] == "/etc/rlhf/tls/tls.crt", name
        assert env["RLHF_GRPC__TLS_KEY_FILE"] == "/etc/rlhf/tls/tls.key", name
        secrets = {v["name"]: v["secret"]["secretName"] for v in spec["volumes"] if "secret" in v}
        # Default Secret names the operator creates: <fullname>-grpc-tokens / -grpc-tls.
        assert secrets == {"auth-tokens": "t-rlhf-grpc-tokens", "grpc-tls": "t-rlhf-grpc-tls"}
    test_pod = of_kind(objs, "Pod")[0]["spec"]
    command = test_pod["containers"][0]["command"]
    assert "--token-file" in command and "--ca" in command
    assert {v["secret"]["secretName"] for v in test_pod["volumes"] if "secret" in v} == {
        "t-rlhf-grpc-tokens",
        "t-rlhf-grpc-tls",
    }
    assert not of_kind(objs, "Secret"), "the chart creates no Secret"
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["grpc"]["auth"]["enabled"] is True and values["grpc"]["tls"]["enabled"] is True
    assert values["grpc"]["auth"]["allowWithoutTLS"] is False
    assert values["networkPolicy"]["allowExternal"] is False


def test_existing_secret_names_override_the_defaults() -> None:
    objs = render((), ("grpc.auth.existingSecret=tok", "grpc.tls.existingSecret=cert"))
    spec = by_name(objs, "Deployment", "t-rlhf-reward")["spec"]["template"]["spec"]
    secrets = {v["name"]: v["secret"]["secretName"] for v in spec["volumes"] if "secret" in v}
    assert secrets == {"auth-tokens": "tok", "grpc-tls": "cert"}


def test_auth_without_tls_is_refused_with_the_values_to_set() -> None:
    err = render_error("grpc.tls.enabled=false")
    assert "grpc.auth.enabled=true with grpc.tls.enabled=false" in err
    assert "clear text" in err
    for value in ("grpc.tls.enabled=true", "grpc.auth.allowWithoutTLS=true"):
        assert value in err


def test_auth_without_tls_renders_when_explicitly_allowed() -> None:
    objs = render((), ("grpc.tls.enabled=false", "grpc.auth.allowWithoutTLS=true"))
    dep = by_name(objs, "Deployment", "t-rlhf-trainer")
    container = dep["spec"]["template"]["spec"]["containers"][0]
    env = env_of(container)
    assert env["RLHF_GRPC__AUTH_ENABLED"] == "true"
    assert not any(k.startswith("RLHF_GRPC__TLS") for k in env)
    assert container["readinessProbe"]["grpc"] == {"port": 50051}  # plaintext: native probe
    notes = helm(
        "install", "t", str(CHART), "-n", "ml", "--dry-run=client",
        "--set", "grpc.tls.enabled=false", "--set", "grpc.auth.allowWithoutTLS=true",
    ).stdout  # fmt: skip
    assert "gRPC TLS is off" in notes and "clear text" in notes
    # Both off renders too (with the NOTES warning); TLS alone needs no flag.
    assert render((), ("grpc.tls.enabled=false", "grpc.auth.enabled=false"))
    assert render((), ("grpc.auth.enabled=false",))


HARDENED = {
    "runAsNonRoot": True,
    "readOnlyRootFilesystem": True,
    "allowPrivilegeEscalation": False,
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_container_is_hardened_with_resources(variant: str) -> None:
    specs = pod_specs(render(VARIANTS[variant]))
    assert specs
    for where, spec in specs:
        assert spec["securityContext"]["runAsNonRoot"] is True, where
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", where
        writable = {m["mountPath"] for c in spec["containers"] for m in c.get("volumeMounts", [])}
        assert "/tmp" in writable, f"{where}: read-only root needs an emptyDir on /tmp"
        for container in spec.get("initContainers", []) + spec["containers"]:
            sc = container["securityContext"]
            for key, value in HARDENED.items():
                assert sc.get(key) is value, f"{where}/{container['name']}: {key}"
            assert sc["capabilities"]["drop"] == ["ALL"], where
            assert "add" not in sc["capabilities"], where
            assert sc["seccompProfile"]["type"] == "RuntimeDefault", where
            assert sc.get("privileged", False) is False, where
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][kind]), f"{where}: {kind}"


@pytest.mark.parametrize("variant", VARIANTS)
def test_deployments_have_three_probes(variant: str) -> None:
    objs = render(VARIANTS[variant])
    tls = True  # on by default and in every ci variant
    for dep in of_kind(objs, "Deployment"):
        component = dep["metadata"]["labels"]["app.kubernetes.io/component"]
        for container in dep["spec"]["template"]["spec"]["containers"]:
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                p = container[probe]
                if component in SERVICES and not tls:
                    assert p["grpc"] == {"port": 50051}, f"{dep['metadata']['name']}: {probe}"
                elif component in SERVICES:
                    # kubelet's gRPC probe has no TLS: the chart's health script runs instead
                    assert p["exec"]["command"][:2] == [
                        "python",
                        "/etc/rlhf/scripts/grpc_health.py",
                    ]
                    assert "--ca" in p["exec"]["command"]
                else:
                    assert p["httpGet"]["path"].startswith("/v2/health/")


def test_default_install_has_all_services_and_triton() -> None:
    objs = render()
    deployments = {d["metadata"]["name"] for d in of_kind(objs, "Deployment")}
    assert deployments == {f"t-rlhf-{s}" for s in (*SERVICES, "triton")}
    for name in SERVICES:
        svc = by_name(objs, "Service", f"t-rlhf-{name}")
        ports = {p["name"]: p["port"] for p in svc["spec"]["ports"]}
        assert ports == {"grpc": 50051, "metrics": 9090}
        dep = by_name(objs, "Deployment", f"t-rlhf-{name}")
        container = dep["spec"]["template"]["spec"]["containers"][0]
        assert container["args"] == ["serve", name]
        assert container["image"] == f"ghcr.io/rlhf-platform/rlhf-{name}:0.1.0"
    triton = by_name(objs, "Service", "t-rlhf-triton")
    assert sorted(p["port"] for p in triton["spec"]["ports"]) == [8000, 8001, 8002]


def _settings_class(service: str) -> type[BaseModel]:
    """The class `rlhf serve <service>` loads its settings with (src/rlhf/cli/serve.py)."""
    module = importlib.import_module(f"rlhf.services.{service}.server")
    return getattr(module, "SETTINGS_CLASS", Settings)


def _has_field(model: type[BaseModel], parts: list[str]) -> bool:
    field = model.model_fields.get(parts[0])
    if field is None:
        return False
    if len(parts) == 1:
        return True
    nested = field.annotation
    is_model = isinstance(nested, type) and issubclass(nested, BaseModel)
    return is_model and _has_field(nested, parts[1:])


# Read outside the settings classes: rlhf.pipelines reads RLHF_PIPELINES_DIR; nothing reads
# RLHF_ARTIFACT_URI yet (object-storage artifacts need an artifact store that does).
_OTHER_ENV = {"RLHF_PIPELINES_DIR", "RLHF_ARTIFACT_URI"}


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_rlhf_variable_is_read_by_the_services_settings(variant: str) -> None:
    """Each RLHF_* the chart sets names a field of the service's settings class (or of
    KubernetesExecutorSettings), and the plain values load without a ConfigError."""
    for dep in of_kind(render(VARIANTS[variant]), "Deployment"):
        service = dep["metadata"]["labels"]["app.kubernetes.io/component"]
        if service not in SERVICES:
            continue
        env = env_of(dep["spec"]["template"]["spec"]["containers"][0])
        settings_cls = _settings_class(service)
        for name in env:
            if not name.startswith("RLHF_") or name in _OTHER_ENV:
                continue
            parts = name.removeprefix("RLHF_").lower().split("__")
            if parts[0] == "kubernetes":
                assert service == "trainer", name
                assert _has_field(KubernetesExecutorSettings, parts[1:]), name
            else:
                assert _has_field(settings_cls, parts), f"{service}: {name} is read by nothing"
        plain = {k: v for k, v in env.items() if k.startswith("RLHF_") and isinstance(v, str)}
        with pytest.MonkeyPatch.context() as mp:
            for key, value in plain.items():
                mp.setenv(key, value)
            settings = load_settings(settings_cls)
            assert settings.grpc.host == "0.0.0.0" and settings.bus == "kafka"
            if service == "trainer" and "RLHF_KUBERNETES__IMAGE" in plain:
                KubernetesExecutorSettings()  # JSON maps and lists parse


def test_services_listen_on_all_interfaces_with_kafka_and_metrics() -> None:
    dep = by_name(render(), "Deployment", "t-rlhf-reward")
    env = env_of(dep["spec"]["template"]["spec"]["containers"][0])
    assert env["RLHF_GRPC__HOST"] == "0.0.0.0"
    assert env["RLHF_GRPC__PORT"] == "50051"
    assert env["RLHF_BUS"] == "kafka"
    assert env["RLHF_TELEMETRY__METRICS_PORT"] == "9090"
    assert env["RLHF_ARTIFACT_DIR"] == "/var/lib/rlhf/artifacts"


def test_inference_points_at_triton_and_shares_its_model_repository() -> None:
    objs = render()
    spec = by_name(objs, "Deployment", "t-rlhf-inference")["spec"]["template"]["spec"]
    env = env_of(spec["containers"][0])
    assert env["RLHF_SERVING__TRITON_URL"] == "t-rlhf-triton:8001"
    assert env["RLHF_SERVING__MODEL_REPOSITORY"] == "/models"
    claims = {
        v["persistentVolumeClaim"]["claimName"]
        for v in spec["volumes"]
        if "persistentVolumeClaim" in v
    }
    assert "t-rlhf-models" in claims
    triton = by_name(objs, "Deployment", "t-rlhf-triton")["spec"]["template"]["spec"]
    assert "t-rlhf-models" in {
        v.get("persistentVolumeClaim", {}).get("claimName") for v in triton["volumes"]
    }
    assert "--model-repository=/models" in triton["containers"][0]["args"]


def _container(objs: tuple[dict[str, Any], ...], deployment: str) -> dict[str, Any]:
    return by_name(objs, "Deployment", deployment)["spec"]["template"]["spec"]["containers"][0]


@pytest.mark.parametrize("variant", ["default", "gpu-inference"])
def test_inference_controls_every_triton_pod_through_a_headless_service(variant: str) -> None:
    """Loads reach each Triton replica: the headless Service resolves to every ready
    Triton pod, and the inference service is told its DNS name (issue 21, item 5)."""
    objs = render(VARIANTS[variant])
    triton = by_name(objs, "Deployment", "t-rlhf-triton")
    service = by_name(objs, "Service", "t-rlhf-triton")
    headless = by_name(objs, "Service", "t-rlhf-triton-headless")
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is False  # what the Service serves
    assert headless["spec"]["selector"] == service["spec"]["selector"]
    assert (
        headless["spec"]["selector"].items()
        <= triton["spec"]["template"]["metadata"]["labels"].items()
    )
    assert [(p["name"], p["port"], p["targetPort"]) for p in headless["spec"]["ports"]] == [
        ("grpc", 8001, "grpc")
    ]
    env = env_of(_container(objs, "t-rlhf-inference"))
    assert env["RLHF_SERVING__TRITON_URL"] == "t-rlhf-triton:8001"  # requests: the Service
    assert env["RLHF_SERVING__TRITON_REPLICAS"] == "t-rlhf-triton-headless.ml.svc:8001"
    assert env["RLHF_SERVING__MODEL_CONTROL"] == "explicit"
    assert env["RLHF_SERVING__REPLICA_RESYNC_S"] == "10"
    assert "--model-control-mode=explicit" in _container(objs, "t-rlhf-triton")["args"]
    if variant == "gpu-inference":
        assert triton["spec"]["replicas"] == 2


def test_poll_mode_tells_the_inference_service_and_keeps_the_headless_service() -> None:
    objs = render((), ("triton.modelControlMode=poll", "triton.replicaResyncSeconds=30"))
    args = _container(objs, "t-rlhf-triton")["args"]
    assert "--model-control-mode=poll" in args and "--repository-poll-secs=30" in args
    assert "--load-model=*" not in args
    env = env_of(_container(objs, "t-rlhf-inference"))
    assert env["RLHF_SERVING__MODEL_CONTROL"] == "poll"
    assert env["RLHF_SERVING__REPLICA_RESYNC_S"] == "30"
    assert env["RLHF_SERVING__TRITON_REPLICAS"] == "t-rlhf-triton-headless.ml.svc:8001"
    assert by_name(objs, "Service", "t-rlhf-triton-headless")["spec"]["clusterIP"] == "None"


def test_without_triton_there_is_no_headless_service_or_replica_setting() -> None:
    objs = render((), ("triton.enabled=false",))
    assert "t-rlhf-triton-headless" not in {s["metadata"]["name"] for s in of_kind(objs, "Service")}
    assert "RLHF_SERVING__TRITON_REPLICAS" not in env_of(_container(objs, "t-rlhf-inference"))


def test_gpu_inference_requests_gpus_on_gpu_nodes() -> None:
    objs = render(VARIANTS["gpu-inference"])
    spec = by_name(objs, "Deployment", "t-rlhf-triton")["spec"]["template"]["spec"]
    assert spec["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert spec["tolerations"][0]["key"] == "nvidia.com/gpu"
    default_triton = by_name(render(), "Deployment", "t-rlhf-triton")["spec"]["template"]["spec"]
    assert "nvidia.com/gpu" not in default_triton["containers"][0]["resources"]["limits"]


def test_pdb_and_hpa_appear_only_when_enabled() -> None:
    all_off = tuple(f"services.{s}.pdb.enabled=false" for s in SERVICES)
    objs = render((), all_off)
    assert of_kind(objs, "PodDisruptionBudget") == []
    assert of_kind(objs, "HorizontalPodAutoscaler") == []
    for dep in of_kind(objs, "Deployment"):
        assert "replicas" in dep["spec"]

    objs = render(
        (), ("services.reward.pdb.enabled=true", "services.reward.autoscaling.enabled=true")
    )
    pdbs = {p["metadata"]["name"] for p in of_kind(objs, "PodDisruptionBudget")}
    assert pdbs == {"t-rlhf-reward", "t-rlhf-inference"}  # inference's is on by default
    assert [h["metadata"]["name"] for h in of_kind(objs, "HorizontalPodAutoscaler")] == [
        "t-rlhf-reward"
    ]
    assert "replicas" not in by_name(objs, "Deployment", "t-rlhf-reward")["spec"]


def test_autoscaling_variant_scales_every_deployment_on_cpu_and_kafka_lag() -> None:
    objs = render(VARIANTS["autoscaling"])
    hpas = {
        h["spec"]["scaleTargetRef"]["name"]: h for h in of_kind(objs, "HorizontalPodAutoscaler")
    }
    deployments = {d["metadata"]["name"] for d in of_kind(objs, "Deployment")}
    assert set(hpas) == deployments
    for name, hpa in hpas.items():
        assert "replicas" not in by_name(objs, "Deployment", name)["spec"]
        types = [m["type"] for m in hpa["spec"]["metrics"]]
        assert "Resource" in types, name
    lag = [m for m in hpas["t-rlhf-dataprep"]["spec"]["metrics"] if m["type"] == "External"]
    assert lag[0]["external"]["metric"]["name"] == "kafka_consumergroup_lag"
    assert (
        lag[0]["external"]["metric"]["selector"]["matchLabels"]["consumergroup"] == "rlhf-dataprep"
    )
    pdbs = {p["metadata"]["name"] for p in of_kind(objs, "PodDisruptionBudget")}
    assert pdbs == deployments


def _rules(role: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def test_rbac_grants_exactly_what_the_executor_needs() -> None:
    objs = render()
    assert of_kind(objs, "ClusterRole") == [] and of_kind(objs, "ClusterRoleBinding") == []
    roles = of_kind(objs, "Role")
    assert len(roles) == 1
    expected = _rules({"rules": list(REQUIRED_RBAC_RULES)})
    assert _rules(roles[0]) == expected
    assert not any("*" in part for rule in _rules(roles[0]) for part in rule)
    binding = of_kind(objs, "RoleBinding")[0]
    assert binding["roleRef"]["name"] == roles[0]["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "t-rlhf-trainer", "namespace": "ml"}
    ]
    # Only the trainer's pods carry an API token.
    for dep in of_kind(objs, "Deployment"):
        spec = dep["spec"]["template"]["spec"]
        assert spec["automountServiceAccountToken"] is (dep["metadata"]["name"] == "t-rlhf-trainer")
    for sa in of_kind(objs, "ServiceAccount"):
        assert sa["automountServiceAccountToken"] is False


def test_rbac_adds_pytorchjobs_only_when_enabled_and_nothing_for_local_training() -> None:
    role = of_kind(render(VARIANTS["gpu-inference"]), "Role")[0]
    assert _rules(role) == _rules({"rules": [*REQUIRED_RBAC_RULES, PYTORCHJOB_RBAC_RULE]})
    objs = render(VARIANTS["minimal"])
    assert of_kind(objs, "Role") == [] and of_kind(objs, "RoleBinding") == []
    trainer = by_name(objs, "Deployment", "t-rlhf-trainer")["spec"]["template"]["spec"]
    assert trainer["automountServiceAccountToken"] is False


def test_trainer_gets_the_executor_settings_the_executor_reads() -> None:
    dep = by_name(render(VARIANTS["gpu-inference"]), "Deployment", "t-rlhf-trainer")
    env = {
        k.removeprefix("RLHF_KUBERNETES__").lower(): v
        for k, v in env_of(dep["spec"]["template"]["spec"]["containers"][0]).items()
        if k.startswith("RLHF_KUBERNETES__") and isinstance(v, str)
    }
    settings = KubernetesExecutorSettings(
        **{k: json.loads(v) if v[:1] in "[{" else v for k, v in env.items()}
    )
    assert settings.artifact_claim == "t-rlhf-artifacts"
    assert settings.service_account == "t-rlhf-training-job"
    assert settings.pytorch_job is True
    assert settings.tolerations[0]["key"] == "nvidia.com/gpu"
    assert settings.resources["limits"]["memory"] == "128Gi"
    assert settings.labels["app.kubernetes.io/instance"] == "t"


def test_network_policies_cover_every_pod_and_only_declared_paths() -> None:
    objs = render()
    policies = of_kind(objs, "NetworkPolicy")
    selected = [p["spec"]["podSelector"]["matchLabels"] for p in policies]
    for dep in of_kind(objs, "Deployment"):
        labels = dep["spec"]["template"]["metadata"]["labels"]
        assert any(sel.items() <= labels.items() for sel in selected), dep["metadata"]["name"]
    for policy in policies:
        assert sorted(policy["spec"]["policyTypes"]) == ["Egress", "Ingress"]
    triton = by_name(objs, "NetworkPolicy", "t-rlhf-triton")
    serving = triton["spec"]["ingress"][0]
    assert (
        serving["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
        == "inference"
    )
    inference = by_name(objs, "NetworkPolicy", "t-rlhf-inference")
    to_triton = [
        r for r in inference["spec"]["egress"] if any(p["port"] == 8001 for p in r.get("ports", []))
    ]
    assert (
        to_triton
        and to_triton[0]["to"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
        == "triton"
    )
    reward = by_name(objs, "NetworkPolicy", "t-rlhf-reward")
    egress_ports = {p["port"] for r in reward["spec"]["egress"] for p in r.get("ports", [])}
    assert egress_ports == {53, 9092, 9093}  # DNS and Kafka only; no API server, no Triton
    trainer = by_name(objs, "NetworkPolicy", "t-rlhf-trainer")
    assert {443, 6443} <= {p["port"] for r in trainer["spec"]["egress"] for p in r.get("ports", [])}


def _egress_kinds(policy: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The policy's egress rules by what they reach (each rule must name its ports)."""
    kinds = {}
    for rule in policy["spec"]["egress"]:
        ports = {p["port"] for p in rule["ports"]}  # a rule without ports would open all
        kind = {
            frozenset({53}): "dns",
            frozenset({9092, 9093}): "kafka",
            frozenset({443, 6443}): "kube-api",
            frozenset({8000, 8001}): "triton",
        }[frozenset(ports)]
        kinds[kind] = rule
    return kinds


def test_default_egress_is_dns_kafka_and_the_api_server_only() -> None:
    objs = render()
    for name in SERVICES:
        policy = by_name(objs, "NetworkPolicy", f"t-rlhf-{name}")
        kinds = _egress_kinds(policy)
        expected = {"dns", "kafka"} | {"trainer": {"kube-api"}, "inference": {"triton"}}.get(
            name, set()
        )
        assert set(kinds) == expected, name
        assert len(policy["spec"]["egress"]) == len(expected), name
        dns = kinds["dns"]["to"][0]
        assert dns["namespaceSelector"]["matchLabels"] == {
            "kubernetes.io/metadata.name": "kube-system"
        }
        assert dns["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"}
        # The default bootstrap kafka-kafka-bootstrap.kafka.svc:9092: the kafka namespace only.
        assert kinds["kafka"]["to"] == [
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kafka"}}}
        ]
        grpc_in, metrics_in = policy["spec"]["ingress"]
        assert grpc_in["ports"] == [{"port": 50051, "protocol": "TCP"}]
        assert {"t-rlhf-client": "true"} in [
            p["podSelector"]["matchLabels"] for p in grpc_in["from"]
        ]
        assert metrics_in["ports"] == [{"port": 9090, "protocol": "TCP"}]  # scrapes: ingress


@pytest.mark.parametrize(
    ("bootstrap", "namespaces"),
    [
        ("a.kafka.svc:9092", ["kafka"]),
        ("b-0.brokers.kafka.svc.cluster.local:9093\\,a.other.svc:9092", ["kafka", "other"]),
        ("b-1.msk.eu-west-1.amazonaws.com:9096\\,a.kafka.svc:9092", None),
        ("kafka:9092", None),
    ],
)
def test_kafka_egress_peers_follow_in_cluster_bootstrap_servers(
    bootstrap: str, namespaces: list[str] | None
) -> None:
    objs = render((), (f"kafka.bootstrapServers={bootstrap}",))
    rule = _egress_kinds(by_name(objs, "NetworkPolicy", "t-rlhf-reward"))["kafka"]
    if namespaces is None:  # outside the cluster: limited by port only (NOTES say so)
        assert "to" not in rule
    else:
        assert [
            p["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] for p in rule["to"]
        ] == namespaces
    explicit = render(
        (),
        (
            f"kafka.bootstrapServers={bootstrap}",
            "networkPolicy.kafkaPeers[0].ipBlock.cidr=10.1.0.0/16",
        ),
    )
    rule = _egress_kinds(by_name(explicit, "NetworkPolicy", "t-rlhf-reward"))["kafka"]
    assert rule["to"] == [{"ipBlock": {"cidr": "10.1.0.0/16"}}]


def test_locked_down_variant_admits_only_labelled_clients_and_reaches_only_the_brokers() -> None:
    objs = render(VARIANTS["external-kafka-tls-sasl"])
    policy = by_name(objs, "NetworkPolicy", "t-rlhf-dataprep")
    grpc_rule = policy["spec"]["ingress"][0]
    allowed = [peer["podSelector"]["matchLabels"] for peer in grpc_rule["from"]]
    assert {"t-rlhf-client": "true"} in allowed
    kafka_rule = [
        r for r in policy["spec"]["egress"] if r.get("ports", [{}])[0].get("port") == 9093
    ][0]
    assert kafka_rule["to"][0]["podSelector"]["matchLabels"] == {"strimzi.io/cluster": "rlhf-kafka"}
    test_pod = of_kind(objs, "Pod")[0]
    assert test_pod["metadata"]["labels"]["t-rlhf-client"] == "true"


def test_kafka_sasl_tls_and_grpc_secrets_are_wired_from_existing_secrets() -> None:
    objs = render(VARIANTS["external-kafka-tls-sasl"])
    spec = by_name(objs, "Deployment", "t-rlhf-trainer")["spec"]["template"]["spec"]
    env = env_of(spec["containers"][0])
    assert env["RLHF_KAFKA__SECURITY_PROTOCOL"] == "SASL_SSL"
    assert env["RLHF_KAFKA__SASL_MECHANISM"] == "SCRAM-SHA-512"
    assert env["RLHF_KAFKA__SASL_PASSWORD"] == {
        "secretKeyRef": {"name": "rlhf-kafka-user", "key": "password"}
    }
    assert env["RLHF_KAFKA__SSL_CAFILE"] == "/etc/rlhf/kafka/ca/ca.crt"
    assert env["RLHF_GRPC__AUTH_TOKENS_FILE"] == "/etc/rlhf/auth/tokens"
    assert env["RLHF_GRPC__TLS_CLIENT_CA_FILE"] == "/etc/rlhf/tls/ca.crt"
    secrets = {v["name"]: v["secret"]["secretName"] for v in spec["volumes"] if "secret" in v}
    assert secrets == {
        "auth-tokens": "rlhf-grpc-tokens",
        "grpc-tls": "rlhf-grpc-tls",
        "kafka-ca": "rlhf-kafka-cluster-ca-cert",
    }
    mounts = {m["name"]: m["mountPath"] for m in spec["containers"][0]["volumeMounts"]}
    assert mounts["kafka-ca"] == "/etc/rlhf/kafka/ca"
    assert spec["containers"][0]["envFrom"] == [{"secretRef": {"name": "rlhf-object-store"}}]
    assert not of_kind(objs, "Secret"), "credentials must come from existing Secrets"


def test_strimzi_topics_cover_every_event_and_its_dead_letter_topic() -> None:
    topics = of_kind(render(VARIANTS["external-kafka-tls-sasl"]), "KafkaTopic")
    names = {t["spec"]["topicName"] for t in topics}
    from rlhf.contract import TOPICS

    events = set(TOPICS)  # the contract, defined once
    assert names == events | {f"{e}.dlq" for e in events}
    for topic in topics:
        assert topic["metadata"]["namespace"] == "kafka"
        assert topic["metadata"]["labels"]["strimzi.io/cluster"] == "rlhf-kafka"
        assert topic["spec"]["partitions"] == 6 and topic["spec"]["replicas"] == 3
    assert of_kind(render(), "KafkaTopic") == []


def test_helm_test_hook_checks_every_enabled_service() -> None:
    for variant, enabled in (
        ("default", set(SERVICES)),
        ("minimal", {"dataprep", "trainer", "inference"}),
    ):
        pods = of_kind(render(VARIANTS[variant]), "Pod")
        assert len(pods) == 1
        pod = pods[0]
        assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
        command = pod["spec"]["containers"][0]["command"]
        targets = {c.split(".")[0].removeprefix("t-rlhf-") for c in command if c.endswith(":50051")}
        assert targets == enabled


def test_servicemonitors_only_when_enabled() -> None:
    assert of_kind(render(), "ServiceMonitor") == []
    monitors = of_kind(render(VARIANTS["gpu-inference"]), "ServiceMonitor")
    assert {m["metadata"]["name"] for m in monitors} == {
        f"t-rlhf-{s}" for s in (*SERVICES, "triton")
    }
    assert all(m["metadata"]["labels"]["release"] == "kube-prometheus-stack" for m in monitors)


def test_image_digest_pins_the_image_and_registry_override() -> None:
    digest = "sha256:" + "a" * 64
    objs = render(
        (), (f"services.trainer.image.digest={digest}", "global.imageRegistry=registry.local")
    )
    image = by_name(objs, "Deployment", "t-rlhf-trainer")["spec"]["template"]["spec"]["containers"][
        0
    ]["image"]
    assert image == f"registry.local/rlhf-platform/rlhf-trainer@{digest}"
    triton = by_name(objs, "Deployment", "t-rlhf-triton")["spec"]["template"]["spec"]["containers"][
        0
    ]
    assert triton["image"].startswith("registry.local/rlhf-platform/rlhf-triton:")


def test_pipeline_specs_from_values_land_in_the_configmap(tmp_path) -> None:
    spec = tmp_path / "sft.yaml"
    spec.write_text("name: sft\nstages:\n  - sft\n")
    out = helm("template", "t", str(CHART), "--set-file", f"pipelines.specs.sft={spec}").stdout
    cm = by_name(tuple(d for d in yaml.safe_load_all(out) if d), "ConfigMap", "t-rlhf-pipelines")
    assert yaml.safe_load(cm["data"]["sft.yaml"]) == {"name": "sft", "stages": ["sft"]}


def _pipelines_wiring(objs: tuple[dict[str, Any], ...], name: str) -> tuple[bool, bool, bool]:
    """(RLHF_PIPELINES_DIR set, ConfigMap mounted, volume declared) for one Deployment."""
    pod = by_name(objs, "Deployment", name)["spec"]["template"]["spec"]
    container = pod["containers"][0]
    return (
        any(e["name"] == "RLHF_PIPELINES_DIR" for e in container["env"]),
        any(m["name"] == "pipelines" for m in container["volumeMounts"]),
        any(v["name"] == "pipelines" for v in pod["volumes"]),
    )


def test_without_specs_the_services_use_the_packaged_ones(tmp_path) -> None:
    """No specs in the chart: no mount over the images' packaged specs. Any spec: the
    ConfigMap replaces them, in every service and the console."""
    deployments = [f"t-rlhf-{name}" for name in SERVICES] + ["t-rlhf-console"]
    plain = render((), CONSOLE)
    for name in deployments:
        assert _pipelines_wiring(plain, name) == (False, False, False), name
    spec = tmp_path / "sft.yaml"
    spec.write_text("name: sft\nstages:\n  - sft\n")
    out = helm(
        "template", "t", str(CHART), "--set-file", f"pipelines.specs.sft={spec}",
        *(a for s in CONSOLE for a in ("--set", s)),
    ).stdout  # fmt: skip
    given = tuple(d for d in yaml.safe_load_all(out) if d)
    for name in deployments:
        assert _pipelines_wiring(given, name) == (True, True, True), name


def test_topology_spread_defaults_and_opt_out() -> None:
    spec = by_name(render(), "Deployment", "t-rlhf-inference")["spec"]["template"]["spec"]
    keys = {c["topologyKey"] for c in spec["topologySpreadConstraints"]}
    assert keys == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
    spec = by_name(render(VARIANTS["minimal"]), "Deployment", "t-rlhf-inference")["spec"][
        "template"
    ]["spec"]
    assert "topologySpreadConstraints" not in spec


def test_notes_render_with_endpoints_and_warnings() -> None:
    out = helm("install", "t", str(CHART), "-n", "ml", "--dry-run=client").stdout
    notes = out[out.index("NOTES:") :]
    assert "helm test t -n ml" in notes
    for name in SERVICES:
        assert f"t-rlhf-{name}.ml.svc:50051" in notes
    assert "gRPC authentication is off" not in notes
    # The Secrets the operator creates, with the DNS names the certificate needs.
    assert "t-rlhf-grpc-tokens  key tokens" in notes
    assert "t-rlhf-grpc-tls" in notes and "t-rlhf-inference.ml.svc" in notes
    assert "t-rlhf-client=true" in notes
    assert "networkPolicy.kubeApiPeers" in notes
    auth_off = helm(
        "install", "t", str(CHART), "-n", "ml", "--dry-run=client",
        "--set", "grpc.auth.enabled=false",
    ).stdout  # fmt: skip
    assert "gRPC authentication is off" in auth_off
    locked = helm(
        "install", "t", str(CHART), "-n", "ml", "--dry-run=client",
        "-f", str(CHART / "ci" / "external-kafka-tls-sasl-values.yaml"),
    ).stdout  # fmt: skip
    assert "gRPC authentication is off" not in locked
    assert "t-rlhf-client=true" in locked


def test_pipeline_specs_copied_into_the_chart_are_packaged(tmp_path) -> None:
    chart = tmp_path / "rlhf"
    shutil.copytree(CHART, chart)
    (chart / "files" / "pipelines" / "dpo.yaml").write_text("name: dpo\n")
    packaged = helm("package", str(chart), "-d", str(tmp_path)).stdout.strip().split()[-1]
    out = helm("template", "t", packaged).stdout
    cm = by_name(tuple(d for d in yaml.safe_load_all(out) if d), "ConfigMap", "t-rlhf-pipelines")
    assert yaml.safe_load(cm["data"]["dpo.yaml"]) == {"name": "dpo"}
    listing = subprocess.run(["tar", "-tzf", packaged], capture_output=True, text=True, check=True)
    assert "rlhf/hack/gen_values_schema.py" not in listing.stdout
    assert "rlhf/ci/minimal-values.yaml" in listing.stdout


# -- the web console (templates/console.yaml) ------------------------------------------
CONSOLE = (
    "console.enabled=true",
    "console.tokens.existingSecret=console-tokens",
    "console.grpcToken.existingSecret=console-grpc-token",
    "console.pipeline=reviews-en",
)


def test_console_is_off_by_default() -> None:
    objs = render()
    assert not [o for o in objs if o["metadata"]["name"] == "t-rlhf-console"]


def test_console_renders_a_hardened_client_of_the_services() -> None:
    objs = render(sets=CONSOLE)
    for obj in objs:
        if obj["metadata"]["name"] == "t-rlhf-console":
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    dep = by_name(objs, "Deployment", "t-rlhf-console")
    pod = dep["spec"]["template"]
    assert pod["metadata"]["labels"]["t-rlhf-client"] == "true"  # admitted by the services
    (container,) = pod["spec"]["containers"]
    args = container["args"]
    assert args[:2] == ["console", "--host=0.0.0.0"]
    assert {
        "--port=8080",
        "--tokens-file=/etc/rlhf/console/tokens",
        "--pipeline=reviews-en",
        "--tls-ca=/etc/rlhf/tls/ca.crt",
        "--secure-cookies",
    } <= set(args)
    env = env_of(container)
    assert env["RLHF_INFERENCE_ADDR"] == "t-rlhf-inference.ml.svc:50051"
    assert env["RLHF_TRAINER_ADDR"] == "t-rlhf-trainer.ml.svc:50051"
    assert env["RLHF_DATAPREP_ADDR"] == "t-rlhf-dataprep.ml.svc:50051"
    token = next(e for e in container["env"] if e["name"] == "RLHF_TOKEN")
    assert token["valueFrom"]["secretKeyRef"] == {"name": "console-grpc-token", "key": "token"}
    sc = container["securityContext"]
    assert all(sc.get(key) is value for key, value in HARDENED.items())
    assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["artifacts"]["readOnly"] is True and mounts["tokens"]["readOnly"] is True
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["tokens"]["secret"]["secretName"] == "console-tokens"
    service = by_name(objs, "Service", "t-rlhf-console")
    assert service["spec"]["ports"][0]["port"] == 80
    policy = by_name(objs, "NetworkPolicy", "t-rlhf-console")
    egress = {p["port"] for r in policy["spec"]["egress"] for p in r["ports"]}
    assert egress == {53, 50051}
    assert policy["spec"]["ingress"][0]["ports"] == [{"port": 8080, "protocol": "TCP"}]


@pytest.mark.parametrize(
    ("sets", "named"),
    [
        (("console.enabled=true",), "console.tokens.existingSecret"),
        (
            ("console.enabled=true", "console.tokens.existingSecret=s"),
            "console.grpcToken.existingSecret",
        ),
    ],
)
def test_console_without_its_secrets_fails_naming_the_key(sets, named) -> None:
    assert named in render_error(*sets)
