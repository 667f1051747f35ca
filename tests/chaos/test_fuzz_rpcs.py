"""Fuzzed requests to every RPC of the five services, in process: the four pipeline
services on one gRPC server (in-process bus) and inference on the real tritonserver.

Hypothesis builds request messages from each method's descriptor (extreme numbers,
NaN, unknown enum values, odd Unicode, long strings and lists, paths outside the roots,
broken JSON) and sends raw garbage bodies too (bench/chaos_fuzz.py). No answer may be
INTERNAL or UNKNOWN. The five-process version, after real rounds with faults, is
tests/chaos/test_chaos.py and bench/chaos.py.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from rlhf.services.adversary import server as adversary
from rlhf.services.dataprep import server as dataprep
from rlhf.services.reward import server as reward
from rlhf.services.trainer import server as trainer

from rlhf.runtime.bus import BusOptions, InProcessBroker, InProcessBus
from rlhf.runtime.service import ServiceContext
from rlhf.runtime.settings import load_settings
from rlhf.v1 import events_pb2, inference_pb2, inference_pb2_grpc
from tests.grpc_thread import serving

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import chaos_fuzz  # noqa: E402

pytestmark = [pytest.mark.triton, pytest.mark.timeout(600)]


@dataclass
class PipelineServices:
    address: str
    root: Path


@pytest.fixture(scope="module")
def pipeline_services(tmp_path_factory):
    """dataprep, reward, adversary and trainer on one server; yields its address."""
    root = tmp_path_factory.mktemp("fuzz")
    settings = load_settings(artifact_dir=root, grpc={"host": "127.0.0.1", "port": 0})
    bus = InProcessBus(
        source="fuzz", options=BusOptions(state_dir=root / "bus"), broker=InProcessBroker()
    )

    def register(server) -> None:
        for module in (dataprep, reward, adversary, trainer):
            name = module.__name__.split(".")[-2]
            module.register(server, ServiceContext(name, settings, bus))

    with serving(settings.grpc, register, "fuzz", on_start=bus.start) as port:
        yield PipelineServices(f"127.0.0.1:{port}", root)
    bus.close()


def test_no_fuzzed_request_is_answered_internal_or_unknown(pipeline_services, inference_stack):
    addresses = dict.fromkeys(
        ("dataprep", "reward", "adversary", "trainer"), pipeline_services.address
    )
    addresses["inference"] = inference_stack.address
    pools = chaos_fuzz.Pools(
        versions=["policy-v1", "classifier-v1", "ghost-v1"],
        run_ids=["ghost", "prepare-000000000000"],
        pipelines=["classify", "sentiment-zh", "../classify"],
        names=["reviews", "sst2"],
    )
    report = chaos_fuzz.fuzz(addresses, 440, pools, seed=3, timeout=30)
    assert report.requests >= 400
    assert not report.internal, report.internal[:5]
    assert not report.hangs, report.hangs[:5]
    # Every method was reached, and refused bad input with a status of its own.
    assert set(report.by_method) == {m.name for _, m in chaos_fuzz.methods()}
    assert report.codes["INVALID_ARGUMENT"] > 0


def test_feedback_for_a_pipeline_that_does_not_exist_is_refused(inference_stack):
    """Acknowledged, it would have been dead-lettered by data prep and never used."""
    stub = inference_pb2_grpc.InferenceServiceStub(inference_stack.channel)
    request = inference_pb2.RecordFeedbackRequest(
        request_id="r",
        model_version="policy-v1",
        kind=events_pb2.FEEDBACK_KIND_THUMBS,
        thumbs_up=True,
        response="fine",
        pipeline="no-such-pipeline",
    )
    with pytest.raises(grpc.RpcError) as refused:
        stub.RecordFeedback(request, timeout=30)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.details().startswith("pipeline: unknown pipeline")


def test_a_policy_version_is_not_a_classifier(pipeline_services):
    """Classify/Score/Compare naming a policy version answered INTERNAL (the reward
    service tried to load a causal LM as a sequence classifier)."""
    from rlhf.registry import ModelRegistry
    from rlhf.v1 import reward_pb2, reward_pb2_grpc

    registry = ModelRegistry(pipeline_services.root / "registry")
    version = registry.register("fuzz-policy", "policy", "file:///nowhere").version
    with grpc.insecure_channel(pipeline_services.address) as channel:
        stub = reward_pb2_grpc.RewardModelServiceStub(channel)
        for call, request in (
            (stub.Classify, reward_pb2.ClassifyRequest(texts=["fine"], model_version=version)),
            (
                stub.Score,
                reward_pb2.ScoreRequest(
                    items=[reward_pb2.ScoreItem(prompt="a", response="b")], model_version=version
                ),
            ),
        ):
            with pytest.raises(grpc.RpcError) as refused:
                call(request, timeout=30)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert refused.value.details().startswith("model_version: ")


def test_get_dataset_of_the_feedback_windows_folder_is_not_found(pipeline_services):
    """`datasets/feedback/` holds feedback windows (folders of per-split datasets, no
    manifest of their own): GetDataset(name="feedback") answered INTERNAL."""
    from rlhf.v1 import dataprep_pb2, dataprep_pb2_grpc

    window = pipeline_services.root / "datasets" / "feedback" / "p-w1"
    (window / "labels").mkdir(parents=True)
    (window / "feedback.json").write_text("{}")
    with grpc.insecure_channel(pipeline_services.address) as channel:
        stub = dataprep_pb2_grpc.DataPrepServiceStub(channel)
        with pytest.raises(grpc.RpcError) as missing:
            stub.GetDataset(dataprep_pb2.GetDatasetRequest(name="feedback"), timeout=30)
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
