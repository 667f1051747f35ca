"""A real, throwaway Kubernetes control plane for tests, on loopback.

`control_plane`: etcd + kube-apiserver only. Objects are stored, validated, authorised
(RBAC) and watched exactly as on a cluster, but nothing runs them; tests play the Job
controller themselves by writing the Job's status subresource.

`cluster`: the same plus kube-controller-manager, kube-scheduler and KWOK, which keeps
simulated Nodes alive and marks the pods scheduled onto them Running and Ready (no
kubelet, no containers): Deployments roll out, HPAs and PDBs are reconciled, the garbage
collector deletes dependents.

Binaries (built by scripts/setup.d/20-helm.sh: the Kubernetes ones from the
k8s.io/kubernetes Go module, KWOK from sigs.k8s.io/kwok; etcd is Debian's etcd-server),
each from $RLHF_<NAME> (e.g. RLHF_KUBE_SCHEDULER), else $RLHF_TOOLS_BIN (default
.cache/bin), else the build cache ${XDG_CACHE_HOME:-~/.cache}/rlhf/bin/<name>-v<version>,
else PATH.
"""

from __future__ import annotations

import hashlib
import json
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
# Where scripts/setup.d/20-helm.sh keeps what it builds, and the versions it builds.
CACHE_BIN = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rlhf" / "bin"
VERSIONS = {
    "kube-apiserver": os.environ.get("RLHF_KUBE_VERSION", "1.33.13"),
    "kube-controller-manager": os.environ.get("RLHF_KUBE_VERSION", "1.33.13"),
    "kube-scheduler": os.environ.get("RLHF_KUBE_VERSION", "1.33.13"),
    "kwok": os.environ.get("RLHF_KWOK_VERSION", "0.7.0"),
}
CLUSTER_BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")

ADMIN_TOKEN = "admin-token"
TRAINER_TOKEN = "trainer-token"


def find_binary(name: str, env: str | None = None) -> str | None:
    """The executable `name`: $env (default RLHF_<NAME>), BIN, the build cache, PATH."""
    env = env or "RLHF_" + name.upper().replace("-", "_")
    candidates = [os.environ.get(env), BIN / name]
    if name in VERSIONS:
        candidates.append(CACHE_BIN / f"{name}-v{VERSIONS[name]}")
    candidates.append(shutil.which(name))
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def missing_binaries(names: tuple[str, ...] = CLUSTER_BINARIES) -> list[str]:
    return [name for name in names if not find_binary(name)]


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

    def kubeconfig(self, token: str = ADMIN_TOKEN) -> Path:
        """A kubeconfig file for this server and token (for helm, kubectl, controllers)."""
        path = self.workdir / f"kubeconfig-{hashlib.sha256(token.encode()).hexdigest()[:8]}"
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "test",
                    "cluster": {"server": self.url, "certificate-authority": str(self.ca_file)},
                }
            ],
            "users": [{"name": "test", "user": {"token": token}}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}],
            "current-context": "test",
        }
        path.write_text(json.dumps(config))  # JSON is YAML
        return path


def _start(procs: list[subprocess.Popen], cmd: list[str], log: Path, **kwargs) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT, **kwargs)
    procs.append(proc)
    return proc


def _stop(procs: list[subprocess.Popen]) -> None:
    for proc in reversed(procs):
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait(proc: subprocess.Popen, log: Path, check, what: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        if check():
            return
        time.sleep(0.25)
    raise RuntimeError(f"{what} not ready after {timeout_s}s:\n{log.read_text()[-3000:]}")


def _start_control_plane(
    workdir: Path, users: dict[str, str], procs: list[subprocess.Popen]
) -> ControlPlane:
    """Starts etcd and kube-apiserver (appended to procs) and waits until both are ready."""
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
    etcd_proc = _start(
        procs, etcd_cmd, etcd_log, env={**os.environ, "ETCD_UNSUPPORTED_ARCH": "amd64"}
    )
    http = urllib3.PoolManager(retries=False)

    def etcd_ok() -> bool:
        try:
            return http.request("GET", f"{etcd_url}/health", timeout=1).status == 200
        except urllib3.exceptions.HTTPError:
            return False

    _wait(etcd_proc, etcd_log, etcd_ok, "etcd", 30)

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
    api_proc = _start(procs, api_cmd, api_log)
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

    _wait(api_proc, api_log, api_ok, "kube-apiserver", 120)
    return ControlPlane(url=url, workdir=workdir)


@contextmanager
def control_plane(workdir: Path, users: dict[str, str]) -> Iterator[ControlPlane]:
    """etcd + kube-apiserver (RBAC on) with static tokens: {token: user name}."""
    procs: list[subprocess.Popen] = []
    try:
        yield _start_control_plane(workdir, users, procs)
    finally:
        _stop(procs)


KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"


def fake_node(name: str, cpu: str = "32", memory: str = "256Gi", pods: str = "110") -> dict:
    """A Node that KWOK keeps Ready (matched by its annotation) and runs pods on."""
    capacity = {"cpu": cpu, "memory": memory, "pods": pods}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {KWOK_NODE_ANNOTATION: "fake"},
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "type": "kwok",
            },
        },
        "status": {"capacity": capacity, "allocatable": capacity},
    }


@contextmanager
def cluster(workdir: Path, users: dict[str, str], nodes: int = 3) -> Iterator[ControlPlane]:
    """control_plane + kube-controller-manager, kube-scheduler and KWOK with `nodes`
    simulated Nodes (Ready, in zones a/b/c), whose pods KWOK marks Running and Ready."""
    missing = missing_binaries()
    if missing:
        raise FileNotFoundError(f"{missing}: run scripts/setup.d/20-helm.sh")
    procs: list[subprocess.Popen] = []
    try:
        plane = _start_control_plane(workdir, users, procs)
        kubeconfig = str(plane.kubeconfig(ADMIN_TOKEN))
        # fmt: off
        # No health/metrics endpoints (--secure-port 0): the test watches the API instead.
        common = ["--kubeconfig", kubeconfig, "--leader-elect=false", "--secure-port", "0"]
        controller_manager = [
            find_binary("kube-controller-manager"), *common, "--v", "1",
            "--service-cluster-ip-range", "10.96.0.0/24",
            # Reconcile quickly, so a test waits seconds rather than minutes.
            "--horizontal-pod-autoscaler-sync-period", "2s",
            # KWOK's heartbeats can lag on a loaded machine: a node marked NotReady would
            # mark its pods unready and taint it, so allow it minutes, not 50 s.
            "--node-monitor-grace-period", "5m",
            "--concurrent-deployment-syncs", "10", "--concurrent-replicaset-syncs", "10",
        ]
        scheduler = [find_binary("kube-scheduler"), *common, "--v", "1"]
        kwok = [
            find_binary("kwok"), "--kubeconfig", kubeconfig,
            "--manage-all-nodes=false",
            "--manage-nodes-with-annotation-selector", f"{KWOK_NODE_ANNOTATION}=fake",
            "--node-ip", "10.244.0.1", "--cidr", "10.244.0.0/16",
            "--server-address", f"127.0.0.1:{free_port()}",
        ]
        # fmt: on
        components = {
            name: _start(procs, cmd, workdir / f"{name}.log")
            for name, cmd in (
                ("kube-controller-manager", controller_manager),
                ("kube-scheduler", scheduler),
                ("kwok", kwok),
            )
        }
        from kubernetes import client

        core = client.CoreV1Api(plane.client(ADMIN_TOKEN))
        for i in range(nodes):
            node = fake_node(f"kwok-node-{i}")
            node["metadata"]["labels"]["topology.kubernetes.io/zone"] = "abc"[i % 3]
            core.create_node(node)

        def nodes_ready() -> bool:
            ready = 0
            for node in core.list_node().items:
                conditions = {c.type: c.status for c in node.status.conditions or []}
                ready += conditions.get("Ready") == "True"
            return ready == nodes

        deadline = time.monotonic() + 60
        while not nodes_ready():
            for name, proc in components.items():
                if proc.poll() is not None:
                    log = (workdir / f"{name}.log").read_text()[-3000:]
                    raise RuntimeError(f"{name} exited with {proc.returncode}:\n{log}")
            if time.monotonic() > deadline:
                raise RuntimeError(
                    "KWOK did not make the nodes Ready in 60 s:\n"
                    + (workdir / "kwok.log").read_text()[-3000:]
                )
            time.sleep(0.5)
        yield plane
    finally:
        _stop(procs)
