"""The layering, as a contract the tests enforce.

    services  ->  workflows / serving / executors  ->  engine, runtime  ->  rlhf.v1

- a service never imports another service (they talk through events and RPCs);
- the engine (the ML library) imports nothing from the runtime, the services, the
  workflows or the entry points: it runs without any service;
- the runtime (bus, gRPC, settings) imports neither the engine nor what sits on it;
- no two top-level packages import each other, directly or through others.

Imports are read from the source (`ast`), including imports inside functions.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SOURCE_ROOTS = {"rlhf": REPO / "src" / "rlhf", "rlhf.services": REPO / "services"}

ENTRY_POINTS = {"rlhf.cli", "rlhf.demo", "rlhf.console", "rlhf.devstack", "rlhf.client"}
FORBIDDEN: dict[str, set[str]] = {
    "rlhf.engine": {
        "rlhf.runtime",
        "rlhf.workflows",
        "rlhf.serving",
        "rlhf.executors",
        "rlhf.services",
        "rlhf.pipelines",
        "rlhf.registry",
        *ENTRY_POINTS,
    },
    "rlhf.runtime": {
        "rlhf.engine",
        "rlhf.workflows",
        "rlhf.serving",
        "rlhf.services",
        *ENTRY_POINTS,
    },
    "rlhf.workflows": {"rlhf.services", *ENTRY_POINTS},
    "rlhf.serving": {"rlhf.services", "rlhf.workflows", *ENTRY_POINTS},
}


def group(module: str) -> str:
    """The unit the contract speaks of: `rlhf.services.<name>` or `rlhf.<package>`."""
    parts = module.split(".")
    return ".".join(parts[:3] if parts[:2] == ["rlhf", "services"] else parts[:2])


def project_modules() -> dict[str, str]:
    """Module name -> source, for every module of the project (not generated code)."""
    found = {}
    for base, root in SOURCE_ROOTS.items():
        for path in root.rglob("*.py"):
            relative = path.relative_to(root).with_suffix("")
            if relative.parts and relative.parts[0] == "v1":
                continue
            parts = [p for p in relative.parts if p != "__init__"]
            found[".".join([base, *parts])] = path.read_text()
    return found


def imported(source: str) -> Iterable[str]:
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def group_edges(modules: Mapping[str, str]) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = defaultdict(set)
    known = {group(m) for m in modules}
    for module, source in modules.items():
        for name in imported(source):
            if not name.startswith("rlhf.") or name.startswith("rlhf.v1"):
                continue
            target = group(name)
            if target in known and target != group(module):
                edges[group(module)].add(target)
    return edges


def violations(modules: Mapping[str, str]) -> list[str]:
    edges = group_edges(modules)
    found = []
    for source, targets in sorted(edges.items()):
        for target in sorted(targets):
            if source.startswith("rlhf.services.") and target.startswith("rlhf.services."):
                found.append(f"{source} imports {target}: services talk through events/RPCs")
            for layer, forbidden in FORBIDDEN.items():
                if source == layer and any(
                    target == f or target.startswith(f + ".") for f in forbidden
                ):
                    found.append(f"{source} imports {target}: forbidden for the {layer} layer")
    found += [f"import cycle: {' -> '.join(cycle)}" for cycle in cycles(edges)]
    return found


def cycles(edges: Mapping[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one package."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in edges.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in list(edges):
        if node not in index:
            visit(node)
    return found


def test_the_project_keeps_its_layers():
    assert violations(project_modules()) == []


def test_the_contract_catches_a_service_importing_another():
    modules = dict(project_modules())
    modules["rlhf.services.trainer.shortcut"] = (
        "def f():\n    from rlhf.services.reward.server import RewardModelService\n"
    )
    assert any(
        "rlhf.services.trainer imports rlhf.services.reward" in v for v in violations(modules)
    )


def test_the_contract_catches_the_engine_reaching_up_and_cycles():
    modules = dict(project_modules())
    modules["rlhf.engine.bad"] = "from rlhf.runtime.settings import Settings\n"
    assert any("rlhf.engine imports rlhf.runtime" in v for v in violations(modules))
    modules = dict(project_modules())  # workflows import the runtime; now back again
    modules["rlhf.runtime.bad"] = "import rlhf.workflows.stages\n"
    assert any(v.startswith("import cycle") for v in violations(modules))
