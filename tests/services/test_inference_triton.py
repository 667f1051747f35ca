"""The inference gRPC API against the real tritonserver (tiny models, ~1-2 minutes).

One Triton and one service for the whole module (see tests/triton_plugin.py); the
tests run in file order and the outage test, which kills Triton, comes last.
"""

from __future__ import annotations

import math
import threading
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from rlhf.serving.backend import ClassifierEngine, PolicyEngine, Sampling, chat_prompt
from rlhf.v1 import common_pb2, events_pb2, inference_pb2

pytestmark = pytest.mark.triton
TIMEOUT = 60


def _promoted(name: str, version: str, kind: int, path, canary: int = 100):
    return events_pb2.ModelPromoted(
        model=common_pb2.ModelVersion(
            name=name,
            version=version,
            kind=kind,
            artifact=common_pb2.ArtifactRef(uri=f"file://{path}", kind="model"),
        ),
        canary_percent=canary,
    )


def _wait_for(predicate, timeout: float = 120.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_health_reports_serving_once_models_are_ready(inference_stack):
    health = health_pb2_grpc.HealthStub(inference_stack.channel)
    request = health_pb2.HealthCheckRequest(service="rlhf.v1.InferenceService")
    _wait_for(
        lambda: health.Check(request, timeout=5).status == health_pb2.HealthCheckResponse.SERVING,
        30,
        "SERVING",
    )


def test_classify_and_score_match_the_model_run_locally(inference_stub, inference_stack):
    texts = ["the movie was great", "awful plot", "i loved the actors and the story"]
    reply = inference_stub.Classify(
        inference_pb2.InferenceClassifyRequest(texts=texts), timeout=TIMEOUT
    )
    assert reply.model_version == "classifier-v1" and reply.request_id
    local = ClassifierEngine(str(inference_stack.models.classifier_v1))
    labels, probs, _ = local.score(texts)
    assert [r.label for r in reply.results] == labels
    assert [r.score for r in reply.results] == pytest.approx(probs.tolist(), abs=1e-4)

    prompts, responses = ["how was the film ?", "what is the plot ?"], ["great fun", "boring"]
    scored = inference_stub.Score(
        inference_pb2.InferenceScoreRequest(prompts=prompts, responses=responses), timeout=TIMEOUT
    )
    assert scored.model_version == "classifier-v1"
    _, _, rewards = local.score(prompts, responses)
    assert list(scored.scores) == pytest.approx(rewards.tolist(), abs=1e-4)


def test_generate_batched_greedy_equals_one_at_a_time(inference_stub, inference_stack):
    prompts = ["hello how are", "the movie was very good and the plot"]  # different lengths
    greedy = inference_pb2.SamplingParams(max_new_tokens=6, temperature=0.0)
    reply = inference_stub.Generate(
        inference_pb2.GenerateRequest(prompts=prompts, sampling=greedy), timeout=TIMEOUT
    )
    assert reply.model_version == "policy-v1"
    local = PolicyEngine(str(inference_stack.models.policy_v1))
    expected = [local.generate([p], [Sampling(6, 0.0)])[0] for p in prompts]
    assert list(reply.completions) == expected

    seeded = inference_pb2.SamplingParams(max_new_tokens=6, temperature=1.0, top_p=0.9, seed=7)
    twice = [
        inference_stub.Generate(
            inference_pb2.GenerateRequest(prompts=prompts[:1], sampling=seeded), timeout=TIMEOUT
        ).completions[0]
        for _ in range(2)
    ]
    assert twice[0] == twice[1]  # a seed makes sampling reproducible


def test_chat_streams_tokens(inference_stub, inference_stack):
    messages = [inference_pb2.ChatMessage(role="user", content="hello how are you ?")]
    request = inference_pb2.ChatRequest(
        messages=messages, sampling=inference_pb2.SamplingParams(max_new_tokens=8, temperature=0.0)
    )
    chunks = list(inference_stub.Chat(request, timeout=TIMEOUT))
    assert chunks[-1].done and not any(c.done for c in chunks[:-1])
    assert {c.model_version for c in chunks} == {"policy-v1"}
    assert len({c.request_id for c in chunks}) == 1
    local = PolicyEngine(str(inference_stack.models.policy_v1))
    prompt = chat_prompt(local.tokenizer, [{"role": "user", "content": "hello how are you ?"}])
    expected = local.generate([prompt], [Sampling(8, 0.0)])[0]
    assert "".join(c.delta for c in chunks) == expected
    assert len([c for c in chunks if c.delta]) >= 2, "tokens arrive in several chunks"


GEN, SAMPLE = inference_pb2.GenerateRequest, inference_pb2.SamplingParams
CLS, SCORE = inference_pb2.InferenceClassifyRequest, inference_pb2.InferenceScoreRequest
FEEDBACK = inference_pb2.RecordFeedbackRequest
INVALID, NOT_FOUND = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND
BAD_REQUESTS = [
    ("Generate", GEN(), INVALID, "prompts"),
    ("Generate", GEN(prompts=["ok", "  "]), INVALID, "prompts[1]"),
    ("Generate", GEN(prompts=["hi"], sampling=SAMPLE(temperature=-0.5)), INVALID,
     "sampling.temperature"),
    ("Generate", GEN(prompts=["hi"], sampling=SAMPLE(top_p=1.5)), INVALID, "sampling.top_p"),
    ("Generate", GEN(prompts=["hi"], sampling=SAMPLE(top_p=-0.1)), INVALID, "sampling.top_p"),
    ("Generate", GEN(prompts=["hi"], sampling=SAMPLE(max_new_tokens=5000)), INVALID,
     "sampling.max_new_tokens"),
    ("Generate", GEN(prompts=["hi", "the " * 80]), INVALID, "prompts[1]: prompt has"),
    ("Generate", GEN(model="nope", prompts=["hi"]), NOT_FOUND, "nope"),
    ("Generate", GEN(version="policy-v9", prompts=["hi"]), NOT_FOUND, "policy-v9"),
    ("Generate", GEN(model="classifier", prompts=["hi"]), INVALID, "model"),
    ("Classify", CLS(texts=[""]), INVALID, "texts[0]"),
    ("Classify", CLS(texts=["x"] * 300), INVALID, "texts"),
    ("Score", SCORE(prompts=["a", "b"], responses=["c"]), INVALID, "responses"),
    ("RecordFeedback", FEEDBACK(request_id="r", model_version="v"), INVALID, "kind"),
    ("RecordFeedback", FEEDBACK(request_id="r", model_version="v",
                                kind=events_pb2.FEEDBACK_KIND_RATING, rating=9), INVALID, "rating"),
    ("RecordFeedback", FEEDBACK(request_id="r", model_version="policy-v9", response="ok",
                                kind=events_pb2.FEEDBACK_KIND_THUMBS), INVALID, "model_version"),
    ("RecordFeedback", FEEDBACK(request_id="r", model_version="policy-v1", prompt="p",
                                kind=events_pb2.FEEDBACK_KIND_PREFERENCE, chosen="same",
                                rejected="same"), INVALID, "rejected"),
    ("RecordFeedback", FEEDBACK(request_id="r", model_version="policy-v1", response=" ",
                                kind=events_pb2.FEEDBACK_KIND_RATING, rating=4), INVALID,
     "response"),
]  # fmt: skip


@pytest.mark.parametrize(("method", "request_", "code", "needle"), BAD_REQUESTS)
def test_bad_input_is_rejected_with_the_field(inference_stub, method, request_, code, needle):
    with pytest.raises(grpc.RpcError) as info:
        getattr(inference_stub, method)(request_, timeout=TIMEOUT)
    assert info.value.code() == code
    assert needle in info.value.details()


def test_chat_rejects_a_last_message_not_from_user(inference_stub):
    request = inference_pb2.ChatRequest(
        messages=[inference_pb2.ChatMessage(role="assistant", content="hi")]
    )
    with pytest.raises(grpc.RpcError) as info:
        list(inference_stub.Chat(request, timeout=TIMEOUT))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "messages" in info.value.details()


def test_record_feedback_is_durable_and_idempotent(inference_stub, inference_stack):
    bus = inference_stack.app.bus
    seen: list[events_pb2.FeedbackRecorded] = []
    bus.subscribe(
        "rlhf.feedback.recorded", "test-feedback", lambda event: seen.append(event.payload)
    )
    request = inference_pb2.RecordFeedbackRequest(
        request_id="req-1",
        model_version="policy-v1",
        kind=events_pb2.FEEDBACK_KIND_THUMBS,
        thumbs_up=True,
        prompt="hello",
        response="hi",
        feedback_id="fb-1",
    )
    first = inference_stub.RecordFeedback(request, timeout=TIMEOUT)
    again = inference_stub.RecordFeedback(request, timeout=TIMEOUT)
    assert first.durable and again.durable and first.feedback_id == again.feedback_id == "fb-1"
    _wait_for(lambda: len(seen) >= 1, 10, "feedback event")
    time.sleep(0.5)
    assert [e.feedback_id for e in seen] == ["fb-1"]
    assert seen[0].model_version == "policy-v1" and seen[0].thumbs_up
    # The same id with other content is refused, not silently dropped as a "retry".
    request.thumbs_up = False
    with pytest.raises(grpc.RpcError) as reused:
        inference_stub.RecordFeedback(request, timeout=TIMEOUT)
    assert reused.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert "feedback_id" in reused.value.details()
    too_long = inference_pb2.RecordFeedbackRequest(
        request_id="r", model_version="policy-v1", kind=events_pb2.FEEDBACK_KIND_THUMBS,
        response="x" * 40_000,
    )  # fmt: skip
    with pytest.raises(grpc.RpcError) as big:
        inference_stub.RecordFeedback(too_long, timeout=TIMEOUT)
    assert big.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert big.value.details().startswith("response: ")


def test_version_swap_under_load_loses_no_request(inference_stub, inference_stack):
    """Clients keep calling while model.promoted loads classifier-v2: no errors, and
    every client sees v1 answers, then only v2 answers."""
    stop = threading.Event()
    errors: list[str] = []
    versions: dict[int, list[str]] = {}

    def client(i: int) -> None:
        versions[i] = []
        while not stop.is_set():
            try:
                reply = inference_stub.Classify(
                    inference_pb2.InferenceClassifyRequest(texts=[f"good movie {i}"]),
                    timeout=TIMEOUT,
                )
                versions[i].append(reply.model_version)
                if i % 2 == 0:
                    gen = inference_stub.Generate(
                        inference_pb2.GenerateRequest(
                            prompts=["hello"],
                            sampling=inference_pb2.SamplingParams(max_new_tokens=3),
                        ),
                        timeout=TIMEOUT,
                    )
                    assert gen.model_version == "policy-v1"
            except Exception as exc:  # noqa: BLE001 - collected and asserted below
                errors.append(repr(exc))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    try:
        _wait_for(
            lambda: all(len(v) >= 2 for v in versions.values()) and len(versions) == 6, 60, "load"
        )
        inference_stack.app.bus.publish(
            "rlhf.model.promoted",
            _promoted("classifier", "classifier-v2", common_pb2.MODEL_KIND_CLASSIFIER,
                      inference_stack.models.classifier_v2),
            key="classifier",
        )  # fmt: skip
        _wait_for(
            lambda: all(v and v[-1] == "classifier-v2" for v in versions.values()), 180, "switch"
        )
        time.sleep(1.0)
    finally:
        stop.set()
        for thread in threads:
            thread.join(TIMEOUT)
    assert errors == []
    for seq in versions.values():
        switch = seq.index("classifier-v2")
        assert switch > 0 and set(seq[:switch]) == {"classifier-v1"}
        assert set(seq[switch:]) == {"classifier-v2"}
    # The old version was unloaded once drained.
    live = {v.version for v in inference_stack.app.engine.versions.live_versions()}
    assert live == {"classifier-v2", "policy-v1"}


def test_canary_share_pinning_and_rollback(inference_stub, inference_stack):
    service = inference_stack.app.service
    service.on_model_promoted(
        _promoted("policy", "policy-v2", common_pb2.MODEL_KIND_POLICY,
                  inference_stack.models.policy_v2, canary=25)
    )  # fmt: skip

    def generate(version: str = "") -> str:
        request = inference_pb2.GenerateRequest(
            prompts=["hello"],
            version=version,
            sampling=inference_pb2.SamplingParams(max_new_tokens=2),
        )
        return inference_stub.Generate(request, timeout=TIMEOUT).model_version

    served = [generate() for _ in range(8)]
    assert served.count("policy-v2") == 2 and served.count("policy-v1") == 6  # exactly 25%
    assert generate("policy-v2") == "policy-v2" and generate("policy-v1") == "policy-v1"
    inference_stack.app.engine.versions.rollback("policy")
    assert {generate() for _ in range(4)} == {"policy-v1"}
    with pytest.raises(grpc.RpcError) as info:
        generate("policy-v2")
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_prometheus_metrics_name_model_and_version(inference_stack):
    from rlhf.runtime.metrics import generate_latest

    text = generate_latest().decode()
    assert (
        'rlhf_inference_request_seconds_count{method="Classify",model="classifier",version="classifier-v2"}'
        in text
    )
    assert 'rlhf_inference_batch_size_count{model="policy",version="policy-v1"}' in text
    queue_lines = [l for l in text.splitlines() if l.startswith("rlhf_triton_queue_seconds_total{")]  # noqa: E741
    assert any('version="policy-v1"' in line for line in queue_lines)
    assert all(math.isfinite(float(line.rsplit(" ", 1)[1])) for line in queue_lines)


def test_external_triton_serves_a_published_repository(tiny_serving_models, tmp_path):
    """Cluster mode: the trainer publishes a self-contained entry, Triton runs elsewhere."""
    from rlhf.serving import EngineConfig, LocalTritonConfig, LocalTritonServer, ServingEngine
    from rlhf.serving.repository import write_model_version

    repository = tmp_path / "published"
    name = write_model_version(
        repository, "clf-7", "classifier", tiny_serving_models.classifier_v1, copy_weights=True
    )
    assert (repository / name / "1" / "hf" / "config.json").is_file()
    with LocalTritonServer(LocalTritonConfig(repository)) as triton:
        config = EngineConfig(triton_url=triton.grpc_url, model_repository=repository,
                              write_repository=False)  # fmt: skip
        with ServingEngine(config) as engine:
            engine.versions.deploy(
                "clf", "clf-7", "classifier", str(repository / name / "1" / "hf")
            )
            outputs, _ = engine.client.classify(name, ["good", "bad"])
            assert [o.label in ("negative", "positive") for o in outputs] == [True, True]
            assert engine.ready()


def test_triton_outage_gives_unavailable_with_retry_hint(inference_stub, inference_stack):
    """Runs last: kills Triton. The call fails fast with UNAVAILABLE, never hangs."""
    inference_stack.app.engine.server.stop()
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as info:
        inference_stub.Classify(inference_pb2.InferenceClassifyRequest(texts=["hi"]), timeout=10)
    assert time.monotonic() - started < 10
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "retry after" in info.value.details()
    assert ("retry-after-ms", "2000") in tuple(info.value.trailing_metadata() or ())
    with pytest.raises(grpc.RpcError) as streamed:
        chat = inference_pb2.ChatRequest(
            messages=[inference_pb2.ChatMessage(role="user", content="hi")]
        )
        list(inference_stub.Chat(chat, timeout=10))
    assert streamed.value.code() == grpc.StatusCode.UNAVAILABLE
    health = health_pb2_grpc.HealthStub(inference_stack.channel)
    request = health_pb2.HealthCheckRequest(service="rlhf.v1.InferenceService")
    _wait_for(
        lambda: (
            health.Check(request, timeout=5).status == health_pb2.HealthCheckResponse.NOT_SERVING
        ),
        20,
        "NOT_SERVING",
    )
