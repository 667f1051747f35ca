"""Inference service: Generate, Chat (streaming), Classify, Score on Triton; RecordFeedback.

The models run on NVIDIA Triton (dynamic batching; see rlhf.serving). This process
validates requests, picks the model version (canary share, pinned versions), calls
Triton through tritonclient with the caller's remaining deadline, and names the
version that answered in every response. It reacts to `rlhf.model.promoted` by
loading the new version beside the serving one and switching once it is ready, and
publishes `rlhf.feedback.recorded` durably before RecordFeedback returns.

    build_inference_service(settings)   -> InferenceApp (service + engine + bus)
    main()                              -> serve until SIGTERM (what `rlhf serve inference` runs)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from rlhf.services.inference.settings import BatchingSettings, InferenceSettings, ServingSettings

from rlhf.runtime.bus import topics
from rlhf.runtime.grpc import (
    AlreadyExists,
    GrpcServer,
    NotFound,
    RequestInvalid,
    Unavailable,
    check,
    remaining_time,
    require,
    run_server,
)
from rlhf.runtime.grpc.authz import current_principal
from rlhf.runtime.platform_metrics import FEEDBACK_RECORDED, feedback_kind
from rlhf.runtime.settings import load_settings
from rlhf.serving.backend import Sampling
from rlhf.serving.client import ModelInputError, ModelNotLoaded, ServingError, TritonUnavailable
from rlhf.serving.engine import (
    BATCH_SIZE,
    REQUEST_ERRORS,
    REQUEST_LATENCY,
    EngineConfig,
    ServingEngine,
)
from rlhf.serving.repository import BatchingConfig
from rlhf.serving.versions import ServedVersion, UnknownModel
from rlhf.v1 import common_pb2, events_pb2, inference_pb2, inference_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = "rlhf.v1.InferenceService"
TOPIC_MODEL_PROMOTED = topics.MODEL_PROMOTED
TOPIC_FEEDBACK_RECORDED = topics.FEEDBACK_RECORDED
CONSUMER_GROUP = "inference"

#: Byte ceilings of RecordFeedback's text fields.
FEEDBACK_FIELD_LIMITS = {
    "feedback_id": 128,
    "request_id": 128,
    "model_version": 128,
    "pipeline": 64,
    "label": 64,
    "labeller": 128,
    "prompt": 32 * 1024,
    "response": 32 * 1024,
    "chosen": 32 * 1024,
    "rejected": 32 * 1024,
}
MAX_PROMPTS = 64
MAX_TEXTS = 256
MAX_NEW_TOKENS = 1024
DEFAULT_MAX_NEW_TOKENS = 64
CHAT_ROLES = ("system", "user", "assistant")

KIND_BY_ENUM = {
    common_pb2.MODEL_KIND_POLICY: "policy",
    common_pb2.MODEL_KIND_REWARD: "reward",
    common_pb2.MODEL_KIND_CLASSIFIER: "classifier",
}
SCORERS = ("classifier", "reward")


# ------------------------------------------------------------------------- validation
def sampling_from_request(params: inference_pb2.SamplingParams, is_set: bool) -> Sampling:
    """Validated sampling parameters; an unset message means the documented defaults.

    Proto3 cannot tell an unset scalar from zero, so inside a set message max_new_tokens
    0 and top_p 0 mean "default" (64 and 1.0); temperature 0 means greedy.
    """
    if not is_set:
        return Sampling(DEFAULT_MAX_NEW_TOKENS, 1.0, 1.0, 0, 0)
    max_new = params.max_new_tokens or DEFAULT_MAX_NEW_TOKENS
    check(
        1 <= max_new <= MAX_NEW_TOKENS,
        "sampling.max_new_tokens",
        f"must be in 1..{MAX_NEW_TOKENS} (got {params.max_new_tokens})",
    )
    temperature = params.temperature
    check(
        math.isfinite(temperature) and temperature >= 0,
        "sampling.temperature",
        f"must be >= 0 (got {temperature})",
    )
    top_p = params.top_p if params.top_p != 0 else 1.0
    check(
        math.isfinite(top_p) and 0 < top_p <= 1,
        "sampling.top_p",
        f"must be in (0, 1] (got {params.top_p})",
    )
    check(params.top_k >= 0, "sampling.top_k", f"must be >= 0 (got {params.top_k})")
    return Sampling(max_new, temperature, top_p, params.top_k, params.seed)


def _check_texts(values: list[str], field: str, limit: int) -> None:
    check(values, field, "is required (at least one)")
    check(len(values) <= limit, field, f"at most {limit} items (got {len(values)})")
    for i, value in enumerate(values):
        check(value.strip(), f"{field}[{i}]", "must not be empty")


def _artifact_path(uri: str) -> str:
    if uri.startswith("file://"):
        return uri[len("file://") :]
    if "://" in uri:
        raise ValueError(f"model.artifact.uri {uri!r}: only file:// URIs can be served")
    return uri


class FeedbackLedger:
    """Feedback ids already published, with a digest of what each said (a small
    append-only file), so a retry is idempotent and a reused id with other content is
    refused instead of silently dropped."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._digests: dict[str, str] = {}
        self.lock = threading.Lock()
        if path is not None and path.exists():
            for line in path.read_text().splitlines():
                feedback_id, _, digest = line.strip().partition("\t")
                if feedback_id:
                    self._digests[feedback_id] = digest

    def __contains__(self, feedback_id: str) -> bool:
        return feedback_id in self._digests

    def conflicts(self, feedback_id: str, digest: str) -> bool:
        """True when `feedback_id` was published with different content (ids recorded
        by earlier releases have no digest and count as the same)."""
        known = self._digests.get(feedback_id)
        return bool(known) and known != digest

    def add(self, feedback_id: str, digest: str = "") -> None:
        self._digests[feedback_id] = digest
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as handle:
                handle.write(f"{feedback_id}\t{digest}\n")


def feedback_digest(event: events_pb2.FeedbackRecorded) -> str:
    """What a feedback event says, without its id."""
    import hashlib

    body = events_pb2.FeedbackRecorded()
    body.CopyFrom(event)
    body.feedback_id = ""
    return hashlib.sha256(body.SerializeToString(deterministic=True)).hexdigest()[:32]


# ---------------------------------------------------------------------------- service
class InferenceService(inference_pb2_grpc.InferenceServiceServicer):
    """The gRPC API over a `ServingEngine` and (for feedback) an event bus."""

    def __init__(
        self,
        engine: ServingEngine,
        config: ServingSettings,
        bus: Any | None = None,
        state_dir: Path | None = None,
        max_workers: int = 64,
        registry: Any | None = None,
    ) -> None:
        self.engine = engine
        self.config = config
        self.bus = bus
        self.registry = registry  # a ModelRegistry: versions feedback may name
        self.feedback = FeedbackLedger(state_dir / "feedback_ids.txt" if state_dir else None)
        # Blocking work (the durable feedback publish) runs here, off the event loop.
        self._executor = ThreadPoolExecutor(max_workers, thread_name_prefix="triton-call")

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    # Plumbing ------------------------------------------------------------------------
    def _timeout(self) -> float:
        left = remaining_time()
        return self.config.request_timeout_s if left is None else max(0.05, left - 0.05)

    def _resolve(self, model: str, version: str, kinds: tuple[str, ...]) -> tuple[str, str]:
        name = model or self.engine.versions.default_name(*kinds)
        if name is None:
            raise Unavailable(
                f"no {' or '.join(kinds)} model is loaded yet; retry after "
                f"{self.config.retry_after_s:g}s"
            )
        try:
            route = self.engine.versions.route_of(name)
        except UnknownModel as exc:
            raise NotFound(str(exc)) from None
        if route.kind not in kinds:
            raise RequestInvalid(
                "model", f"{name!r} is a {route.kind} model, not {' or '.join(kinds)}"
            )
        return name, version

    def _unavailable(self, context: grpc.aio.ServicerContext, message: str) -> Unavailable:
        retry_ms = int(self.config.retry_after_s * 1000)
        context.set_trailing_metadata((("retry-after-ms", str(retry_ms)),))
        return Unavailable(f"{message}; retry after {self.config.retry_after_s:g}s")

    def _map_error(
        self, exc: Exception, context: grpc.aio.ServicerContext, served: ServedVersion, field: str
    ) -> Exception:
        cause = type(exc).__name__
        REQUEST_ERRORS.labels(served.name, served.version, cause).inc()
        if isinstance(exc, ModelInputError):
            message = str(exc)
            if message.startswith("prompts[") and field != "prompts":
                message = message.split(": ", 1)[-1]
            elif message.startswith("prompts["):
                field, message = message.split(": ", 1)
            return RequestInvalid(field, message)
        if isinstance(exc, TritonUnavailable | ModelNotLoaded):
            return self._unavailable(context, f"model server unavailable: {exc}")
        if isinstance(exc, ServingError):
            return Unavailable(f"model server error: {exc}")
        return exc

    def _observe(
        self, served: ServedVersion, method: str, started: float, batches: list[int]
    ) -> None:
        REQUEST_LATENCY.labels(served.name, served.version, method).observe(
            time.perf_counter() - started
        )
        for size in batches:
            BATCH_SIZE.labels(served.name, served.version).observe(size)

    @contextlib.contextmanager
    def _use(self, name: str, version: str) -> Iterator[ServedVersion]:
        """Hold the chosen version for the request; unknown versions are NOT_FOUND."""
        holder = self.engine.versions.use(name, version)
        try:
            served = holder.__enter__()
        except UnknownModel as exc:
            raise NotFound(str(exc)) from None
        try:
            yield served
        finally:
            holder.__exit__(None, None, None)

    async def _generate(
        self,
        context: grpc.aio.ServicerContext,
        served: ServedVersion,
        prompts: list[str],
        sampling: Sampling,
        timeout: float,
    ) -> tuple[list[str], int]:
        stream = self.engine.client.generate_stream_async(
            served.backend_name, prompts, sampling, False, False, timeout
        )
        try:
            async for event in stream:
                if event.final:
                    return event.texts or [], event.batch_size
        except (ServingError, OSError) as exc:
            raise self._map_error(exc, context, served, "prompts") from None
        finally:
            await stream.aclose()
        raise self._unavailable(context, "the model server ended the stream early")

    # RPCs ----------------------------------------------------------------------------
    async def Generate(self, request, context):  # noqa: N802, ANN001, ANN201
        prompts = list(request.prompts)
        _check_texts(prompts, "prompts", MAX_PROMPTS)
        sampling = sampling_from_request(request.sampling, request.HasField("sampling"))
        name, version = self._resolve(request.model, request.version, ("policy",))
        client = self.engine.client
        started = time.perf_counter()
        with self._use(name, version) as served:
            step = client.policy_max_batch
            chunks = [prompts[i : i + step] for i in range(0, len(prompts), step)]
            timeout = self._timeout()
            results = await asyncio.gather(
                *(self._generate(context, served, chunk, sampling, timeout) for chunk in chunks)
            )
        completions = [text for texts, _ in results for text in texts]
        self._observe(served, "Generate", started, [batch for _, batch in results])
        return inference_pb2.GenerateResponse(
            completions=completions, model_version=served.version, request_id=uuid.uuid4().hex
        )

    async def Chat(self, request, context) -> AsyncIterator[inference_pb2.ChatChunk]:  # noqa: N802, ANN001
        messages = list(request.messages)
        check(messages, "messages", "is required (at least one message)")
        for i, message in enumerate(messages):
            check(
                message.role in CHAT_ROLES,
                f"messages[{i}].role",
                f"must be one of {', '.join(CHAT_ROLES)} (got {message.role!r})",
            )
        check(messages[-1].role == "user", "messages", "the last message must be from 'user'")
        check(
            messages[-1].content.strip(),
            f"messages[{len(messages) - 1}].content",
            "must not be empty",
        )
        sampling = sampling_from_request(request.sampling, request.HasField("sampling"))
        name, version = self._resolve(request.model, request.version, ("policy",))
        payload = json.dumps(
            [{"role": m.role, "content": m.content} for m in messages], ensure_ascii=False
        )
        request_id = uuid.uuid4().hex
        started = time.perf_counter()
        with self._use(name, version) as served:
            stream = self.engine.client.generate_stream_async(
                served.backend_name, [payload], sampling, True, True, self._timeout()
            )
            sent, batches = "", []
            try:
                async for event in stream:
                    batches.append(event.batch_size)
                    if not event.final:
                        sent += event.delta
                        yield inference_pb2.ChatChunk(
                            delta=event.delta, model_version=served.version, request_id=request_id
                        )
                        continue
                    full = (event.texts or [""])[0]
                    rest = full[len(sent) :] if full.startswith(sent) else ""
                    yield inference_pb2.ChatChunk(
                        delta=rest, done=True, model_version=served.version, request_id=request_id
                    )
                    break
            except (ServingError, OSError) as exc:
                raise self._map_error(exc, context, served, "messages") from None
            finally:
                await stream.aclose()  # cancels the Triton request if the client went away
        self._observe(served, "Chat", started, batches[-1:])

    async def _classify(
        self,
        context,
        name: str,
        version: str,
        texts: list[str],
        pairs: list[str] | None,
        method: str,
    ):  # noqa: ANN001, ANN202
        client = self.engine.client
        started = time.perf_counter()
        with self._use(name, version) as served:
            try:
                outputs, batches = await client.classify_async(
                    served.backend_name, texts, pairs, self._timeout()
                )
            except (ServingError, OSError) as exc:
                raise self._map_error(exc, context, served, "texts") from None
        self._observe(served, method, started, batches)
        return outputs, served

    async def Classify(self, request, context):  # noqa: N802, ANN001, ANN201
        texts = list(request.texts)
        _check_texts(texts, "texts", MAX_TEXTS)
        name, version = self._resolve(request.model, request.version, ("classifier", "reward"))
        outputs, served = await self._classify(context, name, version, texts, None, "Classify")
        return inference_pb2.InferenceClassifyResponse(
            results=[inference_pb2.ClassifyResult(label=o.label, score=o.score) for o in outputs],
            model_version=served.version,
            request_id=uuid.uuid4().hex,
        )

    async def Score(self, request, context):  # noqa: N802, ANN001, ANN201
        prompts, responses = list(request.prompts), list(request.responses)
        _check_texts(prompts, "prompts", MAX_TEXTS)
        check(
            len(responses) == len(prompts),
            "responses",
            f"must have one entry per prompt ({len(prompts)}), got {len(responses)}",
        )
        name, version = self._resolve(request.model, request.version, ("reward", "classifier"))
        outputs, served = await self._classify(context, name, version, prompts, responses, "Score")
        return inference_pb2.InferenceScoreResponse(
            scores=[o.reward for o in outputs], model_version=served.version
        )

    def _pipeline_of(self, version: str) -> str:
        if self.registry is None:
            return ""
        from rlhf.registry import ModelNotFound

        try:
            return self.registry.get(version).lineage.pipeline
        except ModelNotFound:
            return ""

    def _known_version(self, version: str) -> bool:
        if self.engine.versions.has_served(version):
            return True
        if self.registry is None:
            return False
        from rlhf.registry import ModelNotFound

        try:
            self.registry.get(version)
        except ModelNotFound:
            return False
        return True

    async def RecordFeedback(self, request, context):  # noqa: N802, ANN001, ANN201
        require(request, "request_id", "model_version")
        check(
            request.kind != events_pb2.FEEDBACK_KIND_UNSPECIFIED,
            "kind",
            "is required (THUMBS, RATING, PREFERENCE or LABEL)",
        )
        check(
            request.kind in events_pb2.FeedbackKind.values(), "kind", f"unknown kind {request.kind}"
        )
        if request.kind == events_pb2.FEEDBACK_KIND_RATING:
            check(1 <= request.rating <= 5, "rating", f"must be in 1..5 (got {request.rating})")
        if request.kind == events_pb2.FEEDBACK_KIND_PREFERENCE:
            require(request, "chosen", "rejected")
            check(
                request.chosen.strip() != request.rejected.strip(),
                "rejected",
                "must differ from chosen (a preference needs two different responses)",
            )
        elif request.kind == events_pb2.FEEDBACK_KIND_LABEL:
            require(request, "label")
            check(
                (request.prompt or request.response).strip(),
                "prompt",
                "is required: the text the corrected label belongs to",
            )
        else:  # thumbs and ratings judge a response
            check(request.response.strip(), "response", "must not be empty")
        check(
            self._known_version(request.model_version),
            "model_version",
            f"unknown model version {request.model_version[:80]!r}",
        )
        for field, limit in FEEDBACK_FIELD_LIMITS.items():
            size = len(getattr(request, field).encode())
            check(size <= limit, field, f"is {size} bytes; the limit is {limit}")
        # Feedback for a pipeline that does not exist could never retrain anything: data
        # prep would dead-letter it after it was acknowledged. Without a pipeline, the
        # one the version was trained in (its lineage) is meant.
        pipeline = request.pipeline or self._pipeline_of(request.model_version)
        check(
            not pipeline or _installed_pipeline(pipeline),
            "pipeline",
            f"unknown pipeline {pipeline[:80]!r}",
        )
        if self.bus is None:
            raise self._unavailable(context, "no event bus is configured for feedback")
        client_id = request.feedback_id or uuid.uuid4().hex
        # Ids are scoped by caller: one client's id cannot silence another's feedback.
        principal = current_principal.get()
        feedback_id = f"{principal.name}/{client_id}" if principal is not None else client_id
        event = events_pb2.FeedbackRecorded(
            feedback_id=feedback_id,
            stage="inference",
            pipeline=pipeline,
            model_version=request.model_version,
            kind=request.kind,
            prompt=request.prompt,
            response=request.response,
            thumbs_up=request.thumbs_up,
            rating=request.rating,
            chosen=request.chosen,
            rejected=request.rejected,
            label=request.label,
            confidence=request.confidence,
            labeller=request.labeller,
        )

        digest = feedback_digest(event)

        def publish() -> bool:
            with self.feedback.lock:  # a concurrent retry of the same id waits, then skips
                if feedback_id in self.feedback:
                    return not self.feedback.conflicts(feedback_id, digest)
                self.bus.publish(
                    TOPIC_FEEDBACK_RECORDED,
                    event,
                    key=pipeline or request.model_version,
                    event_id=feedback_id,
                )
                self.feedback.add(feedback_id, digest)
                FEEDBACK_RECORDED.labels(feedback_kind(request.kind)).inc()
                return True

        try:
            same = await asyncio.get_running_loop().run_in_executor(self._executor, publish)
        except Exception as exc:  # noqa: BLE001 - broker trouble: the client retries
            log.warning("feedback %s not published: %s", feedback_id, exc)
            raise self._unavailable(context, f"event bus did not acknowledge: {exc}") from None
        if not same:
            raise AlreadyExists(
                f"feedback_id {client_id[:80]!r} was already used for different feedback"
            )
        return inference_pb2.RecordFeedbackResponse(feedback_id=client_id, durable=True)

    # Events --------------------------------------------------------------------------
    def on_model_promoted(self, payload: events_pb2.ModelPromoted) -> ServedVersion:
        """Load the promoted version beside the serving one, then route to it.

        Blocks until loaded (called on a bus consumer thread). Idempotent: a version that
        is already live only has its canary share updated.
        """
        model = payload.model
        kind = KIND_BY_ENUM.get(model.kind)
        if kind is None:
            raise ValueError(
                f"model.kind {model.kind} is not servable (policy, reward, classifier)"
            )
        if not model.name or not model.version or not model.artifact.uri:
            raise ValueError("model.name, model.version and model.artifact.uri are required")
        percent = payload.canary_percent or self.config.default_canary_percent
        return self.engine.versions.deploy(
            model.name, model.version, kind, _artifact_path(model.artifact.uri), min(percent, 100)
        )

    def _on_promoted_event(self, event: Any) -> None:
        self.on_model_promoted(event.payload)


def _installed_pipeline(name: str) -> bool:
    import re

    from rlhf.pipelines import PIPELINE_NAME, PIPELINES_DIR

    return bool(re.fullmatch(PIPELINE_NAME, name)) and (PIPELINES_DIR / f"{name}.yaml").is_file()


# ------------------------------------------------------------------------------ wiring
def _batching(settings: BatchingSettings) -> BatchingConfig:
    return BatchingConfig(
        settings.max_batch_size,
        list(settings.preferred_batch_sizes),
        settings.max_queue_delay_us,
        settings.instance_count,
        settings.continuous,
    )


def engine_config(settings: InferenceSettings) -> EngineConfig:
    serving = settings.serving
    repository = serving.model_repository or Path(settings.artifact_dir) / "triton"
    return EngineConfig(
        triton_url=serving.triton_url,
        triton_replicas=serving.triton_replicas,
        replica_resync_s=serving.replica_resync_s,
        model_control=serving.model_control,
        model_repository=Path(repository),
        policy_batching=_batching(serving.policy_batching),
        classifier_batching=_batching(serving.classifier_batching),
        dtype=serving.dtype,
        device=settings.device,
        torch_threads=serving.torch_threads,
        write_repository=serving.write_repository,
    )


@dataclass
class InferenceApp:
    """Everything `build_inference_service` started; `close()` releases it."""

    service: InferenceService
    engine: ServingEngine
    bus: Any | None
    owns_bus: bool

    def close(self) -> None:
        self.service.close()
        if self.bus is not None and self.owns_bus:
            self.bus.close()
        self.engine.stop()


def _resolve_model_dir(model_dir: str) -> str:
    if model_dir.lower() in ("smollm2", "smollm2-135m-instruct"):
        from rlhf.engine.models import resolve_model_dir

        return str(resolve_model_dir(model_dir))
    return model_dir


def build_inference_service(settings: InferenceSettings, bus: Any | None = None) -> InferenceApp:
    """Start Triton (or connect), load the configured models, create/attach the bus.

    Pass `bus` to share one (e.g. the in-process bus of `rlhf demo`); otherwise one is
    created from `settings.bus`. Blocking; call from a thread in async code.
    """
    engine = ServingEngine(engine_config(settings)).start()
    owns_bus = bus is None
    try:
        if bus is None:
            from rlhf.runtime.bus import create_bus

            bus = create_bus(settings, source="inference")
        state_dir = Path(settings.artifact_dir) / "state" / "inference"
        from rlhf.registry import ModelRegistry

        registry = ModelRegistry(
            Path(settings.artifact_dir) / "registry", database=settings.store.postgres_url
        )
        service = InferenceService(engine, settings.serving, bus, state_dir, registry=registry)
        if settings.serving.subscribe_promotions:
            bus.subscribe(TOPIC_MODEL_PROMOTED, CONSUMER_GROUP, service._on_promoted_event)
        if owns_bus:
            bus.start()
        for model in settings.serving.models:
            engine.versions.deploy(
                model.name, model.version, model.kind, _resolve_model_dir(model.model_dir), 100
            )
    except BaseException:
        if bus is not None and owns_bus:
            bus.close()
        engine.stop()
        raise
    return InferenceApp(service, engine, bus, owns_bus)


async def attach(server: GrpcServer, app: InferenceApp) -> None:
    """Register the service (NOT_SERVING until Triton and its models are ready), keep
    health in step with Triton, release everything on shutdown."""
    server.add_servicer(
        inference_pb2_grpc.add_InferenceServiceServicer_to_server,
        app.service,
        SERVICE_NAME,
        serving=False,
    )
    interval = app.service.config.readiness_interval_s

    async def watch_readiness() -> None:
        loop = asyncio.get_running_loop()
        last: bool | None = None
        while True:
            ready = await loop.run_in_executor(None, app.engine.ready)
            if ready != last:
                log.info("inference readiness: %s", "SERVING" if ready else "NOT_SERVING")
                await server.set_serving(SERVICE_NAME, ready)
                last = ready
            await asyncio.sleep(interval)

    task = asyncio.get_running_loop().create_task(watch_readiness())

    async def shutdown() -> None:
        task.cancel()
        await asyncio.get_running_loop().run_in_executor(None, app.close)

    server.on_shutdown(shutdown)


SETTINGS_CLASS = InferenceSettings


async def register(server: GrpcServer, ctx: Any) -> InferenceService:
    """Hook for `rlhf serve inference` (rlhf.cli.serve): build on the CLI's bus and
    settings. `ctx.settings` may be the base Settings; the `serving` section then comes
    from RLHF_SERVING__* environment variables (or defaults)."""
    settings = ctx.settings
    if not isinstance(settings, InferenceSettings):
        settings = load_settings(InferenceSettings, **settings.model_dump(exclude_unset=True))
    app = await asyncio.to_thread(build_inference_service, settings, ctx.bus)
    await attach(server, app)
    return app.service


def main(config_file: str | None = None, **overrides: Any) -> int:
    """Serve until SIGTERM/SIGINT; returns the exit code (`rlhf serve inference`)."""
    settings = load_settings(InferenceSettings, config_file, **overrides)

    async def configure(server: GrpcServer) -> None:
        app = await asyncio.get_running_loop().run_in_executor(
            None, build_inference_service, settings
        )
        await attach(server, app)

    return run_server(settings, "inference", configure)


if __name__ == "__main__":
    raise SystemExit(main())
