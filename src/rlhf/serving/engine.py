"""The serving side of the inference service, without gRPC: Triton plus versions.

`ServingEngine` owns (optionally) a local tritonserver, the tritonclient wrapper, the
model repository and the `VersionManager`. Local mode starts Triton from the
nvidia-pytriton wheel; cluster mode (`triton_url` set) talks to an external Triton in
explicit model-control mode whose repository is shared (the engine writes the entry
for each new version there, or finds one the trainer published). With several Triton
replicas (`triton_replicas`), every load/unload goes to each of them and a reconcile
loop keeps them on the same versions (`rlhf.serving.replicas`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.core import CounterMetricFamily

from rlhf.runtime import metrics
from rlhf.serving.client import TritonClient
from rlhf.serving.replicas import TritonReplicas
from rlhf.serving.repository import BatchingConfig, triton_model_name, write_model_version
from rlhf.serving.triton_server import LocalTritonConfig, LocalTritonServer
from rlhf.serving.versions import ServedVersion, VersionManager

log = logging.getLogger(__name__)

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)

REQUEST_LATENCY = metrics.histogram(
    "rlhf_inference_request_seconds",
    "End-to-end latency of inference calls through Triton",
    ["model", "version", "method"],
)
BATCH_SIZE = metrics.histogram(
    "rlhf_inference_batch_size",
    "Rows in the Triton batch that served a request",
    ["model", "version"],
    buckets=BATCH_BUCKETS,
)
REQUEST_ERRORS = metrics.counter(
    "rlhf_inference_errors", "Failed inference calls by cause", ["model", "version", "cause"]
)


@dataclass
class EngineConfig:
    """Where Triton runs and how models are served."""

    triton_url: str | None = None
    """host:port of an external Triton (gRPC); None starts one locally. Requests go here."""
    triton_replicas: str | None = None
    """Every Triton replica, for model control: a headless Service `host:port` (one DNS A
    record per pod) or `host:port,host:port`. None: `triton_url` (or the local one) only."""
    replica_resync_s: float = 10.0
    """Seconds between reconciles of the replicas (sooner after an error)."""
    model_control: str = "explicit"
    """Triton's --model-control-mode: "explicit" (loads/unloads from here) or "poll"
    (Triton loads what appears in the repository; loads here only wait for it)."""
    model_repository: Path = Path("artifacts/triton")
    """Triton model repository; shared with the external Triton in cluster mode."""
    policy_batching: BatchingConfig = field(default_factory=BatchingConfig)
    classifier_batching: BatchingConfig = field(
        default_factory=lambda: BatchingConfig(64, [8, 16, 32], 5000)
    )
    dtype: str = "float32"
    """torch dtype of served weights ("float32" or "bfloat16")."""
    device: str = "cpu"
    """"cpu" or "cuda" (Triton places one instance per GPU; KIND_GPU)."""
    torch_threads: int = 1
    """Intra-op threads per model process (0 = torch's default). One thread per model
    process measured 3-10x faster than two on a loaded 2-core machine (no spin-waiting)."""
    write_repository: bool = True
    """Write each version's repository entry (False: the trainer publishes them)."""
    load_timeout_s: float = 600.0
    drain_timeout_s: float = 60.0
    startup_timeout_s: float = 120.0


class TritonLoader:
    """`Loader` for the VersionManager: repository entry + Triton load/unload."""

    def __init__(self, engine: ServingEngine) -> None:
        self.engine = engine

    def load(self, version: ServedVersion) -> None:
        cfg = self.engine.config
        version.backend_name = triton_model_name(version.version)
        if cfg.write_repository:
            policy = version.kind == "policy"
            batching = cfg.policy_batching if policy else cfg.classifier_batching
            write_model_version(
                cfg.model_repository,
                version.version,
                "policy" if policy else "classifier",  # reward models are classifiers
                version.model_dir,
                batching,
                cfg.dtype,
                torch_threads=cfg.torch_threads,
                device=cfg.device,
            )
        started = time.perf_counter()
        self.engine.replicas.load(version.backend_name)
        log.info("triton loaded %s in %.1fs", version.backend_name, time.perf_counter() - started)

    def unload(self, version: ServedVersion) -> None:
        self.engine.replicas.unload(version.backend_name)


class _TritonStatsCollector:
    """Exports Triton's own per-model counters (queue and compute time) at scrape time."""

    def __init__(self, engine: ServingEngine) -> None:
        self.engine = engine

    def collect(self):  # noqa: ANN201 - prometheus collector protocol
        queue = CounterMetricFamily(
            "rlhf_triton_queue_seconds",
            "Time requests waited in Triton's dynamic-batching queue",
            labels=["model", "version"],
        )
        compute = CounterMetricFamily(
            "rlhf_triton_compute_seconds",
            "Time Triton spent executing",
            labels=["model", "version"],
        )
        executions = CounterMetricFamily(
            "rlhf_triton_executions", "Batches executed by Triton", labels=["model", "version"]
        )
        try:
            live = {v.backend_name: v for v in self.engine.versions.live_versions()}
            stats = self.engine.client.statistics("") if live else {}
        except Exception:  # noqa: BLE001 - Triton down: no samples this scrape
            stats = {}
        for entry in stats.get("model_stats", []):
            served = live.get(entry.get("name", ""))
            if served is None:
                continue
            labels = [served.name, served.version]
            inference = entry.get("inference_stats", {})
            queue.add_metric(labels, int(inference.get("queue", {}).get("ns", 0)) / 1e9)
            compute.add_metric(labels, int(inference.get("compute_infer", {}).get("ns", 0)) / 1e9)
            executions.add_metric(labels, int(entry.get("execution_count", 0)))
        yield from (queue, compute, executions)


class ServingEngine:
    """Start (or connect to) Triton and manage the served versions."""

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.server: LocalTritonServer | None = None
        self.client: TritonClient | None = None  # type: ignore[assignment]
        self.replicas: TritonReplicas | None = None
        self.versions = VersionManager(TritonLoader(self), config.drain_timeout_s)
        self._collector: _TritonStatsCollector | None = None

    def start(self) -> ServingEngine:
        url = self.config.triton_url
        if url is None:
            self.server = LocalTritonServer(
                LocalTritonConfig(
                    self.config.model_repository.resolve(),
                    startup_timeout_s=self.config.startup_timeout_s,
                )
            ).start()
            url = self.server.grpc_url
        self.client = TritonClient(
            url,
            classifier_max_batch=self.config.classifier_batching.max_batch_size,
            policy_max_batch=self.config.policy_batching.max_batch_size,
        )
        spread = self.config.triton_replicas
        self.replicas = TritonReplicas(
            spread or url,
            resolve=bool(spread),
            resync_s=self.config.replica_resync_s,
            load_timeout_s=self.config.load_timeout_s,
            poll=self.config.model_control == "poll",
        )
        if spread:
            self.replicas.start()
        else:
            self.replicas.refresh()
        if self._collector is None:
            self._collector = _TritonStatsCollector(self)
            metrics.REGISTRY.register(self._collector)
        return self

    def ready(self) -> bool:
        """Triton answers and every routed version is loaded on every replica that
        answers (feeds gRPC health; see `TritonReplicas.ready`)."""
        if self.replicas is None:
            return False
        return self.replicas.ready(v.backend_name for v in self.versions.live_versions())

    def stop(self) -> None:
        if self._collector is not None:
            metrics.REGISTRY.unregister(self._collector)
            self._collector = None
        if self.client is not None:
            if self.server is not None:  # our own Triton: unloading happens on exit
                self.client.close()
            else:
                self.versions.close()
                self.client.close()
        if self.replicas is not None:
            self.replicas.close()
            self.replicas = None
        if self.server is not None:
            self.server.stop()
            self.server = None

    def __enter__(self) -> ServingEngine:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
