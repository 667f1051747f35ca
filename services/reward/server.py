"""Reward model service.

RPCs: Train (async), GetRun, Score, Classify, Compare. Consumes `dataset.prepared`
(trains the pipeline's classifier, judge and reward stages), `adversarial.batch.ready`
(hardens the attacked classifier with the adversarial examples, true labels kept),
`retrain.requested` (fine-tunes the promoted classifier on feedback labels) and
`model.promoted` (a promoted classifier that a `compress` stage names is compressed,
registered as its child and promoted in its place when the quality gate passes).
Publishes `reward.model.ready` with stage "reward", "hardened" or "retrain", and
`model.promoted` for a compressed classifier that passed its gates.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from google.protobuf import json_format

from rlhf.engine.data import LabeledText, PreferencePair, load_dataset
from rlhf.pipelines import PipelineError, load_named_pipeline
from rlhf.registry import ModelNotFound
from rlhf.runtime.confine import confined_path, run_config, shown
from rlhf.runtime.grpc.errors import NotFound, RequestInvalid, check, check_in, require
from rlhf.runtime.keyed_state import open_keyed_state
from rlhf.runtime.runs import RunContext
from rlhf.runtime.service import (
    TOPIC_ADVERSARIAL_BATCH_READY,
    TOPIC_DATASET_PREPARED,
    TOPIC_MODEL_PROMOTED,
    TOPIC_RETRAIN_REQUESTED,
    TOPIC_REWARD_MODEL_READY,
    ServiceContext,
    uri_path,
)
from rlhf.v1 import common_pb2, events_pb2, reward_pb2, reward_pb2_grpc
from rlhf.workflows import compression, promotion, stages

log = logging.getLogger(__name__)

SERVICE_NAME = "rlhf.v1.RewardModelService"
MAX_ITEMS = 256
MAX_TEXT_BYTES = 16 * 1024  # per text
MAX_TOTAL_BYTES = 1024 * 1024  # per request
MODEL_CALLS = 2  # model calls running at once; the rest wait their turn
CLASSIFIER_KINDS = ("classifier", "judge", "reward")


def dataset_dirs(event: events_pb2.DatasetPrepared) -> dict[str, Path]:
    return {k: uri_path(v.uri) for k, v in event.splits.items() if v.kind == "dataset"}


class RewardModelService(reward_pb2_grpc.RewardModelServiceServicer):
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self._models: dict[str, object] = {}
        self._models_lock = threading.Lock()
        self._model_pool = ThreadPoolExecutor(MODEL_CALLS, thread_name_prefix="reward-model")
        self._model_calls = asyncio.Semaphore(MODEL_CALLS)
        # pipeline -> dataset dirs of its latest preparation (for hardening / retraining)
        # Each pipeline's prepared datasets and profile, shared by the replicas
        # (rlhf.runtime.keyed_state: a file in the state directory, or store.url's database)
        self._pipelines = open_keyed_state(
            ctx.settings.store.postgres_url,
            ctx.state_dir / "pipeline-datasets.json",
            "reward/pipeline-datasets",
        )
        ctx.subscribe(TOPIC_DATASET_PREPARED, self.on_dataset_prepared)
        ctx.subscribe(TOPIC_ADVERSARIAL_BATCH_READY, self.on_adversarial_batch)
        ctx.subscribe(TOPIC_RETRAIN_REQUESTED, self.on_retrain_requested)
        ctx.subscribe(TOPIC_MODEL_PROMOTED, self.on_model_promoted)
        ctx.runs.resume_incomplete(self._work_for)

    # -- event handlers: each submits one run, idempotent on the event --------------------
    def on_dataset_prepared(self, event) -> None:
        payload: events_pb2.DatasetPrepared = event.payload
        if not payload.pipeline:
            return  # a standalone dataset: trained on request (Train RPC), not by event
        spec = load_named_pipeline(payload.pipeline, quick=payload.profile == "quick")
        if not any(s.kind in CLASSIFIER_KINDS for s in spec.stages):
            return
        self._remember_datasets(payload.pipeline, dataset_dirs(payload), payload.profile)
        self._submit(
            "pipeline",
            event,
            payload.pipeline,
            {
                "pipeline_run": payload.run_id,
                "profile": payload.profile,
                "datasets": {k: str(v) for k, v in dataset_dirs(payload).items()},
            },
        )

    def on_adversarial_batch(self, event) -> None:
        payload: events_pb2.AdversarialBatchReady = event.payload
        self._submit(
            "harden",
            event,
            payload.pipeline,
            {
                "pipeline_run": payload.run_id,
                "profile": payload.profile,
                "target_version": payload.target_version,
                "adversarial": str(uri_path(payload.dataset.uri)) if payload.dataset.uri else "",
            },
        )

    def on_retrain_requested(self, event) -> None:
        payload: events_pb2.RetrainRequested = event.payload
        spec = load_named_pipeline(payload.pipeline, quick=payload.profile == "quick")
        if not promotion.retrain_plan(spec).reward_first:
            return
        self._submit(
            "retrain",
            event,
            payload.pipeline,
            {
                "pipeline_run": payload.run_id,
                "profile": payload.profile,
                "feedback": str(uri_path(payload.feedback_dataset.uri))
                if payload.feedback_dataset.uri
                else "",
                "window": json_format.MessageToDict(
                    payload.window, preserving_proto_field_name=True
                ),
            },
        )

    def on_model_promoted(self, event) -> None:
        """Compress a promoted classifier that a compress stage of its pipeline names."""
        payload: events_pb2.ModelPromoted = event.payload
        compression.submit_compress_runs(
            self.ctx,
            payload,
            common_pb2.MODEL_KIND_CLASSIFIER,
            compression.CLASSIFIER_SOURCES,
            self._profile(payload.pipeline),
            "reward-compress",
            self._compress_work,
        )

    def _submit(self, kind: str, event, pipeline: str, params: dict) -> None:
        params = {"kind": kind, **params}
        self.ctx.runs.submit(
            f"reward-{kind}",
            self._work_for_kind(kind),
            params=params,
            request_id=f"{event.source}/{event.id}",
            pipeline=pipeline,
        )

    def _work_for(self, record):
        return self._work_for_kind(record.params.get("kind", "train"))

    def _work_for_kind(self, kind: str):
        return {
            "pipeline": self._pipeline_work,
            "harden": self._harden_work,
            "retrain": self._retrain_work,
            "train": self._train_work,
            "compress": self._compress_work,
        }[kind]

    # -- work ---------------------------------------------------------------------------
    def _out_dir(self, ctx: RunContext, stage: str) -> Path:
        return (
            self.ctx.artifact_dir / "models" / (ctx.record.pipeline or "adhoc") / stage / ctx.run_id
        )

    def _pipeline_work(self, ctx: RunContext) -> dict:
        params = ctx.params
        spec = load_named_pipeline(ctx.record.pipeline, quick=params.get("profile") == "quick")
        datasets = {k: Path(v) for k, v in params["datasets"].items()}
        versions: dict[str, common_pb2.ModelVersion] = {}
        metrics: dict[str, float] = {}
        refs = [
            common_pb2.ArtifactRef(uri=f"file://{p}", kind="dataset") for p in datasets.values()
        ]
        for stage in spec.stages:
            if stage.kind not in CLASSIFIER_KINDS:
                continue
            train = (
                stages.train_reward_stage
                if stage.kind == "reward"
                else stages.train_classifier_stage
            )
            result = train(
                spec,
                stage,
                datasets,
                self._out_dir(ctx, stage.name),
                device=self.ctx.settings.device,
                report=ctx.report,
            )
            kind = "reward" if stage.kind == "reward" else "classifier"
            versions[stage.kind] = self.ctx.registry.register(
                f"{spec.name}-{stage.kind}",
                kind,
                f"file://{result.model_dir}",
                run_id=params["pipeline_run"],
                pipeline=spec.name,
                datasets=refs,
                config=stage.config,
                metrics=result.metrics,
                key=ctx.key(stage.name),
            )
            metrics.update({f"{stage.kind}_{k}": v for k, v in result.metrics.items()})
        main = versions.get("classifier") or versions.get("reward")
        ready = events_pb2.RewardModelReady(
            run_id=params["pipeline_run"],
            stage="reward",
            pipeline=spec.name,
            profile=params.get("profile", ""),
            judge_version=versions["judge"].version if "judge" in versions else "",
        )
        ready.model.CopyFrom(main)
        ready.metrics.update(metrics)
        self._publish_ready_event(ctx, ready, spec.name)
        return {"versions": {k: v.version for k, v in versions.items()}}

    def _finetune_classifier(
        self,
        ctx: RunContext,
        parent_version: str,
        extra: list[LabeledText],
        stage_label: str,
        *,
        extra_weight: float | None = None,
        pairs: list[PreferencePair] | None = None,
        window: common_pb2.FeedbackWindow | None = None,
    ) -> tuple[common_pb2.ModelVersion, dict]:
        """Continue training a classifier on its data plus `extra` (adversarial examples
        appended, or feedback labels mixed in as `extra_weight` of the data), then, with
        preference `pairs`, a Bradley-Terry pass on its positive log-odds."""
        params = ctx.params
        spec = load_named_pipeline(ctx.record.pipeline, quick=params.get("profile") == "quick")
        parent = self.ctx.registry.get(parent_version)
        stage = next(s for s in spec.stages if s.kind == "classifier")
        datasets = self._datasets(spec.name)
        result = stages.train_classifier_stage(
            spec,
            stage,
            datasets,
            self._out_dir(ctx, f"{stage.name}-{stage_label}"),
            device=self.ctx.settings.device,
            report=ctx.report,
            init_dir=uri_path(parent.artifact.uri),
            extra_train=extra,
            extra_weight=extra_weight,
        )
        metrics = dict(result.metrics)
        model_dir = result.model_dir
        if pairs:
            model_dir, pair_metrics = self._tune_on_pairs(
                ctx, spec, model_dir, pairs, f"{stage.name}-{stage_label}-pairs"
            )
            metrics |= pair_metrics
        metrics["classifier_accuracy"] = metrics.get("accuracy", 0.0)
        metrics["classifier_accuracy_baseline"] = parent.lineage.metrics.get(
            "accuracy", metrics["classifier_accuracy"]
        )
        model = self.ctx.registry.register(
            parent.name,
            "classifier",
            f"file://{model_dir}",
            run_id=params["pipeline_run"],
            pipeline=spec.name,
            parent_version=parent.version,
            datasets=list(parent.lineage.datasets),
            config=stage.config,
            metrics=metrics,
            feedback_windows=[window] if window is not None else [],
            key=ctx.key(f"{stage.name}-{stage_label}"),
        )
        return model, metrics

    def _tune_on_pairs(
        self, ctx: RunContext, spec, model_dir: Path, pairs: list[PreferencePair], label: str
    ) -> tuple[Path, dict[str, float]]:
        """One Bradley-Terry epoch over feedback pairs on a classifier or reward model."""
        from rlhf.engine.checkpoint import discard_run_files
        from rlhf.engine.classifier import load_classifier
        from rlhf.engine.reward_training import RewardModelTrainConfig, train_reward_model

        model = load_classifier(model_dir, device=self.ctx.settings.device)
        out_dir = self._out_dir(ctx, label)
        config = RewardModelTrainConfig(
            device=self.ctx.settings.device,
            output_dir=str(out_dir / "run"),
            backbone=spec.models.classifier,
            epochs=1.0,
            learning_rate=1e-5,
            max_length=model.max_length,
        )
        result = train_reward_model(config, pairs, model=model)
        saved = result.classifier.save(out_dir / "model")
        discard_run_files(out_dir / "run")
        return Path(saved), {"feedback_pairs": float(len(pairs))}

    def _compress_work(self, ctx: RunContext) -> dict:
        """A compress stage on a promoted classifier (`compression.run_compress`)."""
        return compression.run_compress(
            self.ctx,
            ctx,
            self._datasets(ctx.record.pipeline),
            lambda stage: self._out_dir(ctx, stage),
        )

    def _harden_work(self, ctx: RunContext) -> dict:
        if not ctx.params["adversarial"]:
            # The attack found nothing to learn from: the attacked model stands as hardened.
            model = self.ctx.registry.get(ctx.params["target_version"])
            self._publish_ready(ctx, model, dict(model.lineage.metrics), "hardened")
            return {"version": model.version, "adversarial_examples": 0}
        adversarial = load_dataset(ctx.params["adversarial"])
        extra = [r for r in adversarial["train"] if isinstance(r, LabeledText)]
        model, metrics = self._finetune_classifier(
            ctx, ctx.params["target_version"], extra, "hardened"
        )
        self._publish_ready(ctx, model, metrics, "hardened")
        return {"version": model.version, "adversarial_examples": len(extra)}

    def _retrain_work(self, ctx: RunContext) -> dict:
        """A retraining round: the promoted classifier (labels from corrected labels,
        thumbs and ratings, mixed in by the spec's feedback weight; then preference
        pairs) or the promoted pairwise reward model (preference pairs)."""
        from rlhf.workflows.feedback import load_window

        pipeline = ctx.record.pipeline
        spec = load_named_pipeline(pipeline, quick=ctx.params.get("profile") == "quick")
        window = (
            json_format.ParseDict(ctx.params["window"], common_pb2.FeedbackWindow())
            if ctx.params.get("window")
            else None
        )
        feedback = ctx.params.get("feedback")
        data = load_window(Path(feedback)) if feedback else None
        if data is None or not data.usable:
            reason = "the feedback window holds no usable record"
            ctx.record.message = reason
            log.warning("%s: %s; nothing retrained", pipeline, reason)
            return {"retrained": False, "reason": reason}
        weight = spec.retrain.feedback_weight
        if promotion.retrain_plan(spec).reward_kind == "classifier":
            current = self.ctx.registry.promoted(
                f"{pipeline}-classifier"
            ) or self.ctx.registry.latest(f"{pipeline}-classifier")
            if current is None:
                raise ModelNotFound(f"{pipeline}-classifier")
            # Fine-tune the full model, not the compressed copy that serves in its place.
            current = compression.uncompressed(self.ctx.registry, current)
            model, metrics = self._finetune_classifier(
                ctx,
                current.version,
                data.labels,
                "retrain",
                extra_weight=weight,
                pairs=data.preferences,
                window=window,
            )
        else:  # a pairwise reward model, tuned on the window's preference pairs
            model, metrics = self._retrain_pairwise(ctx, spec, data.preferences, weight, window)
        self._publish_ready(ctx, model, metrics, "retrain")
        return {
            "version": model.version,
            "feedback_examples": len(data.labels),
            "feedback_pairs": len(data.preferences),
        }

    def _retrain_pairwise(self, ctx: RunContext, spec, pairs, weight: float, window):
        current = self.ctx.registry.promoted(f"{spec.name}-reward") or self.ctx.registry.latest(
            f"{spec.name}-reward"
        )
        if current is None:
            raise ModelNotFound(f"{spec.name}-reward")
        stage = next(s for s in spec.stages if s.kind == "reward")
        result = stages.train_reward_stage(
            spec,
            stage,
            self._datasets(spec.name),
            self._out_dir(ctx, f"{stage.name}-retrain"),
            device=self.ctx.settings.device,
            report=ctx.report,
            init_dir=uri_path(current.artifact.uri),
            extra_pairs=pairs,
            feedback_weight=weight,
        )
        metrics = dict(result.metrics)
        model = self.ctx.registry.register(
            current.name,
            "reward",
            f"file://{result.model_dir}",
            run_id=ctx.params["pipeline_run"],
            pipeline=spec.name,
            parent_version=current.version,
            datasets=list(current.lineage.datasets),
            config=stage.config,
            metrics=metrics,
            feedback_windows=[window] if window is not None else [],
            key=ctx.key(f"{stage.name}-retrain"),
        )
        return model, metrics

    def _publish_ready(self, ctx: RunContext, model, metrics: dict, stage: str) -> None:
        judge = self.ctx.registry.latest(f"{ctx.record.pipeline}-judge")
        ready = events_pb2.RewardModelReady(
            run_id=ctx.params["pipeline_run"],
            stage=stage,
            pipeline=ctx.record.pipeline,
            profile=ctx.params.get("profile", ""),
            judge_version=judge.version if judge else "",
        )
        ready.model.CopyFrom(model)
        ready.metrics.update(metrics)
        self._publish_ready_event(ctx, ready, ctx.record.pipeline)

    def _publish_ready_event(
        self, ctx: RunContext, ready: events_pb2.RewardModelReady, key: str
    ) -> None:
        """`reward.model.ready` under an id fixed by the run: a run resumed after a crash
        announces its model again, and the consumers' dedupe drops the copy (the trainer
        would otherwise start a second RL round on it)."""
        self.ctx.publish(
            TOPIC_REWARD_MODEL_READY,
            ready,
            key=key,
            event_id=ctx.event_id(TOPIC_REWARD_MODEL_READY),
        )

    def _train_work(self, ctx: RunContext) -> dict:
        """A Train RPC: a classifier or pairwise reward model on one prepared dataset."""
        from rlhf.pipelines import PipelineSpec, Stage

        params = ctx.params
        kind = "reward" if params["objective"] == "pairwise" else "classifier"
        config = json.loads(params.get("config_json") or "{}")
        spec = PipelineSpec(
            name=params.get("pipeline") or "adhoc",
            task="classify",
            datasets={"data": {"format": "jsonl", "path": params["dataset"]}},
            models={"classifier": params.get("base") or "minilm"},
            stages=[Stage(name="train", kind=kind, data="data", config=config)],
        )
        train = stages.train_reward_stage if kind == "reward" else stages.train_classifier_stage
        result = train(
            spec,
            spec.stages[0],
            {"data": Path(params["dataset"])},
            self._out_dir(ctx, kind),
            device=self.ctx.settings.device,
            report=ctx.report,
        )
        model = self.ctx.registry.register(
            f"{spec.name}-{kind}",
            kind,
            f"file://{result.model_dir}",
            run_id=ctx.run_id,
            pipeline=spec.name,
            config=config,
            metrics=result.metrics,
            datasets=[common_pb2.ArtifactRef(uri=f"file://{params['dataset']}", kind="dataset")],
            key=ctx.key(kind),
        )
        ready = events_pb2.RewardModelReady(run_id=ctx.run_id, stage="train", pipeline=spec.name)
        ready.model.CopyFrom(model)
        ready.metrics.update(result.metrics)
        self._publish_ready_event(ctx, ready, spec.name)
        return {"version": model.version}

    # -- pipeline dataset memory ---------------------------------------------------------
    def _remember_datasets(self, pipeline: str, dirs: dict[str, Path], profile: str) -> None:
        entry = {"datasets": {k: str(v) for k, v in dirs.items()}, "profile": profile}
        self._pipelines.replace(pipeline, entry)

    def _known_pipelines(self) -> dict[str, dict]:
        known = self._pipelines.items()
        # Files written before the profile was kept map the pipeline to its datasets.
        return {
            name: entry if "datasets" in entry else {"datasets": entry, "profile": ""}
            for name, entry in known.items()
        }

    def _datasets(self, pipeline: str) -> dict[str, Path]:
        known = self._known_pipelines()
        if pipeline not in known:
            raise PipelineError(f"no prepared datasets known for pipeline {pipeline!r}")
        return {k: Path(v) for k, v in known[pipeline]["datasets"].items()}

    def _profile(self, pipeline: str) -> str:
        """The profile ("quick" or "") of the pipeline's latest preparation."""
        return self._known_pipelines().get(pipeline, {}).get("profile", "")

    # -- RPCs -----------------------------------------------------------------------------
    async def Train(self, request, context):
        require(request, "dataset.uri")
        check_in(request.objective or "pointwise", "objective", ("pointwise", "pairwise"))
        path = confined_path(
            request.dataset.uri, [self.ctx.datasets_root], "dataset.uri", kind="dataset"
        )
        run_config(request.config_json)
        base = ""
        if request.base_version:  # a registered version, never a raw directory
            try:
                base = str(uri_path(self.ctx.registry.get(request.base_version).artifact.uri))
            except ModelNotFound:
                raise NotFound(
                    f"base_version: model version {shown(request.base_version)} does not exist"
                ) from None
        record = self.ctx.submit_request(
            "reward-train",
            self._train_work,
            request,
            {
                "kind": "train",
                "objective": request.objective or "pointwise",
                "dataset": str(path),
                "pipeline": request.pipeline,
                "base": base,
                "config_json": request.config_json,
            },
        )
        return reward_pb2.TrainRewardResponse(run_id=record.run_id)

    async def GetRun(self, request, context):
        require(request, "run_id")
        return self.ctx.run_status(request.run_id)

    def _model(self, version: str, kinds: tuple[int, ...]):
        from rlhf.engine.classifier import load_classifier

        if version:
            try:
                model = self.ctx.registry.get(version)
            except ModelNotFound:
                raise NotFound(f"model version {version!r} does not exist") from None
            if model.kind not in kinds:  # e.g. a policy: not something that scores text
                wanted = " or ".join(common_pb2.ModelKind.Name(k) for k in kinds)
                raise RequestInvalid(
                    "model_version",
                    f"{version!r} is a {common_pb2.ModelKind.Name(model.kind)}, not a {wanted}",
                )
        else:
            promoted = [m for m in self.ctx.registry.list(promoted_only=True) if m.kind in kinds]
            latest = [m for m in self.ctx.registry.list() if m.kind in kinds]
            candidates = promoted or latest
            if not candidates:
                raise NotFound("no classifier or reward model has been trained yet")
            model = max(candidates, key=lambda m: m.created_at.ToDatetime())
        with self._models_lock:
            if model.version not in self._models:
                self._models[model.version] = load_classifier(
                    uri_path(model.artifact.uri), device=self.ctx.settings.device
                )
            return model.version, self._models[model.version]

    @staticmethod
    def _check_texts(texts, field: str) -> None:
        check(
            0 < len(texts) <= MAX_ITEMS, field, f"must hold 1..{MAX_ITEMS} items (got {len(texts)})"
        )
        total = 0
        for i, text in enumerate(texts):
            check(text.strip(), f"{field}[{i}]", "must not be empty")
            size = len(text.encode())
            check(size <= MAX_TEXT_BYTES, f"{field}[{i}]", f"is over {MAX_TEXT_BYTES} bytes")
            total += size
        check(total <= MAX_TOTAL_BYTES, field, f"hold over {MAX_TOTAL_BYTES} bytes in all")

    async def _on_model(self, version: str, kinds: tuple[int, ...], work):
        """Load and run a model off the event loop, at most MODEL_CALLS at a time, so
        health checks and other RPCs answer while a large batch runs."""
        async with self._model_calls:
            loop = asyncio.get_running_loop()

            def call():
                name, model = self._model(version, kinds)
                return name, work(model)

            return await loop.run_in_executor(self._model_pool, call)

    async def Classify(self, request, context):
        self._check_texts(request.texts, "texts")
        texts = list(request.texts)
        version, predictions = await self._on_model(
            request.model_version,
            (common_pb2.MODEL_KIND_CLASSIFIER,),
            lambda model: model.predict(texts),
        )
        response = reward_pb2.ClassifyResponse(model_version=version)
        for prediction in predictions:
            result = response.results.add(label=prediction.label, score=prediction.score)
            result.probabilities.update(prediction.probabilities)
        return response

    async def Score(self, request, context):
        check(request.items, "items", "must hold at least one item")
        self._check_texts([item.response for item in request.items], "items.response")
        self._check_texts([item.prompt or " " for item in request.items], "items.prompt")
        texts = [item.prompt + item.response for item in request.items]
        kinds = (common_pb2.MODEL_KIND_REWARD, common_pb2.MODEL_KIND_CLASSIFIER)
        version, scores = await self._on_model(
            request.model_version, kinds, lambda model: model.positive_scores(texts).tolist()
        )
        return reward_pb2.ScoreResponse(scores=scores, model_version=version)

    async def Compare(self, request, context):
        require(request, "prompt", "response_a", "response_b")
        self._check_texts([request.prompt, request.response_a, request.response_b], "texts")
        kinds = (common_pb2.MODEL_KIND_REWARD, common_pb2.MODEL_KIND_CLASSIFIER)
        pair = [request.prompt + request.response_a, request.prompt + request.response_b]
        version, (r_a, r_b) = await self._on_model(
            request.model_version, kinds, lambda model: model.positive_scores(pair).tolist()
        )
        probability = 1.0 / (1.0 + math.exp(-(r_a - r_b)))  # Bradley-Terry
        return reward_pb2.CompareResponse(
            probability_a=probability, reward_a=r_a, reward_b=r_b, model_version=version
        )


def register(server, ctx: ServiceContext) -> RewardModelService:
    servicer = RewardModelService(ctx)
    server.add_servicer(
        reward_pb2_grpc.add_RewardModelServiceServicer_to_server, servicer, SERVICE_NAME
    )
    return servicer
