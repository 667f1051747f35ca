"""The wheel is self-contained and its `client` install is light.

Fast: the wheel is built (no build isolation, from a copy of the sources so the checkout
gets no build/ directory) and read: the shipped pipeline specs are in it byte for byte,
with py.typed and the packaged data sets; the core requirements name no heavy package.
It is then installed with `--no-deps` into a fresh venv whose dependencies come from
this venv's site-packages (a `.pth` line, nothing downloaded), where `rlhf pipeline
list` must list every shipped spec. `rlhf.client` and `rlhf pipeline list` also run
with the heavy packages made unimportable by an import hook, and a command that needs
one (`rlhf demo`) names the extra to install.

Slow (`-m slow`, about a minute): the issue's acceptance as a user runs it, `python -m
build`, then `pip install '<wheel>[client]'` into an empty venv from the package index:
no torch installed, and `from rlhf.client import Client` and `rlhf pipeline list` work.
"""

from __future__ import annotations

import email.parser
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted(p.name for p in (REPO / "pipelines").glob("*.yaml"))
# Never pulled in by the core install (the extras engine, serving, tritonserver, k8s).
HEAVY = ("torch", "transformers", "tritonclient", "pytriton", "kubernetes", "numpy")
HEAVY_DISTS = {"torch", "transformers", "tritonclient", "nvidia-pytriton", "kubernetes", "numpy"}
EXTRAS = {"client", "engine", "serving", "tritonserver", "k8s", "otlp", "postgres", "all"}

# Run before the code under test: any import of a HEAVY package fails.
BLOCKER = textwrap.dedent(
    f"""
    import sys

    class _Blocker:
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in {HEAVY!r}:
                raise ModuleNotFoundError(f"blocked by the test: {{name}}", name=name)
            return None

    sys.meta_path.insert(0, _Blocker())
    """
)


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "RLHF_PIPELINES_DIR"}
    env["PYTHONNOUSERSITE"] = "1"
    return env


def _run(args: list[str | Path], **kwargs: object) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, env=_env(), **kwargs
    )
    assert proc.returncode == 0, f"{args} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def _source_copy(dest: Path) -> Path:
    """What the Dockerfile copies: the checkout gets no build/ or egg-info from a build."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy2(REPO / name, dest / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in ("src", "services", "pipelines"):
        shutil.copytree(REPO / name, dest / name, ignore=ignore)
    return dest


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's wheel, built without build isolation (nothing downloaded)."""
    src = _source_copy(tmp_path_factory.mktemp("src"))
    out = tmp_path_factory.mktemp("dist")
    _run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
        + ["--wheel-dir", out, src]
    )
    (found,) = out.glob("rlhf_platform-*.whl")
    return found


def _metadata(wheel: Path) -> email.message.Message:
    with zipfile.ZipFile(wheel) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        return email.parser.Parser().parsestr(zf.read(name).decode())


def test_wheel_ships_the_pipeline_specs_py_typed_and_data(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        specs = sorted(
            n.removeprefix("rlhf/pipeline_specs/")
            for n in names
            if n.startswith("rlhf/pipeline_specs/")
        )
        assert specs == SHIPPED, "the wheel's specs are pipelines/*.yaml, no more, no less"
        for name in SHIPPED:
            shipped = (REPO / "pipelines" / name).read_bytes()
            assert zf.read(f"rlhf/pipeline_specs/{name}") == shipped, f"{name} differs"
    assert "rlhf/py.typed" in names
    data = REPO / "src" / "rlhf" / "datasets"
    for path in data.rglob("*"):
        if path.is_file() and "__pycache__" not in path.parts:
            assert f"rlhf/datasets/{path.relative_to(data)}" in names, path
    assert not any(n.endswith("Dockerfile") for n in names)


def test_core_requirements_are_light_and_extras_declared(wheel: Path) -> None:
    meta = _metadata(wheel)
    core = {
        r.split(";")[0].split("[")[0].split("<")[0].split(">")[0].split("=")[0].strip().lower()
        for r in meta.get_all("Requires-Dist")
        if "extra ==" not in r
    }
    assert not core & HEAVY_DISTS, core & HEAVY_DISTS
    assert set(meta.get_all("Provides-Extra")) >= EXTRAS


def test_client_imports_without_heavy_packages() -> None:
    code = BLOCKER + textwrap.dedent(
        f"""
        from rlhf.client import AsyncClient, Client
        loaded = sorted({{m.partition(".")[0] for m in sys.modules}} & set({HEAVY!r}))
        assert not loaded, loaded
        """
    )
    _run([sys.executable, "-c", code], cwd=REPO)


def test_pipeline_list_runs_without_heavy_packages() -> None:
    code = BLOCKER + "sys.argv = ['rlhf', 'pipeline', 'list']\nfrom rlhf.cli import main\nmain()"
    out = _run([sys.executable, "-c", code], cwd=REPO).stdout
    assert sorted(line.split()[0] for line in out.splitlines()) == [Path(n).stem for n in SHIPPED]


def test_a_command_that_needs_an_extra_names_it(tmp_path: Path) -> None:
    code = BLOCKER + "sys.argv = ['rlhf', 'demo', '--quick']\nfrom rlhf.cli import main\nmain()"
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=_env(), cwd=tmp_path
    )
    assert proc.returncode == 1, proc.stderr
    assert "pip install 'rlhf-platform[engine]'" in proc.stderr


def test_every_extra_the_command_names_is_declared() -> None:
    from rlhf.cli import EXTRA_OF

    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert set(EXTRA_OF.values()) <= set(config["project"]["optional-dependencies"])


def test_installed_wheel_lists_the_shipped_pipelines(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv])
    python = venv / "bin" / "python"
    _run(
        [sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps"]
        + ["--no-index", wheel]
    )
    # Then the dependencies: this venv's site-packages, after the new venv's own on
    # sys.path (written after the install, so pip does not see this venv's rlhf-platform).
    site = _run([python, "-c", "import site; print(site.getsitepackages()[0])"]).stdout
    site_packages = Path(site.strip())
    (site_packages / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    where = _run(
        [python, "-c", "import rlhf.pipelines as p; print(p.PIPELINES_DIR)"], cwd=tmp_path
    ).stdout.strip()
    assert Path(where) == site_packages / "rlhf" / "pipeline_specs"
    out = _run([venv / "bin/rlhf", "pipeline", "list"], cwd=tmp_path).stdout
    assert sorted(line.split()[0] for line in out.splitlines()) == [Path(n).stem for n in SHIPPED]


@pytest.mark.slow
def test_client_extra_installs_without_torch(tmp_path: Path) -> None:
    """The acceptance as a user runs it: `python -m build` (sdist, then the wheel from
    it; build requirements and the client's dependencies from the package index), then
    `pip install '<wheel>[client]'` in an empty venv."""
    src = _source_copy(tmp_path / "src")
    _run([sys.executable, "-m", "build", "--outdir", tmp_path / "dist", src], timeout=900)
    (wheel,) = (tmp_path / "dist").glob("rlhf_platform-*.whl")
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", venv])
    _run([venv / "bin/python", "-m", "pip", "install", "-q", f"{wheel}[client]"], timeout=900)
    installed = _run([venv / "bin/python", "-m", "pip", "list", "--format=freeze"]).stdout
    names = {line.split("==")[0].lower() for line in installed.splitlines()}
    assert not names & HEAVY_DISTS, names & HEAVY_DISTS
    _run([venv / "bin/python", "-c", "from rlhf.client import Client"], cwd=tmp_path)
    out = _run([venv / "bin/rlhf", "pipeline", "list"], cwd=tmp_path).stdout
    assert sorted(line.split()[0] for line in out.splitlines()) == [Path(n).stem for n in SHIPPED]
