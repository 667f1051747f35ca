"""Model control on every Triton replica, so all replicas serve the same versions.

Behind one ClusterIP Service a `load_model` reaches whichever replica the connection
landed on; the others keep what they had. `TritonReplicas` resolves the endpoints to
every replica instead (a headless Service answers one DNS A record per ready pod; a
comma-separated list of host:port works the same way), sends each load/unload to every
replica, and runs a reconcile loop: it re-resolves periodically and after errors, reads
each replica's repository index and loads what is missing, so a new or restarted
replica catches up with the current versions. Inference requests do not go through
here: they keep using the normal Service.

In poll mode (`--model-control-mode=poll`) Triton loads what appears in the shared
repository by itself and refuses load/unload requests: `load` then only waits until
every replica has the version, and nothing is unloaded (an entry stays loaded while it
is in the repository).

Unloads in the loop touch only versions this process retired itself: with several
inference replicas (which may briefly route different versions) one must not unload
what another still serves, and versions it never knew are left alone.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol, TypeVar

from rlhf.serving.client import ModelNotLoaded, TritonClient, TritonUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")

#: host, port -> the IP addresses the host resolves to.
Resolver = Callable[[str, int], list[str]]


class ReplicaClient(Protocol):
    """What the control plane needs from one replica (a `TritonClient`, or a fake)."""

    def loaded_models(self, timeout_s: float = 5.0) -> set[str]: ...
    def load_model(self, name: str, timeout_s: float = 600.0) -> None: ...
    def unload_model(self, name: str, timeout_s: float = 60.0) -> None: ...
    def close(self) -> None: ...


def dns_addresses(host: str, port: int) -> list[str]:
    """Every A/AAAA record of `host` (a headless Service: one per ready pod)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def parse_endpoints(spec: str) -> list[tuple[str, int]]:
    """`host:port[,host:port...]` (IPv6 as `[addr]:port`) as (host, port) pairs."""
    pairs = []
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        host, sep, port = item.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"Triton endpoint {item!r} is not host:port")
        pairs.append((host.strip("[]"), int(port)))
    if not pairs:
        raise ValueError(f"no Triton endpoint in {spec!r}")
    return pairs


def resolve_endpoints(spec: str, resolver: Resolver = dns_addresses) -> list[str]:
    """The replicas' `ip:port` addresses, sorted and unique; a host that does not
    resolve (a headless Service without ready pods) contributes none."""
    addresses: set[str] = set()
    for host, port in parse_endpoints(spec):
        try:
            ips = resolver(host, port)
        except OSError as exc:
            log.warning("resolving Triton replicas %s: %s", host, exc)
            continue
        addresses.update(f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}" for ip in ips)
    return sorted(addresses)


def _verbatim(host: str, port: int) -> list[str]:
    return [host]


class TritonReplicas:
    """Load/unload on every replica, a reconcile loop, and readiness over all of them."""

    def __init__(
        self,
        endpoints: str,
        *,
        resolve: bool = True,
        resolver: Resolver = dns_addresses,
        connect: Callable[[str], ReplicaClient] = TritonClient,
        resync_s: float = 10.0,
        load_timeout_s: float = 600.0,
        unload_timeout_s: float = 60.0,
        poll: bool = False,
    ) -> None:
        """`resolve=False` uses the endpoints as written (one Triton behind one address);
        `poll=True`: Triton polls the repository (see the module docstring)."""
        parse_endpoints(endpoints)  # fail on a bad setting now, not at the first load
        self.endpoints = endpoints
        self.resolver = resolver if resolve else _verbatim
        self.connect = connect
        self.resync_s = resync_s
        self.load_timeout_s = load_timeout_s
        self.unload_timeout_s = unload_timeout_s
        self.poll = poll
        self._clients: dict[str, ReplicaClient] = {}
        self._replica_locks: dict[str, threading.Lock] = {}
        self._desired: set[str] = set()
        self._retired: set[str] = set()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool = ThreadPoolExecutor(32, thread_name_prefix="triton-replica")

    # State ---------------------------------------------------------------------------
    def desired(self) -> frozenset[str]:
        """Triton model names every replica should have loaded."""
        with self._lock:
            return frozenset(self._desired)

    def addresses(self) -> list[str]:
        """The replicas found by the last resolution."""
        with self._lock:
            return sorted(self._clients)

    def refresh(self) -> list[str]:
        """Re-resolve the endpoints; connect to new replicas, drop vanished ones."""
        found = resolve_endpoints(self.endpoints, self.resolver)
        with self._lock:
            gone = [self._clients.pop(a) for a in list(self._clients) if a not in found]
            for address in found:
                if address not in self._clients:
                    self._clients[address] = self.connect(address)
                    self._replica_locks.setdefault(address, threading.Lock())
                    log.info("Triton replica %s joined", address)
        for client in gone:
            client.close()
        return found

    def _each(
        self, action: Callable[[ReplicaClient], T], locked: bool = True
    ) -> dict[str, T | Exception]:
        """Run `action` on every replica in parallel (under the replica's lock, so a
        load and the reconcile never interleave on one replica); result or exception."""
        with self._lock:
            targets = [(a, c, self._replica_locks[a]) for a, c in self._clients.items()]

        def run(client: ReplicaClient, lock: threading.Lock) -> T | Exception:
            try:
                if not locked:
                    return action(client)
                with lock:
                    return action(client)
            except Exception as exc:  # noqa: BLE001 - reported per replica
                return exc

        futures = {a: self._pool.submit(run, c, lock) for a, c, lock in targets}
        return {address: future.result() for address, future in futures.items()}

    # Model control -------------------------------------------------------------------
    def load(self, name: str) -> None:
        """Load `name` on every replica; returns when each reachable one has it.

        A replica that cannot be reached gets it from the reconcile loop later; a load
        the model itself fails, or no reachable replica, raises (and nothing keeps it).
        """
        with self._lock:
            self._desired.add(name)
            self._retired.discard(name)
        self.refresh()
        if self.poll:
            self._await_polled(name)
            return
        results = self._each(lambda c: c.load_model(name, self.load_timeout_s))
        failed = {a: r for a, r in results.items() if isinstance(r, Exception)}
        loaded = [a for a in results if a not in failed]
        errors = [e for e in failed.values() if not isinstance(e, TritonUnavailable)]
        if errors or not loaded:
            with self._lock:
                self._desired.discard(name)
            if loaded:
                self._each(lambda c: c.unload_model(name, self.unload_timeout_s))
            if errors:
                raise errors[0]
            reason = next(iter(failed.values()), "no replica resolved")
            raise TritonUnavailable(
                f"no Triton replica of {self.endpoints} loaded {name}: {reason}"
            )
        if failed:
            log.warning("%s not loaded on %s yet (unreachable); the reconcile will", name, failed)
            self._wake.set()

    def _await_polled(self, name: str) -> None:
        """Poll mode: wait until every replica that answers has loaded `name` itself."""
        deadline = time.monotonic() + self.load_timeout_s
        while not self.ready([name]):
            if time.monotonic() > deadline:
                with self._lock:
                    self._desired.discard(name)
                raise ModelNotLoaded(
                    f"{name} is not loaded on every Triton replica after "
                    f"{self.load_timeout_s:g}s (poll mode: is its entry in the repository?)"
                )
            time.sleep(0.5)
            self.refresh()

    def unload(self, name: str) -> None:
        """Unload `name` from every replica; unreachable ones are unloaded later."""
        with self._lock:
            self._desired.discard(name)
            self._retired.add(name)
        if self.poll:
            return
        results = self._each(lambda c: c.unload_model(name, self.unload_timeout_s))
        failed = [r for r in results.values() if isinstance(r, Exception)]
        if failed and len(failed) == len(results):
            raise failed[0]
        if failed:
            log.warning("unloading %s failed on some replicas: %s", name, failed)
            self._wake.set()

    def reconcile(self) -> dict[str, set[str] | Exception]:
        """Re-resolve, then bring each replica to the desired set: load what is missing,
        unload what this process retired. Returns each replica's loaded set (or error)."""
        self.refresh()
        if self.poll:  # Triton loads and unloads by itself
            return self._each(lambda c: c.loaded_models(), locked=False)

        def sync(client: ReplicaClient) -> set[str]:
            with self._lock:  # read while holding the replica's lock (see `_each`)
                desired, retired = set(self._desired), set(self._retired)
            loaded = client.loaded_models()
            for name in sorted(desired - loaded):
                client.load_model(name, self.load_timeout_s)
                log.info("reconcile: loaded %s on a replica that lacked it", name)
            for name in sorted((loaded - desired) & retired):
                client.unload_model(name, self.unload_timeout_s)
            return (loaded | desired) - retired

        results = self._each(sync)
        for address, result in results.items():
            if isinstance(result, Exception):
                log.warning("reconcile of Triton replica %s: %s", address, result)
        return results

    def ready(self, names: Iterable[str]) -> bool:
        """At least one replica answers, and every replica that answers has all of
        `names` loaded. A replica that gives an error instead of its index (down, or
        shutting down: "Server not ready") is not counted: it also fails Triton's
        readiness probe, so it leaves the Service and the DNS answer."""
        wanted = set(names)
        results = self._each(lambda c: c.loaded_models(2.0), locked=False)
        answered = [r for r in results.values() if not isinstance(r, Exception)]
        ok = bool(answered) and all(wanted <= loaded for loaded in answered)
        if answered and not ok:
            self._wake.set()  # a replica lags: reconcile now rather than at the next tick
        return ok

    # Loop ----------------------------------------------------------------------------
    def start(self) -> TritonReplicas:
        """Start the reconcile loop (every `resync_s`, and at once after an error)."""
        self.refresh()
        self._thread = threading.Thread(target=self._loop, name="triton-reconcile", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.reconcile()
            except Exception:  # noqa: BLE001 - keep reconciling
                log.exception("Triton reconcile failed")
            self._wake.wait(self.resync_s)
            self._wake.clear()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(self.load_timeout_s)
        self._pool.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()
