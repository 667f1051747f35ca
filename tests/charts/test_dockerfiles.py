"""The Dockerfiles (not built here: no Docker engine) agree with the project and the chart.

Checked by reading them. services/Dockerfile builds each of the five services (one
SERVICE build argument): multi-stage, base pinned to an exact version, the project wheel
installed with extras that pyproject.toml declares, a numeric non-root user equal to the
chart's runAsUser, the ports the chart probes, and a default command `rlhf serve` whose
service comes from RLHF_SERVICE, as the chart's `args: [serve, <name>]` does.
services/triton.Dockerfile adds to the NGC Triton image every module the Python-backend
model imports. Every COPY source exists in the build context (the repository root).
"""

from __future__ import annotations

import ast
import json
import re
import shlex
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from typer.testing import CliRunner

from tests.charts.helmtools import CHART, REPO_ROOT, SERVICES, by_name, render

SERVICE_DOCKERFILE = REPO_ROOT / "services" / "Dockerfile"
TRITON_DOCKERFILE = REPO_ROOT / "services" / "triton.Dockerfile"
PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
VALUES = yaml.safe_load((CHART / "values.yaml").read_text())


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    joined = re.sub(
        r"\\\n",
        " ",
        "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")),
    )
    out = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _args(steps: list[tuple[str, str]]) -> dict[str, str]:
    """ARG defaults (name=value)."""
    return dict(a.split("=", 1) for kind, a in steps if kind == "ARG" and "=" in a)


def _runtime(steps: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The last stage: what the image is."""
    return steps[max(i for i, (kind, _) in enumerate(steps) if kind == "FROM") :]


def _service_extras() -> dict[str, set[str]]:
    """service -> extras, from the `case "${SERVICE}"` of the build stage."""
    build = " ".join(a for kind, a in instructions(SERVICE_DOCKERFILE.read_text()) if kind == "RUN")
    return {
        name: set(extras.split(","))
        for name, extras in re.findall(r"\b([a-z]+)\) extras=\"([a-z0-9,-]+)\"", build)
    }


@pytest.mark.parametrize(
    "dockerfile", [SERVICE_DOCKERFILE, TRITON_DOCKERFILE], ids=lambda p: p.name
)
def test_every_copy_source_is_in_the_build_context(dockerfile: Path) -> None:
    copies = [a for kind, a in instructions(dockerfile.read_text()) if kind == "COPY"]
    assert copies
    for args in copies:
        words = [w for w in shlex.split(args) if not w.startswith("--")]
        if any(w.startswith("--from") for w in shlex.split(args)):
            continue  # from another stage
        for source in words[:-1]:
            assert (REPO_ROOT / source).exists(), f"{dockerfile.name}: COPY {source}: no such path"


def test_the_old_per_service_dockerfiles_are_gone() -> None:
    assert not list((REPO_ROOT / "services").glob("*/Dockerfile")), "one Dockerfile, SERVICE"


def test_each_service_gets_declared_extras_with_what_it_imports() -> None:
    extras = _service_extras()
    assert set(extras) == set(SERVICES)
    declared = set(PYPROJECT["project"]["optional-dependencies"])
    for name, chosen in extras.items():
        assert chosen <= declared, f"{name}: {chosen - declared} not in pyproject.toml"
        assert {"engine", "otlp"} <= chosen, name  # torch everywhere; traces over OTLP
    # The Triton client, and the local tritonserver it starts when the chart has
    # `triton.enabled: false` (ServingSettings.triton_url unset).
    assert {"serving", "tritonserver"} <= extras["inference"]
    assert "k8s" in extras["trainer"]  # training Jobs


@pytest.mark.helm
@pytest.mark.parametrize("name", SERVICES)
def test_service_image_is_multistage_pinned_non_root_and_matches_the_chart(name: str) -> None:
    steps = instructions(SERVICE_DOCKERFILE.read_text())
    args = _args(steps)
    froms = [a for kind, a in steps if kind == "FROM"]
    assert len(froms) >= 2, "multi-stage: a build stage and a runtime stage"
    for base in froms:
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], shlex.split(base)[0])
        assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-[a-z]+(@sha256:[a-f0-9]{64})?", image), (
            image
        )
    runtime = _runtime(steps)
    kinds = [kind for kind, _ in runtime]
    assert ("ARG", "SERVICE") in runtime, "the runtime stage sees SERVICE"
    assert any(kind == "COPY" and a.startswith("--from=build") for kind, a in runtime)
    assert not any(kind == "ADD" for kind in kinds)
    build = " ".join(a for kind, a in steps if kind == "RUN")
    assert "pip wheel" in build and "rlhf_platform-" in build, "installs the project wheel"

    user = [a for kind, a in runtime if kind == "USER"][-1]
    uid = int(user.split(":")[0])
    assert (
        uid
        == VALUES["containerSecurityContext"]["runAsUser"]
        == VALUES["podSecurityContext"]["runAsUser"]
    )
    assert uid != 0

    exposed = {int(p) for kind, a in runtime if kind == "EXPOSE" for p in a.split()}
    assert exposed == {VALUES["grpc"]["port"], VALUES["metrics"]["port"]}
    env = " ".join(a for kind, a in runtime if kind == "ENV")
    assert "RLHF_SERVICE=${SERVICE}" in env.split()
    entrypoint = json.loads([a for kind, a in runtime if kind == "ENTRYPOINT"][-1])
    cmd = json.loads([a for kind, a in runtime if kind == "CMD"][-1])
    assert entrypoint == ["rlhf"] and cmd == ["serve"]
    container = by_name(render(), "Deployment", f"t-rlhf-{name}")["spec"]["template"]["spec"][
        "containers"
    ][0]
    assert "command" not in container and container["args"] == ["serve", name]


def test_rlhf_serve_takes_its_service_from_rlhf_service() -> None:
    """The image's default command, `rlhf serve`, with RLHF_SERVICE set by the build."""
    import typer

    from rlhf.cli.serve import serve

    app = typer.Typer()
    app.command()(serve)
    result = CliRunner().invoke(app, [], env={"RLHF_SERVICE": "not-a-service"})
    assert result.exit_code == 2 and "not-a-service" in result.output


def _top_level_imports(path: Path) -> set[str]:
    """Modules the file imports, at any depth, first component only."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.partition(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.partition(".")[0])
    return names


@pytest.mark.helm
def test_triton_image_has_the_backend_dependencies_and_matches_the_chart() -> None:
    steps = instructions(TRITON_DOCKERFILE.read_text())
    args = _args(steps)
    base = re.sub(
        r"\$\{(\w+)\}", lambda m: args[m.group(1)], [a for kind, a in steps if kind == "FROM"][-1]
    )
    assert re.fullmatch(
        r"nvcr\.io/nvidia/tritonserver:\d+\.\d+-py3(@sha256:[a-f0-9]{64})?", base.split()[0]
    )

    # What model.py (a copy of rlhf.serving.backend) imports: the standard library,
    # numpy (in the NGC image), Triton's own module, and what the Dockerfile installs.
    installed = " ".join(a for kind, a in steps if kind == "RUN")
    pins = {
        Requirement(re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], word)).name: word
        for word in shlex.split(installed)
        if "==" in word
    }
    backend = REPO_ROOT / "src" / "rlhf" / "serving" / "backend.py"
    # `rlhf` is optional there: without the package the backend loads the compression
    # restorer from the copy the repository writes beside model.py.
    provided = set(sys.stdlib_module_names) | {"numpy", "triton_python_backend_utils", "rlhf"}
    assert _top_level_imports(backend) - provided <= set(pins), "backend.py needs more"
    # The pinned versions satisfy the project's own ranges for the engine.
    engine = {
        Requirement(r).name: Requirement(r)
        for r in PYPROJECT["project"]["optional-dependencies"]["engine"]
    }
    for name in ("torch", "transformers"):
        version = args[f"{name.upper()}_VERSION"]
        assert engine[name].specifier.contains(version), (name, version, engine[name])

    runtime = _runtime(steps)
    uid = int([a for kind, a in runtime if kind == "USER"][-1].split(":")[0])
    assert uid == VALUES["triton"]["runAsUser"] != 0
    exposed = {int(p) for kind, a in runtime if kind == "EXPOSE" for p in a.split()}
    triton = by_name(render(), "Deployment", "t-rlhf-triton")["spec"]["template"]["spec"][
        "containers"
    ][0]
    assert exposed == {port["containerPort"] for port in triton["ports"]}
    assert triton["image"] == "ghcr.io/rlhf-platform/rlhf-triton:" + str(
        yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    )
