"""Finding helm and rendering the chart for the chart tests.

helm comes from scripts/setup.d/20-helm.sh (.cache/bin, or RLHF_TOOLS_BIN), else PATH.
A missing helm fails the tests: they are the chart's only check.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from rlhf.contract import SERVICES  # noqa: F401 - the contract, defined once

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART = REPO_ROOT / "charts" / "rlhf"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
K8S_VERSION = "1.33.0"


def tool(name: str) -> str:
    candidates = [Path(os.environ.get("RLHF_TOOLS_BIN", REPO_ROOT / ".cache" / "bin")) / name]
    found = shutil.which(name)
    if found:
        candidates.append(Path(found))
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    pytest.fail(
        f"{name} not found in {candidates[0].parent} or PATH: run scripts/setup.d/20-helm.sh"
    )


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([tool("helm"), *args], capture_output=True, text=True, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def _args(values: tuple[str, ...], sets: tuple[str, ...]) -> list[str]:
    args = []
    for path in values:
        args += ["-f", path]
    for item in sets:
        args += ["--set", item]
    return args


@cache
def render(values: tuple[str, ...] = (), sets: tuple[str, ...] = ()) -> tuple[dict[str, Any], ...]:
    """Objects of `helm template` (release "t", namespace "ml"), cached per argument set."""
    out = helm("template", "t", str(CHART), "--namespace", "ml", *_args(values, sets)).stdout
    return tuple(doc for doc in yaml.safe_load_all(out) if doc)


def render_error(*sets: str) -> str:
    """stderr of a render that must fail."""
    proc = helm("template", "t", str(CHART), *_args((), sets), check=False)
    assert proc.returncode != 0, f"helm template with {sets} unexpectedly succeeded"
    return proc.stderr


def of_kind(objs: tuple[dict[str, Any], ...], kind: str) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] == kind]


def by_name(objs: tuple[dict[str, Any], ...], kind: str, name: str) -> dict[str, Any]:
    for obj in of_kind(objs, kind):
        if obj["metadata"]["name"] == name:
            return obj
    raise AssertionError(
        f"no {kind} {name}; have {[o['metadata']['name'] for o in of_kind(objs, kind)]}"
    )


def pod_specs(objs: tuple[dict[str, Any], ...]) -> list[tuple[str, dict[str, Any]]]:
    """(kind/name, pod spec) of every workload and bare pod."""
    specs = []
    for obj in objs:
        name = f"{obj['kind']}/{obj['metadata']['name']}"
        if obj["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            specs.append((name, obj["spec"]["template"]["spec"]))
        elif obj["kind"] == "Pod":
            specs.append((name, obj["spec"]))
    return specs


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}
