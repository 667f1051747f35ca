"""Bad requests to the four pipeline services get INVALID_ARGUMENT / NOT_FOUND naming
the field, through a real gRPC server (all services on one port, in-process bus)."""

from __future__ import annotations

import grpc
import pytest
from rlhf.services.adversary import server as adversary
from rlhf.services.dataprep import server as dataprep
from rlhf.services.reward import server as reward
from rlhf.services.trainer import server as trainer

from rlhf.runtime.bus import BusOptions, InProcessBroker, InProcessBus
from rlhf.runtime.service import ServiceContext
from rlhf.runtime.settings import load_settings
from rlhf.v1 import (
    adversary_pb2,
    adversary_pb2_grpc,
    dataprep_pb2,
    dataprep_pb2_grpc,
    reward_pb2,
    reward_pb2_grpc,
    trainer_pb2,
    trainer_pb2_grpc,
)
from tests.grpc_thread import serving

SERVICERS: dict = {}  # name -> the servicer the channel fixture registered


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("rpc")


@pytest.fixture(scope="module")
def channel(root):
    settings = load_settings(artifact_dir=root, grpc={"host": "127.0.0.1", "port": 0})
    bus = InProcessBus(
        source="test", options=BusOptions(state_dir=root / "bus"), broker=InProcessBroker()
    )

    def register(server) -> None:
        for module in (dataprep, reward, adversary, trainer):
            name = module.__name__.split(".")[-2]
            SERVICERS[name] = module.register(server, ServiceContext(name, settings, bus))

    with (
        serving(settings.grpc, register, on_start=bus.start) as port,
        grpc.insecure_channel(f"127.0.0.1:{port}") as ch,
    ):
        yield ch
    bus.close()


def _error(call, request) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(request, timeout=10)
    return info.value


@pytest.mark.parametrize(
    ("request_", "code", "field"),
    [
        (dataprep_pb2.RegisterSourceRequest(uri="/x", format="sst2"), "INVALID_ARGUMENT", "name"),
        (
            dataprep_pb2.RegisterSourceRequest(name="Bad!", uri="/", format="sst2"),
            "INVALID_ARGUMENT",
            "name",
        ),
        (
            dataprep_pb2.RegisterSourceRequest(name="a", uri="/", format="xls"),
            "INVALID_ARGUMENT",
            "format",
        ),
        (
            dataprep_pb2.RegisterSourceRequest(name="a", uri="/nope/x", format="sst2"),
            "INVALID_ARGUMENT",
            "uri",
        ),
    ],
)
def test_register_source_validation(channel, request_, code, field):
    error = _error(dataprep_pb2_grpc.DataPrepServiceStub(channel).RegisterSource, request_)
    assert error.code().name == code and error.details().startswith(field)


def test_prepare_and_get_errors(channel):
    stub = dataprep_pb2_grpc.DataPrepServiceStub(channel)
    error = _error(stub.PrepareDataset, dataprep_pb2.PrepareDatasetRequest(pipeline="nope"))
    assert (
        error.code() == grpc.StatusCode.INVALID_ARGUMENT and "unknown pipeline" in error.details()
    )
    error = _error(
        stub.PrepareDataset, dataprep_pb2.PrepareDatasetRequest(source="ghost", task="text")
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND
    error = _error(
        stub.PrepareDataset,
        dataprep_pb2.PrepareDatasetRequest(pipeline="classify", validation_fraction=1.5),
    )
    assert error.details().startswith("validation_fraction")
    assert (
        _error(stub.GetDataset, dataprep_pb2.GetDatasetRequest(name="ghost")).code()
        == grpc.StatusCode.NOT_FOUND
    )
    assert (
        _error(stub.GetRun, dataprep_pb2.GetRunRequest(run_id="ghost")).code()
        == grpc.StatusCode.NOT_FOUND
    )


def test_trainer_errors(channel):
    stub = trainer_pb2_grpc.TrainerServiceStub(channel)
    error = _error(stub.StartRun, trainer_pb2.StartRunRequest(algorithm="ppo"))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and error.details().startswith(
        "dataset.uri"
    )
    request = trainer_pb2.StartRunRequest(algorithm="sarsa")
    request.dataset.uri = "file:///tmp"
    assert _error(stub.StartRun, request).details().startswith("algorithm")
    request = trainer_pb2.StartRunRequest(algorithm="dpo", config_json="{oops")
    request.dataset.uri = "file:///tmp"
    assert _error(stub.StartRun, request).details().startswith("config_json")
    request = trainer_pb2.StartRunRequest(algorithm="dpo")
    request.dataset.uri = "nowhere"  # relative to the datasets root
    assert _error(stub.StartRun, request).code() == grpc.StatusCode.NOT_FOUND
    for call, req in (
        (stub.GetRun, dataprep_pb2.GetRunRequest(run_id="ghost")),
        (stub.CancelRun, trainer_pb2.CancelRunRequest(run_id="ghost")),
        (stub.GetModel, trainer_pb2.GetModelRequest(version="ghost-v1")),
        (stub.PromoteModel, trainer_pb2.PromoteModelRequest(version="ghost-v1")),
        (stub.RollbackModel, trainer_pb2.RollbackModelRequest(name="ghost-policy")),
    ):
        assert _error(call, req).code() == grpc.StatusCode.NOT_FOUND
    for call, req, field in (
        (stub.PromoteModel, trainer_pb2.PromoteModelRequest(), "version"),
        (stub.RollbackModel, trainer_pb2.RollbackModelRequest(), "name"),
        (stub.PromoteModel, trainer_pb2.PromoteModelRequest(version="x-v1", reason="r" * 2000),
         "reason"),
    ):  # fmt: skip
        error = _error(call, req)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error.details().startswith(field)
    assert list(stub.ListModels(trainer_pb2.ListModelsRequest(), timeout=10).models) == []
    assert list(stub.ListRuns(trainer_pb2.ListRunsRequest(), timeout=10).runs) == []
    error = _error(stub.ListRuns, trainer_pb2.ListRunsRequest(limit=5000))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and error.details().startswith("limit")


def test_reward_and_adversary_errors(channel):
    stub = reward_pb2_grpc.RewardModelServiceStub(channel)
    assert _error(stub.Classify, reward_pb2.ClassifyRequest()).details().startswith("texts")
    error = _error(stub.Classify, reward_pb2.ClassifyRequest(texts=["ok", "  "]))
    assert error.details().startswith("texts[1]")
    error = _error(
        stub.Classify, reward_pb2.ClassifyRequest(texts=["ok"], model_version="ghost-v1")
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert _error(stub.Train, reward_pb2.TrainRewardRequest()).details().startswith("dataset.uri")
    adv = adversary_pb2_grpc.AdversaryServiceStub(channel)
    request = adversary_pb2.AttackRequest(target_version="ghost-v1", method="magic")
    request.dataset.uri = "file:///tmp"
    assert _error(adv.Attack, request).details().startswith("method")
    request = adversary_pb2.AttackRequest(target_version="ghost-v1", max_edits=99)
    request.dataset.uri = "file:///tmp"
    assert _error(adv.Attack, request).details().startswith("max_edits")
    request = adversary_pb2.AttackRequest(target_version="ghost-v1")
    request.dataset.uri = "file:///tmp"
    assert _error(adv.Attack, request).code() == grpc.StatusCode.NOT_FOUND
    assert (
        _error(adv.GetReport, adversary_pb2.GetReportRequest(run_id="ghost")).code()
        == grpc.StatusCode.NOT_FOUND
    )


def test_paths_outside_the_roots_are_refused_without_reading_them(channel, root):
    """The review's probes: system files, ../ walks, symlinks out, FIFOs, the service's
    own state, pipeline names used as paths, raw directories as model versions."""
    import os

    dataprep = dataprep_pb2_grpc.DataPrepServiceStub(channel)
    uploads = root / "uploads"
    uploads.mkdir(exist_ok=True)
    (uploads / "escape.jsonl").symlink_to("/etc/passwd")
    os.mkfifo(uploads / "pipe.jsonl")
    secret = root / "state" / "dataprep" / "token"
    secret.parent.mkdir(parents=True, exist_ok=True)
    secret.write_text("s3cret")
    for uri in (
        "file:///etc/passwd",
        "../../../../../../etc/passwd",
        str(uploads / "escape.jsonl"),
        str(uploads / "pipe.jsonl"),
        str(secret),
        "file:///does/not/exist",  # outside: the same answer as an existing file
        "http://example.com/data.csv",
        "x" * 100_000,
    ):
        request = dataprep_pb2.RegisterSourceRequest(name="probe", uri=uri, format="text")
        error = _error(dataprep.RegisterSource, request)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (uri[:40], error.details())
        assert error.details().startswith("uri: ")
        assert "s3cret" not in error.details() and len(error.details()) < 300
    (uploads / "mine.jsonl").write_text('{"text": "fine", "label": "positive"}\n')
    ok = dataprep.RegisterSource(
        dataprep_pb2.RegisterSourceRequest(name="mine", uri="mine.jsonl", format="jsonl"),
        timeout=10,
    )
    assert ok.name == "mine"

    for pipeline in ("../../etc/passwd", "/etc/passwd", "a" * 4_000_000):
        error = _error(
            dataprep.PrepareDataset, dataprep_pb2.PrepareDatasetRequest(pipeline=pipeline)
        )
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error.details().startswith("pipeline: ") and len(error.details()) < 300
        assert "root:" not in error.details()

    trainer = trainer_pb2_grpc.TrainerServiceStub(channel)
    request = trainer_pb2.StartRunRequest(algorithm="dpo")
    request.dataset.uri = "file:///etc"
    assert _error(trainer.StartRun, request).code() == grpc.StatusCode.INVALID_ARGUMENT
    request.dataset.uri = "nowhere"
    request.config_json = '{"total_steps": 1000000000}'
    error = _error(trainer.StartRun, request)
    assert error.details().startswith("config_json.total_steps: must be in [0, 100000]")
    request.config_json = "[1, 2]"
    assert _error(trainer.StartRun, request).details().startswith("config_json: must be")

    reward = reward_pb2_grpc.RewardModelServiceStub(channel)
    (root / "datasets" / "d").mkdir(parents=True, exist_ok=True)
    (root / "datasets" / "d" / "manifest.json").write_text("{}")
    train = reward_pb2.TrainRewardRequest(base_version="/tmp")
    train.dataset.uri = "d"
    error = _error(reward.Train, train)
    assert error.code() == grpc.StatusCode.NOT_FOUND and error.details().startswith("base_version")


def test_health_answers_while_a_maximal_classify_runs(channel, root):
    """Model work runs off the event loop: a long Classify does not stall health."""
    import time

    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from rlhf.engine.classifier import Prediction

    servicer = SERVICERS["reward"]
    version = servicer.ctx.registry.register("slow-classifier", "classifier", "file:///x").version
    servicer.ctx.registry.promote(version)

    class SlowModel:
        def predict(self, texts):
            time.sleep(3.0)
            return [Prediction("positive", 0.9, {"positive": 0.9, "negative": 0.1})] * len(texts)

    servicer._models[version] = SlowModel()
    stub = reward_pb2_grpc.RewardModelServiceStub(channel)
    request = reward_pb2.ClassifyRequest(texts=["x" * 4000] * 256, model_version=version)
    future = stub.Classify.future(request, timeout=30)
    time.sleep(0.3)
    health = health_pb2_grpc.HealthStub(channel)
    status = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
    assert status.status == health_pb2.HealthCheckResponse.SERVING
    assert not future.done(), "health answered only after the Classify finished"
    assert len(future.result().results) == 256
    too_big = reward_pb2.ClassifyRequest(texts=["x" * 60_000] * 4, model_version=version)
    error = _error(stub.Classify, too_big)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith("texts[0]: is over")
