"""Generates charts/rlhf/values.schema.json: run after changing values.yaml.

    .venv/bin/python charts/rlhf/hack/gen_values_schema.py > charts/rlhf/values.schema.json

Every object is closed (`additionalProperties: false`), so a misspelt key fails
`helm install`. The security contexts embed the Kubernetes 1.33 types from
kubernetes-validate, closed too: a typo there (`readOnlyRootFileSystem`) would otherwise
be dropped by the API server and silently weaken the pod. tests/charts checks that the
committed schema is this script's output.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import kubernetes_validate

_SCHEMAS = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
_K8S = json.loads((_SCHEMAS / "v1.33.0-local-strict" / "_definitions.json").read_text())["$defs"]
_DROP = {
    "description",
    "x-kubernetes-unions",
    "x-kubernetes-list-type",
    "x-kubernetes-map-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-patch-strategy",
    "x-kubernetes-patch-merge-key",
}


def k8s(name: str) -> dict[str, Any]:
    """A Kubernetes 1.33 type inlined (refs resolved, descriptions dropped), closed."""

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return inline(_K8S[node["$ref"].split("/")[-1]])
            out = {k: inline(v) for k, v in node.items() if k not in _DROP}
            if "properties" in out:
                out["additionalProperties"] = False
            return out
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    out = inline(_K8S[name])
    out["description"] = f"Kubernetes {name.rsplit('.', 1)[-1]} (v1.33)"
    return out


def obj(
    props: dict[str, Any], required: list[str] | None = None, desc: str | None = None
) -> dict[str, Any]:
    """A closed object."""
    o = {"type": "object", "additionalProperties": False, "properties": props}
    if required:
        o["required"] = required
    if desc:
        o["description"] = desc
    return o


S = {"type": "string"}
B = {"type": "boolean"}
I0 = {"type": "integer", "minimum": 0}
I1 = {"type": "integer", "minimum": 1}
PORT = {"type": "integer", "minimum": 1, "maximum": 65535}
QTY = {
    "oneOf": [
        {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?(m|k|Ki|Mi|Gi|Ti|Pi|Ei|M|G|T|P|E)?$"},
        {"type": "number", "minimum": 0},
    ]
}
SIZE = {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$"}
STRMAP = {"type": "object", "additionalProperties": {"type": "string"}}
ARR = {"type": "array"}
ARR_OBJ = {"type": "array", "items": {"type": "object"}}
K8S_OBJ = {"type": "object", "description": "a Kubernetes type, validated by the API server"}
RESOURCES = {"$ref": "#/definitions/resources"}
DURATION = {"type": "string", "pattern": r"^[0-9]+(ms|s|m|h)$"}

definitions = {
    "resources": obj(
        {
            "requests": {"type": "object", "additionalProperties": QTY},
            "limits": {"type": "object", "additionalProperties": QTY},
        },
        required=["requests", "limits"],
        desc="container resources: both requests and limits are required",
    ),
    "probe": obj(
        {
            "initialDelaySeconds": I0,
            "periodSeconds": I1,
            "timeoutSeconds": I1,
            "failureThreshold": I1,
        },
        required=["periodSeconds", "timeoutSeconds", "failureThreshold"],
    ),
    "probes": obj(
        {k: {"$ref": "#/definitions/probe"} for k in ("startup", "readiness", "liveness")},
        required=["startup", "readiness", "liveness"],
    ),
    "pdb": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "enabled": B,
            "minAvailable": {"oneOf": [I0, {"type": "string", "pattern": r"^[0-9]+%$"}]},
            "maxUnavailable": {"oneOf": [I1, {"type": "string", "pattern": r"^[0-9]+%$"}]},
        },
        "required": ["enabled"],
    },
    "serviceImage": obj(
        {
            "repository": S,
            "tag": S,
            "digest": {"type": "string", "pattern": r"^(sha256:[a-f0-9]{64})?$"},
            "pullPolicy": {"enum": ["", "Always", "IfNotPresent", "Never"]},
        }
    ),
    "auxImage": obj(
        {
            "repository": S,
            "tag": S,
            "digest": {"type": "string", "pattern": r"^(sha256:[a-f0-9]{64})?$"},
        }
    ),
    "k8sService": obj(
        {"type": {"enum": ["ClusterIP", "NodePort", "LoadBalancer"]}, "annotations": STRMAP}
    ),
    "service": obj(
        {
            "enabled": B,
            "image": {"$ref": "#/definitions/serviceImage"},
            "replicaCount": I0,
            "resources": RESOURCES,
            "env": ARR_OBJ,
            "envFrom": ARR_OBJ,
            "extraVolumes": ARR_OBJ,
            "extraVolumeMounts": ARR_OBJ,
            "podAnnotations": STRMAP,
            "podLabels": STRMAP,
            "nodeSelector": STRMAP,
            "tolerations": ARR_OBJ,
            "affinity": K8S_OBJ,
            "topologySpreadConstraints": ARR_OBJ,
            "priorityClassName": S,
            "terminationGracePeriodSeconds": I0,
            "service": {"$ref": "#/definitions/k8sService"},
            "serviceAccount": obj({"create": B, "name": S, "annotations": STRMAP}),
            "probes": {"$ref": "#/definitions/probes"},
            "pdb": {"$ref": "#/definitions/pdb"},
            "autoscaling": obj(
                {
                    "enabled": B,
                    "minReplicas": I1,
                    "maxReplicas": I1,
                    "targetCPUUtilizationPercentage": {
                        "type": "integer",
                        "minimum": 0,
                        "maximum": 100,
                    },
                    "targetMemoryUtilizationPercentage": {
                        "type": "integer",
                        "minimum": 0,
                        "maximum": 100,
                    },
                    "kafkaLag": obj(
                        {
                            "enabled": B,
                            "metricName": S,
                            "averageValue": {"type": ["string", "integer"]},
                            "selector": STRMAP,
                        }
                    ),
                    "extraMetrics": ARR_OBJ,
                    "behavior": K8S_OBJ,
                }
            ),
        },
        required=["enabled", "resources", "probes"],
    ),
}

peers = {"type": "array", "items": {"type": "object"}, "description": "NetworkPolicyPeer list"}
schema = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "title": "rlhf chart values",
    "definitions": definitions,
    **obj(
        {
            "global": obj({"imageRegistry": S, "imagePullSecrets": ARR_OBJ}),
            "nameOverride": S,
            "fullnameOverride": S,
            "commonLabels": STRMAP,
            "commonAnnotations": STRMAP,
            "image": obj(
                {
                    "registry": S,
                    "repositoryPrefix": S,
                    "tag": S,
                    "pullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]},
                }
            ),
            "podSecurityContext": k8s("io.k8s.api.core.v1.PodSecurityContext"),
            "containerSecurityContext": k8s("io.k8s.api.core.v1.SecurityContext"),
            "scratch": obj({"tmpSizeLimit": SIZE, "cacheSizeLimit": SIZE}),
            "config": obj(
                {
                    "logLevel": {"enum": ["DEBUG", "INFO", "WARNING", "ERROR"]},
                    "logFormat": {"enum": ["json", "text"]},
                    "tracesExporter": {"enum": ["none", "console", "otlp"]},
                    "extraEnv": ARR_OBJ,
                }
            ),
            "grpc": obj(
                {
                    "port": PORT,
                    "auth": obj(
                        {
                            "enabled": B,
                            "existingSecret": S,
                            "tokensKey": S,
                            "allowWithoutTLS": B,
                        }
                    ),
                    "tls": obj({"enabled": B, "existingSecret": S, "requireClientCert": B}),
                }
            ),
            "metrics": obj(
                {
                    "port": PORT,
                    "serviceMonitor": obj(
                        {
                            "enabled": B,
                            "interval": DURATION,
                            "scrapeTimeout": DURATION,
                            "labels": STRMAP,
                        }
                    ),
                    "prometheusRule": obj({"enabled": B, "labels": STRMAP}),
                    "grafanaDashboards": obj(
                        {
                            "enabled": B,
                            "label": {"type": "string", "minLength": 1},
                            "labelValue": S,
                            "namespace": S,
                            "annotations": STRMAP,
                        }
                    ),
                }
            ),
            "kafka": obj(
                {
                    "bootstrapServers": {
                        "type": "string",
                        "minLength": 1,
                        "pattern": r"^[^,\s]+:[0-9]+(,[^,\s]+:[0-9]+)*$",
                    },
                    "securityProtocol": {
                        "enum": ["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
                    },
                    "sasl": obj(
                        {
                            "mechanism": {
                                "enum": [
                                    "",
                                    "PLAIN",
                                    "SCRAM-SHA-256",
                                    "SCRAM-SHA-512",
                                    "OAUTHBEARER",
                                ]
                            },
                            "existingSecret": S,
                            "usernameKey": S,
                            "passwordKey": S,
                        }
                    ),
                    "tls": obj({"caSecret": S, "caKey": S, "clientCertSecret": S}),
                    "topics": obj(
                        {
                            "partitions": I1,
                            "replicationFactor": I1,
                            "retentionMs": {"type": "integer", "minimum": -1},
                            "dlqRetentionMs": {"type": "integer", "minimum": -1},
                        }
                    ),
                    "strimzi": obj({"enabled": B, "clusterName": S, "namespace": S}),
                }
            ),
            "stateStore": obj(
                {
                    "postgres": obj(
                        {
                            "enabled": B,
                            "existingSecret": S,
                            "urlKey": {"type": "string", "minLength": 1},
                            "peers": peers,
                            "ports": {"type": "array", "items": PORT, "minItems": 1},
                        }
                    ),
                }
            ),
            "artifacts": obj(
                {
                    "mountPath": {"type": "string", "pattern": "^/"},
                    "persistence": obj(
                        {
                            "enabled": B,
                            "existingClaim": S,
                            "storageClass": S,
                            "accessModes": {
                                "type": "array",
                                "items": {
                                    "enum": [
                                        "ReadWriteOnce",
                                        "ReadOnlyMany",
                                        "ReadWriteMany",
                                        "ReadWriteOncePod",
                                    ]
                                },
                                "minItems": 1,
                            },
                            "size": SIZE,
                            "keep": B,
                        }
                    ),
                    "objectStorage": obj({"enabled": B, "uri": S, "existingSecret": S}),
                }
            ),
            "pipelines": obj(
                {
                    "mountPath": {"type": "string", "pattern": "^/"},
                    "specs": {
                        "type": "object",
                        "additionalProperties": {"type": ["string", "object"]},
                    },
                }
            ),
            "topologySpread": obj(
                {
                    "enabled": B,
                    "maxSkew": I1,
                    "whenUnsatisfiable": {"enum": ["ScheduleAnyway", "DoNotSchedule"]},
                }
            ),
            "networkPolicy": obj(
                {
                    "enabled": B,
                    "allowExternal": B,
                    "metricsFrom": peers,
                    "kafkaPeers": peers,
                    "kafkaPorts": {"type": "array", "items": PORT, "minItems": 1},
                    "kubeApiPeers": peers,
                    "kubeApiPorts": {"type": "array", "items": PORT, "minItems": 1},
                    "extraEgress": ARR_OBJ,
                    "dns": obj({"namespace": S, "podLabels": STRMAP}),
                }
            ),
            "services": obj(
                {
                    n: {"$ref": "#/definitions/service"}
                    for n in ("dataprep", "trainer", "reward", "adversary", "inference")
                },
                required=["dataprep", "trainer", "reward", "adversary", "inference"],
            ),
            "trainingJobs": obj(
                {
                    "executor": {"enum": ["local", "kubernetes"]},
                    "image": {"$ref": "#/definitions/auxImage"},
                    "resources": RESOURCES,
                    "gpuResourceName": S,
                    "nodeSelector": STRMAP,
                    "tolerations": ARR_OBJ,
                    "ttlSecondsAfterFinished": I0,
                    "backoffLimit": I0,
                    "activeDeadlineSeconds": I0,
                    "pytorchJob": obj({"enabled": B}),
                }
            ),
            "triton": obj(
                {
                    "enabled": B,
                    "image": obj(
                        {
                            "registry": S,
                            "repository": S,
                            "tag": S,
                            "digest": {"type": "string", "pattern": r"^(sha256:[a-f0-9]{64})?$"},
                            "pullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]},
                        }
                    ),
                    "replicaCount": I0,
                    "runAsUser": I1,
                    "modelControlMode": {"enum": ["explicit", "poll"]},
                    "repositoryPollSeconds": I1,
                    "replicaResyncSeconds": I1,
                    "extraArgs": {"type": "array", "items": S},
                    "modelRepository": obj(
                        {
                            "type": {"enum": ["pvc", "objectStorage"]},
                            "mountPath": {"type": "string", "pattern": "^/"},
                            "pvc": obj(
                                {
                                    "existingClaim": S,
                                    "storageClass": S,
                                    "accessModes": {
                                        "type": "array",
                                        "items": {
                                            "enum": [
                                                "ReadWriteOnce",
                                                "ReadOnlyMany",
                                                "ReadWriteMany",
                                                "ReadWriteOncePod",
                                            ]
                                        },
                                        "minItems": 1,
                                    },
                                    "size": SIZE,
                                }
                            ),
                            "objectStorage": obj({"uri": S, "existingSecret": S}),
                        }
                    ),
                    "gpu": obj({"enabled": B, "count": I1, "resourceName": S}),
                    "resources": RESOURCES,
                    "shmSize": SIZE,
                    "env": ARR_OBJ,
                    "nodeSelector": STRMAP,
                    "tolerations": ARR_OBJ,
                    "affinity": K8S_OBJ,
                    "topologySpreadConstraints": ARR_OBJ,
                    "podAnnotations": STRMAP,
                    "priorityClassName": S,
                    "service": {"$ref": "#/definitions/k8sService"},
                    "probes": {"$ref": "#/definitions/probes"},
                    "pdb": {"$ref": "#/definitions/pdb"},
                    "autoscaling": obj(
                        {
                            "enabled": B,
                            "minReplicas": I1,
                            "maxReplicas": I1,
                            "targetCPUUtilizationPercentage": {
                                "type": "integer",
                                "minimum": 0,
                                "maximum": 100,
                            },
                            "extraMetrics": ARR_OBJ,
                            "behavior": K8S_OBJ,
                        }
                    ),
                }
            ),
            "console": obj(
                {
                    "enabled": B,
                    "image": {"$ref": "#/definitions/serviceImage"},
                    "replicaCount": I0,
                    "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                    "pipeline": S,
                    "tokens": obj({"existingSecret": S, "key": S}),
                    "grpcToken": obj({"existingSecret": S, "key": S}),
                    "secureCookies": B,
                    "extraArgs": {"type": "array", "items": {"type": "string"}},
                    "env": ARR_OBJ,
                    "resources": RESOURCES,
                    "podAnnotations": STRMAP,
                    "nodeSelector": STRMAP,
                    "tolerations": ARR_OBJ,
                    "affinity": K8S_OBJ,
                    "service": obj(
                        {
                            "type": {"enum": ["ClusterIP", "NodePort", "LoadBalancer"]},
                            "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                            "annotations": STRMAP,
                        }
                    ),
                    "networkPolicy": obj({"from": peers}),
                },
                desc="The web console (docs/console.md); off by default.",
            ),
            "tests": obj(
                {"enabled": B, "image": {"$ref": "#/definitions/auxImage"}, "resources": RESOURCES}
            ),
        }
    ),
}


def main() -> None:
    print(json.dumps(schema, indent=2))


if __name__ == "__main__":
    main()
