"""Repository entries, batched decoding and request validation, without Triton."""

from __future__ import annotations

import grpc
import pytest

from rlhf.serving.backend import ClassifierEngine, PolicyEngine, RequestError, Sampling
from rlhf.serving.repository import BatchingConfig, triton_model_name, write_model_version
from tests.serving.tiny_models import build_tiny_classifier, build_tiny_policy


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return build_tiny_policy(root / "policy"), build_tiny_classifier(root / "classifier")


def test_repository_entry_layout_and_config(tiny_dirs, tmp_path):
    policy, classifier = tiny_dirs
    batching = BatchingConfig(16, [4, 8], 2500)
    name = write_model_version(tmp_path, "sentiment/policy v3", "policy", policy, batching)
    assert name == "sentiment_policy_v3"
    config = (tmp_path / name / "config.pbtxt").read_text()
    assert (tmp_path / name / "1" / "model.py").read_text().startswith('"""Triton Python-backend')
    for line in (
        'backend: "python"',
        "max_batch_size: 16",
        "preferred_batch_size: [ 4, 8 ]",
        "max_queue_delay_microseconds: 2500",
        "decoupled: true",
        f'string_value: "{policy.resolve()}"',
        'string_value: "sentiment/policy v3"',
    ):
        assert line in config
    name = write_model_version(tmp_path, "clf-1", "classifier", classifier, copy_weights=True)
    config = (tmp_path / name / "config.pbtxt").read_text()
    assert "decoupled" not in config and 'string_value: "hf"' in config
    assert (tmp_path / name / "1" / "hf" / "config.json").is_file()


def test_repository_rejects_bad_input(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        write_model_version(tmp_path, "v1", "policy", tmp_path)
    with pytest.raises(ValueError, match="preferred_batch_sizes"):
        BatchingConfig(8, [16])
    with pytest.raises(ValueError, match="empty Triton model name"):
        triton_model_name("..")


def test_batched_decoding_matches_one_at_a_time(tiny_dirs):
    engine = PolicyEngine(str(tiny_dirs[0]))
    prompts = ["hello", "the movie was very good and the plot was fun"]
    batched = engine.generate(prompts, [Sampling(8, 0.0)] * 2)
    assert batched == [engine.generate([p], [Sampling(8, 0.0)])[0] for p in prompts]
    seeded = [Sampling(8, 1.0, 0.9, 5, seed=3)]
    assert engine.generate(prompts[:1], seeded) == engine.generate(prompts[:1], seeded)
    with pytest.raises(RequestError, match="context length is 64"):
        engine.encode("the " * 70, Sampling())
    _, clipped = engine.encode("the " * 60, Sampling(max_new_tokens=50))
    assert clipped.max_new_tokens == 64 - 60


def test_classifier_engine_labels_and_rewards(tiny_dirs):
    engine = ClassifierEngine(str(tiny_dirs[1]))
    labels, probs, rewards = engine.score(["good movie", "awful"], None)
    assert set(labels) <= {"negative", "positive"} and len(rewards) == 2
    assert ((probs >= 0.5) & (probs <= 1)).all()


def test_sampling_validation_names_the_field():
    from rlhf.services.inference.server import sampling_from_request

    from rlhf.runtime.grpc import RequestInvalid
    from rlhf.v1 import inference_pb2

    params = inference_pb2.SamplingParams
    assert sampling_from_request(params(), False) == Sampling(64, 1.0, 1.0, 0, 0)
    assert sampling_from_request(params(temperature=0.0), True).temperature == 0.0
    for bad, field in (
        (params(temperature=-1), "sampling.temperature"),
        (params(top_p=1.01), "sampling.top_p"),
        (params(top_p=float("nan")), "sampling.top_p"),
        (params(top_k=-2), "sampling.top_k"),
        (params(max_new_tokens=-1), "sampling.max_new_tokens"),
    ):
        with pytest.raises(RequestInvalid) as info:
            sampling_from_request(bad, True)
        assert info.value.field == field and info.value.code == grpc.StatusCode.INVALID_ARGUMENT
