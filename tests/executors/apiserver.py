"""A real, throwaway Kubernetes control plane for tests: etcd + kube-apiserver on loopback.

No scheduler, controller-manager or kubelet: objects are stored, validated, authorised
(RBAC) and watched exactly as on a cluster, but nothing runs them. Tests play the Job
controller themselves by writing the Job's status subresource.

Binaries: kube-apiserver from $RLHF_KUBE_APISERVER, .cache/bin or PATH (built by
scripts/setup.d/20-helm.sh from the k8s.io/kubernetes Go module); etcd from
$RLHF_ETCD, .cache/bin or PATH (Debian's etcd-server). Missing binaries fail the tests.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from rlhf.runtime.ports import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("RLHF_TOOLS_BIN", REPO_ROOT / ".cache" / "bin"))

ADMIN_TOKEN = "admin-token"
TRAINER_TOKEN = "trainer-token"


def find_binary(name: str, env: str) -> str | None:
    for candidate in (os.environ.get(env), BIN / name, shutil.which(name)):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


@dataclass
class ControlPlane:
    url: str
    workdir: Path

    @property
    def ca_file(self) -> Path:
        """The serving certificate with its self-signed CA (written by kube-apiserver)."""
        return self.workdir / "certs" / "apiserver.crt"

    def client(self, token: str):
        """An ApiClient authenticated with a static token, verifying the server's TLS."""
        from kubernetes import client

        config = client.Configuration()
        config.host = self.url
        config.ssl_ca_cert = str(self.ca_file)
        config.api_key = {"authorization": f"Bearer {token}"}
        return client.ApiClient(config)


def _wait(proc: subprocess.Popen, log: Path, check, what: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        if check():
            return
        time.sleep(0.25)
    raise RuntimeError(f"{what} not ready after {timeout_s}s:\n{log.read_text()[-3000:]}")


@contextmanager
def control_plane(workdir: Path, users: dict[str, str]) -> Iterator[ControlPlane]:
    """etcd + kube-apiserver (RBAC on) with static tokens: {token: user name}."""
    import urllib3

    apiserver = find_binary("kube-apiserver", "RLHF_KUBE_APISERVER")
    etcd = find_binary("etcd", "RLHF_ETCD")
    if not apiserver or not etcd:
        raise FileNotFoundError(
            f"kube-apiserver={apiserver} etcd={etcd}: run scripts/setup.d/20-helm.sh "
            "(builds kube-apiserver, installs etcd-server)"
        )
    workdir.mkdir(parents=True, exist_ok=True)
    etcd_port, etcd_peer, api_port = free_port(), free_port(), free_port()
    key = workdir / "sa.key"
    subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], check=True, capture_output=True)
    tokens = workdir / "tokens.csv"
    lines = [f'{ADMIN_TOKEN},admin,admin,"system:masters"']
    lines += [f"{token},{user},{user}" for token, user in users.items()]
    tokens.write_text("\n".join(lines) + "\n")

    procs: list[subprocess.Popen] = []
    try:
        etcd_log = workdir / "etcd.log"
        etcd_url = f"http://127.0.0.1:{etcd_port}"
        # fmt: off
        etcd_cmd = [
            etcd, "--data-dir", str(workdir / "etcd"), "--name", "test",
            "--listen-client-urls", etcd_url, "--advertise-client-urls", etcd_url,
            "--listen-peer-urls", f"http://127.0.0.1:{etcd_peer}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{etcd_peer}",
            "--initial-cluster", f"test=http://127.0.0.1:{etcd_peer}",
            "--unsafe-no-fsync",
        ]
        # fmt: on
        procs.append(
            subprocess.Popen(
                etcd_cmd,
                stdout=etcd_log.open("wb"),
                stderr=subprocess.STDOUT,
                env={**os.environ, "ETCD_UNSUPPORTED_ARCH": "amd64"},
            )
        )
        http = urllib3.PoolManager(retries=False)

        def etcd_ok() -> bool:
            try:
                return http.request("GET", f"{etcd_url}/health", timeout=1).status == 200
            except urllib3.exceptions.HTTPError:
                return False

        _wait(procs[0], etcd_log, etcd_ok, "etcd", 30)

        api_log = workdir / "kube-apiserver.log"
        url = f"https://127.0.0.1:{api_port}"
        # fmt: off
        api_cmd = [
            apiserver, "--etcd-servers", etcd_url,
            "--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1",
            "--secure-port", str(api_port), "--cert-dir", str(workdir / "certs"),
            "--service-cluster-ip-range", "10.96.0.0/24",
            "--authorization-mode", "RBAC", "--token-auth-file", str(tokens),
            "--service-account-issuer", "https://kubernetes.default.svc",
            "--service-account-key-file", str(key),
            "--service-account-signing-key-file", str(key),
            "--enable-priority-and-fairness=false",
            # No controller creates ServiceAccount tokens here.
            "--disable-admission-plugins", "ServiceAccount",
            "--v", "1",
        ]
        # fmt: on
        procs.append(
            subprocess.Popen(
                api_cmd,
                stdout=api_log.open("wb"),
                stderr=subprocess.STDOUT,
            )
        )
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

        # The serving certificate (with its CA) appears once the server starts.
        def api_ok() -> bool:
            cert = workdir / "certs" / "apiserver.crt"
            if not cert.exists():
                return False
            pool = urllib3.PoolManager(ca_certs=str(cert), retries=False)
            try:
                response = pool.request("GET", f"{url}/readyz", headers=headers, timeout=2)
            except urllib3.exceptions.HTTPError:
                return False
            return response.status == 200

        _wait(procs[1], api_log, api_ok, "kube-apiserver", 120)
        yield ControlPlane(url=url, workdir=workdir)
    finally:
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
