"""The inference gRPC API on the real tritonserver with continuous batching turned on.

The policy's Triton model runs `rlhf.serving.continuous` (copied beside model.py as
`rlhf_continuous.py`); who joins when is tested without Triton in
tests/serving/test_continuous.py, this checks the wiring: outputs, seeds, streaming,
a caller that gives up, bad input.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest

from rlhf.serving.backend import PolicyEngine, Sampling, chat_prompt
from rlhf.v1 import inference_pb2, inference_pb2_grpc

pytestmark = pytest.mark.triton
TIMEOUT = 60
PROMPTS = ["hello how are", "the movie was very good and the plot", "i", "what is this"]


@pytest.fixture(scope="module")
def stub(tiny_serving_models, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from rlhf.services.inference.server import build_inference_service
    from rlhf.services.inference.settings import InferenceSettings

    from rlhf.runtime.settings import load_settings
    from tests.triton_plugin import ServiceThread

    settings = load_settings(
        InferenceSettings,
        artifact_dir=tmp_path_factory.mktemp("continuous"),
        bus="inprocess",
        serving={
            "torch_threads": 1,
            "subscribe_promotions": False,
            "policy_batching": {"continuous": True},
            "models": [{"name": "policy", "version": "policy-v1", "kind": "policy",
                        "model_dir": str(tiny_serving_models.policy_v1)}],
        },
    )  # fmt: skip
    service = ServiceThread(build_inference_service(settings)).start()
    entry = settings.artifact_dir / "triton" / "policy-v1"
    assert 'key: "continuous_batching"' in (entry / "config.pbtxt").read_text()
    assert (entry / "1" / "rlhf_continuous.py").is_file()
    channel = grpc.insecure_channel(f"127.0.0.1:{service.port}")
    try:
        yield inference_pb2_grpc.InferenceServiceStub(channel)
    finally:
        channel.close()
        service.stop()


@pytest.fixture(scope="module")
def local(tiny_serving_models) -> PolicyEngine:
    return PolicyEngine(str(tiny_serving_models.policy_v1))


def generate(stub, prompts: list[str], sampling: inference_pb2.SamplingParams) -> list[str]:  # noqa: ANN001
    request = inference_pb2.GenerateRequest(prompts=prompts, sampling=sampling)
    return list(stub.Generate(request, timeout=TIMEOUT).completions)


def test_concurrent_requests_get_their_solo_output(stub, local):
    greedy = inference_pb2.SamplingParams(max_new_tokens=8, temperature=0.0)
    seeded = inference_pb2.SamplingParams(max_new_tokens=8, temperature=1.0, top_p=0.9, seed=7)
    calls = [(p, greedy) for p in PROMPTS] + [(p, seeded) for p in PROMPTS[:2]]
    with ThreadPoolExecutor(len(calls)) as pool:
        replies = list(pool.map(lambda c: generate(stub, [c[0]], c[1])[0], calls))
    expected = [local.generate([p], [Sampling(8, 0.0)])[0] for p in PROMPTS]
    expected += [local.generate([p], [Sampling(8, 1.0, 0.9, 0, 7)])[0] for p in PROMPTS[:2]]
    assert replies == expected
    assert generate(stub, PROMPTS, greedy) == expected[:4]  # several prompts in one request


def test_chat_streams_and_a_caller_that_gives_up_disturbs_no_one(stub, local):
    messages = [inference_pb2.ChatMessage(role="user", content="hello how are you ?")]
    request = inference_pb2.ChatRequest(
        messages=messages, sampling=inference_pb2.SamplingParams(max_new_tokens=8, temperature=0)
    )
    long = inference_pb2.SamplingParams(max_new_tokens=40, temperature=0.0)
    with ThreadPoolExecutor(3) as pool:
        impatient = pool.submit(generate, stub, PROMPTS[:1], long)
        patient = pool.submit(generate, stub, PROMPTS[1:2], long)
        chunks = list(stub.Chat(request, timeout=TIMEOUT))
        with pytest.raises(grpc.RpcError):
            stub.Generate(inference_pb2.GenerateRequest(prompts=["i"], sampling=long), timeout=0.01)
        assert patient.result() == [local.generate([PROMPTS[1]], [Sampling(40, 0.0)])[0]]
        impatient.result()
    prompt = chat_prompt(local.tokenizer, [{"role": "user", "content": "hello how are you ?"}])
    assert "".join(c.delta for c in chunks) == local.generate([prompt], [Sampling(8, 0.0)])[0]
    assert chunks[-1].done and len([c for c in chunks if c.delta]) >= 2


def test_bad_input_is_refused(stub):
    too_long = inference_pb2.SamplingParams(max_new_tokens=5000)
    for prompts, sampling, needle in [
        (["hi"], too_long, "sampling.max_new_tokens"),
        (["  "], None, "prompts[0]"),
        (["hi", "the " * 80], None, "prompts[1]: prompt has"),
    ]:
        with pytest.raises(grpc.RpcError) as error:
            stub.Generate(
                inference_pb2.GenerateRequest(prompts=prompts, sampling=sampling), timeout=TIMEOUT
            )
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert needle in error.value.details()
