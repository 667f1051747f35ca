"""The chart's Triton command line, run by a real tritonserver (from nvidia-pytriton, CPU).

Only the paths and ports differ from the rendered args (free loopback ports instead of
8000/8001/8002, a temporary model repository); the probes' HTTP paths must answer 200.
"""

from __future__ import annotations

import subprocess
import sysconfig
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from rlhf.runtime.ports import free_port
from tests.charts.helmtools import by_name, render

pytestmark = [pytest.mark.helm, pytest.mark.triton]


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status
    except (urllib.error.URLError, ConnectionError):
        return 0


def test_rendered_triton_args_start_a_real_server(tmp_path) -> None:
    import pytriton

    home = Path(pytriton.__file__).parent / "tritonserver"
    binary = home / "bin" / "tritonserver"
    assert binary.is_file(), f"no tritonserver in {home}: is nvidia-pytriton installed?"
    container = by_name(render(), "Deployment", "t-rlhf-triton")["spec"]["template"]["spec"][
        "containers"
    ][0]
    assert container["command"] == ["tritonserver"]
    ports = {"http": free_port(), "grpc": free_port(), "metrics": free_port()}
    (tmp_path / "models").mkdir()
    args = []
    for arg in container["args"]:
        flag = arg.split("=", 1)[0]
        if flag == "--model-repository":
            arg = f"--model-repository={tmp_path / 'models'}"
        elif flag in ("--http-port", "--grpc-port", "--metrics-port"):
            arg = f"{flag}={ports[flag[2:].split('-')[0]]}"
        args.append(arg)
    args.append(f"--backend-directory={home / 'backends'}")
    # The bundled Python-backend stub needs the running interpreter's libpython.
    env = {"LD_LIBRARY_PATH": sysconfig.get_config_var("LIBDIR"), "PATH": "/usr/bin:/bin"}
    log = (tmp_path / "triton.log").open("wb")
    proc = subprocess.Popen([str(binary), *args], stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        probes = {
            p: container[p]["httpGet"]["path"]
            for p in ("startupProbe", "readinessProbe", "livenessProbe")
        }
        deadline = time.monotonic() + 90
        base = f"http://127.0.0.1:{ports['http']}"
        while _get(base + probes["startupProbe"]) != 200:
            assert proc.poll() is None, (tmp_path / "triton.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "tritonserver did not start"
            time.sleep(0.5)
        for probe, path in probes.items():
            assert _get(base + path) == 200, probe
        assert _get(f"http://127.0.0.1:{ports['metrics']}/metrics") == 200
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
