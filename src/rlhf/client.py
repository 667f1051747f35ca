"""Python client for the platform's public gRPC APIs, sync and asyncio.

    from rlhf.client import Client

    with Client(inference="inference:50051", token="...") as client:
        reply = client.generate(["The movie was"], max_new_tokens=32)
        print(reply.completions[0], reply.model_version)
        client.record_feedback(reply.request_id, reply.model_version, thumbs_up=True,
                               prompt="The movie was", response=reply.completions[0],
                               pipeline="sentiment-en")

Each service has its own address (keyword per service: dataprep, trainer, reward,
adversary, inference); give only those you use. `AsyncClient` has the same methods as
coroutines (and `chat` as an async iterator).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

from rlhf.runtime.grpc.client import make_channel
from rlhf.v1 import (
    adversary_pb2,
    adversary_pb2_grpc,
    common_pb2,
    dataprep_pb2,
    dataprep_pb2_grpc,
    events_pb2,
    inference_pb2,
    inference_pb2_grpc,
    reward_pb2_grpc,
    trainer_pb2,
    trainer_pb2_grpc,
)

SERVICES = {
    "dataprep": dataprep_pb2_grpc.DataPrepServiceStub,
    "trainer": trainer_pb2_grpc.TrainerServiceStub,
    "reward": reward_pb2_grpc.RewardModelServiceStub,
    "adversary": adversary_pb2_grpc.AdversaryServiceStub,
    "inference": inference_pb2_grpc.InferenceServiceStub,
}
_FEEDBACK_KINDS = {
    "thumbs": events_pb2.FEEDBACK_KIND_THUMBS,
    "rating": events_pb2.FEEDBACK_KIND_RATING,
    "preference": events_pb2.FEEDBACK_KIND_PREFERENCE,
    "label": events_pb2.FEEDBACK_KIND_LABEL,
}
_DONE = {
    common_pb2.RUN_STATE_SUCCEEDED,
    common_pb2.RUN_STATE_FAILED,
    common_pb2.RUN_STATE_CANCELLED,
}


def _sampling(**kwargs: Any) -> inference_pb2.SamplingParams:
    defaults = {"max_new_tokens": 64, "temperature": 1.0, "top_p": 1.0}
    values = {**defaults, **{k: v for k, v in kwargs.items() if v is not None}}
    return inference_pb2.SamplingParams(**values)


def _feedback_request(
    request_id: str, model_version: str, kind: str | None = None, **fields: Any
) -> inference_pb2.RecordFeedbackRequest:
    if kind is None:  # infer from what was given
        kind = next(
            (
                k
                for k, key in (("label", "label"), ("preference", "chosen"), ("rating", "rating"))
                if fields.get(key)
            ),
            "thumbs",
        )
    fields.setdefault("feedback_id", uuid.uuid4().hex)
    return inference_pb2.RecordFeedbackRequest(
        request_id=request_id,
        model_version=model_version,
        kind=_FEEDBACK_KINDS[kind],
        **{k: v for k, v in fields.items() if v is not None},
    )


class _Base:
    def __init__(
        self,
        *,
        token: str | None = None,
        tls_ca: str | Path | None = None,
        client_cert: str | Path | None = None,
        client_key: str | Path | None = None,
        timeout: float = 60.0,
        aio: bool = False,
        **addresses: str,
    ) -> None:
        unknown = set(addresses) - set(SERVICES)
        if unknown:
            raise ValueError(f"unknown services {sorted(unknown)}; known: {sorted(SERVICES)}")
        self.timeout = timeout
        self._channels = {
            name: make_channel(target, token, tls_ca, client_cert, client_key, aio=aio)
            for name, target in addresses.items()
        }
        self._stubs = {name: SERVICES[name](ch) for name, ch in self._channels.items()}

    def stub(self, service: str) -> Any:
        if service not in self._stubs:
            raise ValueError(f"no address given for the {service} service")
        return self._stubs[service]


class Client(_Base):
    """Blocking client."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(aio=False, **kwargs)

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # data prep
    def register_source(self, name: str, uri: str, format: str, **columns: str):
        return self.stub("dataprep").RegisterSource(
            dataprep_pb2.RegisterSourceRequest(name=name, uri=uri, format=format, columns=columns),
            timeout=self.timeout,
        )

    def prepare(
        self, pipeline: str = "", source: str = "", profile: str = "", **fields: Any
    ) -> str:
        request = dataprep_pb2.PrepareDatasetRequest(
            pipeline=pipeline, source=source, profile=profile, **fields
        )
        return self.stub("dataprep").PrepareDataset(request, timeout=self.timeout).run_id

    # trainer
    def start_run(self, **fields: Any) -> str:
        request = trainer_pb2.StartRunRequest(**fields)
        return self.stub("trainer").StartRun(request, timeout=self.timeout).run_id

    def get_run(self, run_id: str, service: str = "trainer") -> common_pb2.RunStatus:
        return self.stub(service).GetRun(
            dataprep_pb2.GetRunRequest(run_id=run_id), timeout=self.timeout
        )

    def wait_run(
        self, run_id: str, service: str = "trainer", timeout: float = 600
    ) -> common_pb2.RunStatus:
        deadline = time.monotonic() + timeout
        while True:
            status = self.get_run(run_id, service)
            if status.state in _DONE:
                return status
            if time.monotonic() > deadline:
                raise TimeoutError(f"run {run_id} still {status.state} after {timeout}s")
            time.sleep(0.5)

    def list_models(
        self, name: str = "", promoted_only: bool = False
    ) -> list[common_pb2.ModelVersion]:
        request = trainer_pb2.ListModelsRequest(name=name, promoted_only=promoted_only)
        return list(self.stub("trainer").ListModels(request, timeout=self.timeout).models)

    def list_runs(self, pipeline: str = "", limit: int = 0) -> list[common_pb2.RunStatus]:
        request = trainer_pb2.ListRunsRequest(pipeline=pipeline, limit=limit)
        return list(self.stub("trainer").ListRuns(request, timeout=self.timeout).runs)

    def get_model(self, version: str) -> common_pb2.ModelVersion:
        request = trainer_pb2.GetModelRequest(version=version)
        return self.stub("trainer").GetModel(request, timeout=self.timeout)

    def promote_model(self, version: str, reason: str = "") -> common_pb2.ModelVersion:
        request = trainer_pb2.PromoteModelRequest(version=version, reason=reason)
        return self.stub("trainer").PromoteModel(request, timeout=self.timeout)

    def rollback_model(self, name: str, reason: str = "") -> common_pb2.ModelVersion:
        request = trainer_pb2.RollbackModelRequest(name=name, reason=reason)
        return self.stub("trainer").RollbackModel(request, timeout=self.timeout)

    # inference
    def generate(self, prompts: Sequence[str], model: str = "", version: str = "", **sampling: Any):
        request = inference_pb2.GenerateRequest(
            model=model, version=version, prompts=list(prompts), sampling=_sampling(**sampling)
        )
        return self.stub("inference").Generate(request, timeout=self.timeout)

    def chat(
        self, messages: Sequence[dict[str, str]], model: str = "", **sampling: Any
    ) -> Iterator[str]:
        request = inference_pb2.ChatRequest(
            model=model,
            messages=[inference_pb2.ChatMessage(**m) for m in messages],
            sampling=_sampling(**sampling),
        )
        for chunk in self.stub("inference").Chat(request, timeout=self.timeout):
            if chunk.delta:
                yield chunk.delta

    def classify(self, texts: Sequence[str], model: str = "", version: str = ""):
        request = inference_pb2.InferenceClassifyRequest(
            model=model, version=version, texts=list(texts)
        )
        return self.stub("inference").Classify(request, timeout=self.timeout)

    def record_feedback(
        self, request_id: str, model_version: str, kind: str | None = None, **fields: Any
    ):
        request = _feedback_request(request_id, model_version, kind, **fields)
        return self.stub("inference").RecordFeedback(request, timeout=self.timeout)

    # adversary
    def attack(self, target_version: str, dataset_uri: str, **fields: Any) -> str:
        request = adversary_pb2.AttackRequest(target_version=target_version, **fields)
        request.dataset.uri = dataset_uri
        return self.stub("adversary").Attack(request, timeout=self.timeout).run_id

    def get_report(self, run_id: str) -> adversary_pb2.AttackReport:
        request = adversary_pb2.GetReportRequest(run_id=run_id)
        return self.stub("adversary").GetReport(request, timeout=self.timeout)


class AsyncClient(_Base):
    """asyncio client: the same calls as `Client`, awaited."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(aio=True, **kwargs)

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def prepare(
        self, pipeline: str = "", source: str = "", profile: str = "", **fields: Any
    ) -> str:
        request = dataprep_pb2.PrepareDatasetRequest(
            pipeline=pipeline, source=source, profile=profile, **fields
        )
        return (await self.stub("dataprep").PrepareDataset(request, timeout=self.timeout)).run_id

    async def get_run(self, run_id: str, service: str = "trainer") -> common_pb2.RunStatus:
        request = dataprep_pb2.GetRunRequest(run_id=run_id)
        return await self.stub(service).GetRun(request, timeout=self.timeout)

    async def generate(
        self, prompts: Sequence[str], model: str = "", version: str = "", **sampling: Any
    ):
        request = inference_pb2.GenerateRequest(
            model=model, version=version, prompts=list(prompts), sampling=_sampling(**sampling)
        )
        return await self.stub("inference").Generate(request, timeout=self.timeout)

    async def chat(
        self, messages: Sequence[dict[str, str]], model: str = "", **sampling: Any
    ) -> AsyncIterator[str]:
        request = inference_pb2.ChatRequest(
            model=model,
            messages=[inference_pb2.ChatMessage(**m) for m in messages],
            sampling=_sampling(**sampling),
        )
        async for chunk in self.stub("inference").Chat(request, timeout=self.timeout):
            if chunk.delta:
                yield chunk.delta

    async def classify(self, texts: Sequence[str], model: str = "", version: str = ""):
        request = inference_pb2.InferenceClassifyRequest(
            model=model, version=version, texts=list(texts)
        )
        return await self.stub("inference").Classify(request, timeout=self.timeout)

    async def record_feedback(
        self, request_id: str, model_version: str, kind: str | None = None, **fields: Any
    ):
        request = _feedback_request(request_id, model_version, kind, **fields)
        return await self.stub("inference").RecordFeedback(request, timeout=self.timeout)


__all__ = ["AsyncClient", "Client"]
