"""The service Dockerfiles (not built here: no Docker engine) agree with the chart.

Checked by reading them: multi-stage, base pinned to an exact version, the project wheel
installed, a numeric non-root user equal to the chart's runAsUser, the ports the chart
probes, and an entry point that the chart's `args: [serve, <name>]` completes.
"""

from __future__ import annotations

import json
import re
import shlex

import pytest
import yaml

from tests.charts.helmtools import CHART, REPO_ROOT, SERVICES, by_name, render

pytestmark = pytest.mark.helm


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


@pytest.mark.parametrize("name", SERVICES)
def test_dockerfile_is_multistage_pinned_non_root_and_matches_the_chart(name: str) -> None:
    steps = instructions((REPO_ROOT / "services" / name / "Dockerfile").read_text())
    args = dict(a.split("=", 1) for kind, a in steps if kind == "ARG" and "=" in a)
    froms = [a for kind, a in steps if kind == "FROM"]
    assert len(froms) >= 2, "multi-stage: a build stage and a runtime stage"
    for base in froms:
        image = shlex.split(base)[0]
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)
        assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-[a-z]+(@sha256:[a-f0-9]{64})?", image), (
            image
        )
    runtime = steps[max(i for i, (kind, _) in enumerate(steps) if kind == "FROM") :]
    kinds = [kind for kind, _ in runtime]
    assert any(kind == "COPY" and a.startswith("--from=build") for kind, a in runtime)
    assert not any(kind == "ADD" for kind in kinds)
    build = " ".join(a for kind, a in steps if kind == "RUN")
    assert "pip wheel" in build and "rlhf_platform-" in build, "installs the project wheel"

    user = [a for kind, a in runtime if kind == "USER"][-1]
    uid = int(user.split(":")[0])
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert (
        uid
        == values["containerSecurityContext"]["runAsUser"]
        == values["podSecurityContext"]["runAsUser"]
    )
    assert uid != 0

    exposed = {int(p) for kind, a in runtime if kind == "EXPOSE" for p in a.split()}
    assert exposed == {values["grpc"]["port"], values["metrics"]["port"]}
    entrypoint = json.loads([a for kind, a in runtime if kind == "ENTRYPOINT"][-1])
    cmd = json.loads([a for kind, a in runtime if kind == "CMD"][-1])
    assert entrypoint == ["rlhf"] and cmd == ["serve", name]
    container = by_name(render(), "Deployment", f"t-rlhf-{name}")["spec"]["template"]["spec"][
        "containers"
    ][0]
    assert "command" not in container and container["args"] == cmd
