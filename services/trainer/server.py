"""Trainer service.

RPCs: StartRun (async), GetRun, WatchRun, CancelRun, ListModels, GetModel.

Choreography: `dataset.prepared` starts the pipeline's base-policy stage (pre-training
or SFT, or just the named base model); `reward.model.ready` (the hardened classifier,
or the plain one for pipelines without adversarial hardening) starts the RL stage
(PPO/GRPO/RLOO) or DPO; `robustness.report` feeds the robustness gate;
`retrain.requested` starts a round from the promoted policy. Every candidate is
registered with its lineage and published as `policy.checkpoint.ready`; only one that
passes every gate is promoted (`model.promoted`, with its classifier). A promoted
policy that a `compress` stage names (`model.promoted`) is compressed, registered as
its child and promoted in its place when the quality gate passes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from rlhf.pipelines import PipelineError, PipelineSpec, Stage, load_named_pipeline
from rlhf.registry import ModelNotFound
from rlhf.runtime.confine import confined_path, run_config
from rlhf.runtime.grpc.errors import NotFound, RequestInvalid, check, check_in, require
from rlhf.runtime.keyed_state import open_keyed_state
from rlhf.runtime.platform_metrics import record_gates
from rlhf.runtime.runs import RunContext, RunNotFound
from rlhf.runtime.service import (
    TOPIC_DATASET_PREPARED,
    TOPIC_MODEL_PROMOTED,
    TOPIC_POLICY_CHECKPOINT_READY,
    TOPIC_RETRAIN_REQUESTED,
    TOPIC_REWARD_MODEL_READY,
    TOPIC_ROBUSTNESS_REPORT,
    ServiceContext,
    uri_path,
)
from rlhf.v1 import common_pb2, events_pb2, trainer_pb2, trainer_pb2_grpc
from rlhf.workflows import compression, promotion, stages

log = logging.getLogger(__name__)

SERVICE_NAME = "rlhf.v1.TrainerService"
BASE_KINDS = ("pretrain", "sft")
MAX_LISTED_RUNS = 200
ALGORITHMS = ("pretrain", "sft", "ppo", "grpo", "rloo", "dpo")
KINDS = {
    "policy": common_pb2.MODEL_KIND_POLICY,
    "reward": common_pb2.MODEL_KIND_REWARD,
    "classifier": common_pb2.MODEL_KIND_CLASSIFIER,
}


class TrainerService(trainer_pb2_grpc.TrainerServiceServicer):
    def __init__(self, ctx: ServiceContext, wait_timeout_s: float = 3600) -> None:
        self.ctx = ctx
        # What the trainer knows about each pipeline run (datasets, tokenizer, base
        # policy, robustness reports), shared by the replicas (rlhf.runtime.keyed_state)
        url = ctx.settings.store.postgres_url
        self.state = open_keyed_state(url, ctx.state_dir / "pipelines.json", "trainer/pipelines")
        # retraining round (its run id) -> the feedback window it was triggered by
        self.windows = open_keyed_state(
            url, ctx.state_dir / "retrain-windows.json", "trainer/retrain-windows"
        )
        self.wait_timeout_s = wait_timeout_s
        ctx.subscribe(TOPIC_DATASET_PREPARED, self.on_dataset_prepared)
        ctx.subscribe(TOPIC_REWARD_MODEL_READY, self.on_reward_model_ready)
        ctx.subscribe(TOPIC_ROBUSTNESS_REPORT, self.on_robustness_report)
        ctx.subscribe(TOPIC_RETRAIN_REQUESTED, self.on_retrain_requested)
        ctx.subscribe(TOPIC_MODEL_PROMOTED, self.on_model_promoted)
        ctx.runs.resume_incomplete(lambda record: self._work[record.params["kind"]])

    @property
    def _work(self):
        return {
            "base": self._base_work,
            "policy": self._policy_work,
            "adhoc": self._adhoc_work,
            "compress": self._compress_work,
        }

    # -- event handlers ---------------------------------------------------------------------
    def on_dataset_prepared(self, event) -> None:
        payload: events_pb2.DatasetPrepared = event.payload
        if not payload.pipeline:
            return
        datasets = {
            k: str(uri_path(v.uri)) for k, v in payload.splits.items() if v.kind == "dataset"
        }
        tokenizer = payload.splits["tokenizer"].uri if "tokenizer" in payload.splits else ""
        self.state.update(
            payload.run_id,
            pipeline=payload.pipeline,
            profile=payload.profile,
            datasets=datasets,
            tokenizer=str(uri_path(tokenizer)) if tokenizer else "",
            created=time.time(),
        )
        self._submit("base", payload.pipeline, payload.run_id, {})

    def on_reward_model_ready(self, event) -> None:
        payload: events_pb2.RewardModelReady = event.payload
        if not payload.pipeline or payload.stage == "train":
            return
        spec = load_named_pipeline(payload.pipeline, quick=payload.profile == "quick")
        hardens = any(s.kind == "adversarial" for s in spec.stages)
        wanted = {"retrain"} | ({"hardened"} if hardens else {"reward"})
        if payload.stage not in wanted:
            return
        params = {
            "reward_version": payload.model.version,
            "judge_version": payload.judge_version,
            "reward_metrics": dict(payload.metrics),
            "retrain": payload.stage == "retrain",
        }
        if payload.stage == "hardened":  # joined with the round's robustness report
            self.state.update(payload.run_id, pending_policy=params)
            self._start_policy_when_ready(payload.pipeline, payload.run_id)
        else:
            self._submit("policy", payload.pipeline, payload.run_id, params)

    def on_robustness_report(self, event) -> None:
        report: events_pb2.RobustnessReport = event.payload
        key = "robust_accuracy_after" if report.stage == "after" else "robust_accuracy_before"
        self.state.update(report.run_id, robustness={key: report.robust_accuracy})
        if report.stage == "after" and report.pipeline:
            self._start_policy_when_ready(report.pipeline, report.run_id)

    def _start_policy_when_ready(self, pipeline: str, pipeline_run: str) -> None:
        """A hardened pipeline's RL round starts once both the hardened reward model and
        its fresh robustness measurement arrived, in either order."""
        state = self.state.get(pipeline_run)
        params = state.get("pending_policy")
        if params and "robust_accuracy_after" in state.get("robustness", {}):
            self._submit("policy", pipeline, pipeline_run, params)

    def on_retrain_requested(self, event) -> None:
        payload: events_pb2.RetrainRequested = event.payload
        self.windows.update(
            payload.run_id,
            window=json_format.MessageToDict(payload.window, preserving_proto_field_name=True),
        )
        spec = load_named_pipeline(payload.pipeline, quick=payload.profile == "quick")
        plan = promotion.retrain_plan(spec)
        if plan.reward_first or not plan.policy:
            return  # the reward service retrains first; its reward.model.ready starts us
        reward = self.ctx.registry.promoted(
            f"{spec.name}-classifier"
        ) or self.ctx.registry.promoted(f"{spec.name}-reward")
        judge = self.ctx.registry.latest(f"{spec.name}-judge")
        self._submit(
            "policy",
            payload.pipeline,
            payload.run_id,
            {
                "reward_version": reward.version if reward else "",
                "judge_version": judge.version if judge else "",
                "reward_metrics": {},
                "retrain": True,
            },
        )

    def on_model_promoted(self, event) -> None:
        """Compress a promoted policy that a compress stage of its pipeline names."""
        payload: events_pb2.ModelPromoted = event.payload
        compression.submit_compress_runs(
            self.ctx,
            payload,
            common_pb2.MODEL_KIND_POLICY,
            compression.POLICY_SOURCES,
            self.state.latest_for(payload.pipeline).get("profile", ""),
            "train-compress",
            self._compress_work,
        )

    def _submit(self, kind: str, pipeline: str, pipeline_run: str, params: dict) -> None:
        """One run per (kind, pipeline run, reward model): a redelivered or repeated
        event finds the run it already started."""
        self.ctx.runs.submit(
            f"train-{kind}",
            self._work[kind],
            params={"kind": kind, "pipeline_run": pipeline_run, **params},
            request_id=f"{kind}/{pipeline_run}/{params.get('reward_version', '')}",
            pipeline=pipeline,
        )

    # -- work -----------------------------------------------------------------------------
    def _spec(self, ctx: RunContext) -> tuple[PipelineSpec, dict]:
        state = self.state.get(ctx.params["pipeline_run"])
        if not state:  # a retraining round: the latest preparation of this pipeline
            state = self.state.latest_for(ctx.record.pipeline)
        spec = load_named_pipeline(ctx.record.pipeline, quick=state.get("profile") == "quick")
        return spec, state

    def _out_dir(self, ctx: RunContext, stage: str) -> Path:
        return self.ctx.artifact_dir / "models" / ctx.record.pipeline / stage / ctx.run_id

    def _base_work(self, ctx: RunContext) -> dict:
        spec, state = self._spec(ctx)
        datasets = {k: Path(v) for k, v in state["datasets"].items()}
        base_stage = next((s for s in spec.stages if s.kind in BASE_KINDS), None)
        if base_stage is None:
            policy_dir = str(spec.models.policy)
            metrics: dict[str, float] = {}
        else:
            result = self._run_stage(
                ctx,
                spec,
                base_stage,
                datasets,
                tokenizer_dir=state.get("tokenizer") or None,
            )
            policy_dir, metrics = str(result.model_dir), result.metrics
        self.state.update(ctx.params["pipeline_run"], base_policy=policy_dir, base_metrics=metrics)
        return {"base_policy": policy_dir}

    def _run_stage(
        self,
        ctx: RunContext,
        spec: PipelineSpec,
        stage: Stage,
        datasets: dict[str, Path],
        feedback_dir: Path | None = None,
        **inputs: Any,
    ) -> stages.StageResult:
        """Train a stage here, or as the Kubernetes Job / PyTorchJob its `executor:`
        names (stage_jobs: submitted, mirrored into this run, deleted on cancel)."""
        from rlhf.workflows import stage_jobs

        request = stage_jobs.StageRequest(
            spec=spec.model_dump(mode="json"),
            stage=stage.name,
            datasets={k: str(v) for k, v in datasets.items()},
            out_dir=str(self._out_dir(ctx, stage.name)),
            device=self.ctx.settings.device,
            inputs={k: str(v) if isinstance(v, Path) else v for k, v in inputs.items()},
            feedback_dir=str(feedback_dir or ""),
        )
        return stage_jobs.execute(request, ctx, stage.executor, _kubernetes_executor)

    def _wait_for_base(self, ctx: RunContext) -> dict:
        deadline = time.monotonic() + self.wait_timeout_s
        while True:
            spec, state = self._spec(ctx)
            if state.get("base_policy"):
                return state
            if time.monotonic() > deadline:
                raise TimeoutError("the base policy of this pipeline run never became ready")
            ctx.report()  # raises RunCancelled when cancelled while waiting
            time.sleep(0.5)

    def _policy_work(self, ctx: RunContext) -> dict:
        params = ctx.params
        spec, state = self._spec(ctx)
        if not params.get("retrain"):
            state = self._wait_for_base(ctx)
        datasets = {k: Path(v) for k, v in state["datasets"].items()}
        policy_stage = next((s for s in spec.stages if s.kind in promotion.POLICY_KINDS), None)
        if policy_stage is None:  # a classification pipeline: the classifier is the product
            return self._promote_classifier(ctx, spec, state)
        name = f"{spec.name}-policy"
        window, feedback = self._feedback_window(params)
        if params.get("retrain") and window is not None and not feedback.usable:
            reason = feedback.why_unusable(len(window.feedback_ids))
            log.warning("%s: window %s retrains nothing: %s", spec.name, window.window_id, reason)
            ctx.record.message = f"feedback window {window.window_id}: {reason}"
            return {"retrained": False, "window": window.window_id, "reason": reason}
        weight = spec.retrain.feedback_weight if params.get("retrain") else 0.0
        promoted = self.ctx.registry.promoted(name)
        if promoted is not None:  # continue the full model, not a compressed copy of it
            promoted = compression.uncompressed(self.ctx.registry, promoted)
        if params.get("retrain") and promoted is not None:
            start_dir, parent = str(uri_path(promoted.artifact.uri)), promoted.version
        else:
            start_dir, parent = state["base_policy"], ""
        reward = (
            self.ctx.registry.get(params["reward_version"]) if params["reward_version"] else None
        )
        judge = (
            self.ctx.registry.get(params["judge_version"]) if params.get("judge_version") else None
        )
        window_dir = uri_path(window.dataset.uri) if window and window.dataset.uri else None
        if policy_stage.kind == "dpo":
            result = self._run_stage(
                ctx,
                spec,
                policy_stage,
                datasets,
                feedback_dir=window_dir,
                policy_dir=start_dir,
                feedback_weight=weight,
                scorer_dir=uri_path(reward.artifact.uri) if reward else None,
            )
        else:
            if reward is None:
                raise PipelineError(f"{spec.name}: an RL stage needs a reward model")
            result = self._run_stage(
                ctx,
                spec,
                policy_stage,
                datasets,
                feedback_dir=window_dir,
                policy_dir=start_dir,
                reward_dir=uri_path(reward.artifact.uri),
                judge_dir=uri_path(judge.artifact.uri) if judge else None,
                feedback_weight=weight,
                # every round is anchored to the base policy: drift adds up across rounds
                reference_dir=state["base_policy"] if parent else None,
            )
        metrics = dict(result.metrics)
        if not params.get("retrain"):
            metrics.update(self.state.get(params["pipeline_run"]).get("robustness", {}))
        metrics.update(
            {
                k: v
                for k, v in params.get("reward_metrics", {}).items()
                if k.startswith("classifier_accuracy")
            }
        )
        gates = promotion.evaluate_gates(spec.gates, metrics)
        record_gates(spec.name, gates)
        dataset_refs = [
            common_pb2.ArtifactRef(uri=f"file://{p}", kind="dataset") for p in datasets.values()
        ]
        candidate = self.ctx.registry.register(
            name,
            "policy",
            f"file://{result.model_dir}",
            run_id=ctx.run_id,
            pipeline=spec.name,
            parent_version=parent,
            reward_model_version=reward.version if reward else "",
            datasets=dataset_refs,
            config=policy_stage.config,
            metrics=metrics,
            gates=gates,
            feedback_windows=[window] if window is not None else [],
            key=ctx.key(policy_stage.name),
        )
        ready = events_pb2.PolicyCheckpointReady(
            run_id=params["pipeline_run"],
            stage=policy_stage.name,
            pipeline=spec.name,
            step=int(metrics.get("steps", 0)),
        )
        ready.model.CopyFrom(candidate)
        self.ctx.publish(
            TOPIC_POLICY_CHECKPOINT_READY,
            ready,
            key=spec.name,
            event_id=ctx.event_id(TOPIC_POLICY_CHECKPOINT_READY),
        )
        promoted_now = all(gates.values())
        if promoted_now:
            if reward is not None:
                self._promote(ctx, spec, reward.version)
            self._promote(ctx, spec, candidate.version)
        else:
            failed = promotion.failed_gates(gates, metrics)
            log.warning("%s kept, not promoted: gates failed: %s", candidate.version, failed)
            ctx.record.message = f"{candidate.version} not promoted: {failed}"
        return {
            "version": candidate.version,
            "promoted": promoted_now,
            "gates": gates,
            "failed_gates": promotion.failed_gates(gates, metrics),
            "metrics": metrics,
            "samples": result.samples,
            "feedback": dict(window.counts) if window is not None else {},
        }

    def _compress_work(self, ctx: RunContext) -> dict:
        """A compress stage on a promoted policy (`compression.run_compress`)."""
        state = self.state.latest_for(ctx.record.pipeline)
        return compression.run_compress(
            self.ctx,
            ctx,
            {k: Path(v) for k, v in state.get("datasets", {}).items()},
            lambda stage: self._out_dir(ctx, stage),
        )

    def _feedback_window(self, params: dict) -> tuple[common_pb2.FeedbackWindow | None, Any]:
        """The feedback window behind a retraining round and its records (empty for a
        first round, or a round whose window data prep found nothing usable in)."""
        from rlhf.workflows.feedback import FeedbackWindowData, load_window

        empty = FeedbackWindowData([], [], [], {}, {})
        if not params.get("retrain"):
            return None, empty
        saved = self.windows.get(params["pipeline_run"]).get("window")
        if not saved:
            return None, empty
        window = json_format.ParseDict(saved, common_pb2.FeedbackWindow())
        if not window.dataset.uri:
            return window, empty
        return window, load_window(uri_path(window.dataset.uri))

    def _promote_classifier(self, ctx: RunContext, spec: PipelineSpec, state: dict) -> dict:
        """Gate and promote the (hardened / retrained) classifier of a pipeline without a
        policy: accuracy not worse than its parent, robustness not worse."""
        params = ctx.params
        model = self.ctx.registry.get(params["reward_version"])
        metrics = {
            k: v
            for k, v in params.get("reward_metrics", {}).items()
            if k.startswith("classifier_accuracy")
        }
        if not params.get("retrain"):
            metrics.update(state.get("robustness", {}))
        gates = promotion.evaluate_gates(spec.gates, metrics)
        record_gates(spec.name, gates)
        if all(gates.values()):
            self._promote(ctx, spec, model.version)
        else:
            failed = sorted(k for k, ok in gates.items() if not ok)
            log.warning("%s not promoted: gates failed: %s", model.version, failed)
        return {"version": model.version, "promoted": all(gates.values()), "gates": gates}

    def _promote(self, ctx: RunContext, spec: PipelineSpec, version: str) -> None:
        self.ctx.publish_promotion(
            version,
            ctx.params["pipeline_run"],
            spec.name,
            spec.serving.canary_percent,
            event_id=ctx.event_id(f"{TOPIC_MODEL_PROMOTED}/{version}"),
        )

    # -- RPCs -------------------------------------------------------------------------------
    async def StartRun(self, request, context):
        require(request, "dataset.uri")
        if request.pipeline:
            try:
                load_named_pipeline(request.pipeline)
            except PipelineError as exc:
                raise RequestInvalid("pipeline", str(exc)) from None
        else:
            require(request, "algorithm")
        if request.algorithm:
            check_in(request.algorithm, "algorithm", ALGORITHMS)
        check_in(request.executor or "local", "executor", ("local", "kubernetes"))
        config = run_config(request.config_json)
        dataset = confined_path(
            request.dataset.uri, [self.ctx.datasets_root], "dataset.uri", kind="dataset"
        )
        algorithm = request.algorithm or next(
            s.kind for s in load_named_pipeline(request.pipeline).stages if s.kind in ALGORITHMS
        )
        models = {}
        for field in ("base_version", "reward_model_version"):
            version = getattr(request, field)
            if version:
                try:
                    models[field] = str(uri_path(self.ctx.registry.get(version).artifact.uri))
                except ModelNotFound:
                    raise NotFound(f"{field}: model version {version!r} does not exist") from None
        if algorithm in ("ppo", "grpo", "rloo") and "reward_model_version" not in models:
            raise RequestInvalid("reward_model_version", f"is required for {algorithm}")
        params = {
            "kind": "adhoc",
            "pipeline_run": "",
            "algorithm": algorithm,
            "dataset": str(dataset),
            "base_model": models.get("base_version", "smollm2"),
            "base_version": request.base_version,
            "reward_model": models.get("reward_model_version", ""),
            "reward_version": request.reward_model_version,
            "config": config,
            "executor": request.executor or "local",
        }
        record = self.ctx.submit_request(
            f"train-{algorithm}",
            self._adhoc_work,
            request,
            params,
        )
        return trainer_pb2.StartRunResponse(run_id=record.run_id)

    def _adhoc_work(self, ctx: RunContext) -> dict:
        """A StartRun outside the pipeline choreography, run here or as a Kubernetes Job.
        The result is registered with its lineage but not promoted (no gates ran)."""
        params = ctx.params
        out_dir = self._out_dir(ctx, params["algorithm"])
        run = stages.RunConfig(
            algorithm=params["algorithm"],
            dataset=params["dataset"],
            output_dir=str(out_dir),
            base_model=params["base_model"],
            reward_model=params["reward_model"],
            config=params["config"],
            device=self.ctx.settings.device,
        )
        if params["executor"] == "kubernetes":
            metrics = self._run_on_kubernetes(ctx, run)
        else:
            metrics = stages.run_adhoc(run, report=ctx.report).metrics
        name = f"{ctx.record.pipeline or 'adhoc'}-policy"
        model = self.ctx.registry.register(
            name,
            "policy",
            f"file://{out_dir / 'model'}",
            run_id=ctx.run_id,
            pipeline=ctx.record.pipeline,
            parent_version=params["base_version"],
            reward_model_version=params["reward_version"],
            config=params["config"],
            datasets=[common_pb2.ArtifactRef(uri=f"file://{params['dataset']}", kind="dataset")],
            metrics=metrics,
            key=ctx.key(params["algorithm"]),
        )
        ready = events_pb2.PolicyCheckpointReady(
            run_id=ctx.run_id, stage=params["algorithm"], pipeline=ctx.record.pipeline
        )
        ready.model.CopyFrom(model)
        self.ctx.publish(
            TOPIC_POLICY_CHECKPOINT_READY,
            ready,
            key=name,
            event_id=ctx.event_id(TOPIC_POLICY_CHECKPOINT_READY),
        )
        return {"version": model.version, "metrics": metrics}

    def _run_on_kubernetes(self, ctx: RunContext, run: stages.RunConfig) -> dict[str, float]:
        """Write the run config to the shared artifact volume, run `rlhf train` as a Job,
        mirror its status into this run, delete the Job on cancel."""
        import dataclasses

        import yaml

        from rlhf.executors.base import JobPhase, TrainingJobSpec
        from rlhf.executors.kubernetes import KubernetesExecutor

        config_file = Path(run.output_dir) / "run-config.yaml"
        config_file.parent.mkdir(parents=True, exist_ok=True)
        config_file.write_text(yaml.safe_dump(dataclasses.asdict(run)))
        executor = KubernetesExecutor()
        nproc = int(run.config.get("nproc_per_node", 1))
        gpus = int(run.config.get("gpus_per_node", 0))
        executor.submit(
            TrainingJobSpec(
                run_id=ctx.run_id,
                run_config=str(config_file),
                stage=run.algorithm,
                nproc_per_node=nproc,
                gpus_per_node=gpus,
            )
        )

        def mirror(status) -> None:
            if ctx.cancelled.is_set():
                executor.cancel(ctx.run_id)
            ctx.record.message = f"kubernetes job {status.phase}: {status.message}".strip(": ")
            ctx.report(
                pods_active=status.active,
                pods_succeeded=status.succeeded,
                pods_failed=status.failed,
            )

        final = executor.watch(ctx.run_id, mirror)
        if final.phase != JobPhase.SUCCEEDED:
            raise RuntimeError(
                f"Kubernetes Job for {ctx.run_id} ended {final.phase}: {final.message}"
            )
        metrics_file = Path(run.output_dir) / "metrics.json"
        return json.loads(metrics_file.read_text()) if metrics_file.exists() else {}

    async def GetRun(self, request, context):
        require(request, "run_id")
        return self.ctx.run_status(request.run_id)

    async def WatchRun(self, request, context):
        require(request, "run_id")
        last = None
        while True:
            try:
                record = self.ctx.runs.get(request.run_id)
            except RunNotFound:
                raise NotFound(f"run {request.run_id!r} does not exist") from None
            status = record.to_proto()
            if last is None or status.updated_at != last.updated_at:
                yield status
                last = status
            if record.done:
                return
            await asyncio.sleep(0.5)

    async def CancelRun(self, request, context):
        require(request, "run_id")
        try:
            record = self.ctx.runs.cancel(request.run_id, request.reason or "cancelled")
        except RunNotFound:
            raise NotFound(f"run {request.run_id!r} does not exist") from None
        if record.params.get("executor") == "kubernetes" and not record.done:
            # Delete the Job now rather than at its next status change.
            from rlhf.executors.kubernetes import KubernetesExecutor

            await asyncio.to_thread(KubernetesExecutor().cancel, record.run_id)
        return record.to_proto()

    async def ListModels(self, request, context):
        kind = {v: k for k, v in KINDS.items()}.get(request.kind, "")
        models = self.ctx.registry.list(request.name, kind, request.promoted_only)
        return trainer_pb2.ListModelsResponse(models=models)

    async def GetModel(self, request, context):
        require(request, "version")
        try:
            return self.ctx.registry.get(request.version)
        except ModelNotFound:
            raise NotFound(f"model version {request.version!r} does not exist") from None

    async def ListRuns(self, request, context):
        check(0 <= request.limit <= MAX_LISTED_RUNS, "limit", f"must be in 0..{MAX_LISTED_RUNS}")
        records = [
            r
            for r in self.ctx.runs.list()
            if not request.pipeline or r.pipeline == request.pipeline
        ]
        records.sort(key=lambda r: r.created_at, reverse=True)
        runs = [r.to_proto() for r in records[: request.limit or MAX_LISTED_RUNS]]
        return trainer_pb2.ListRunsResponse(runs=runs)

    async def PromoteModel(self, request, context):
        require(request, "version")
        check(len(request.reason) <= 1000, "reason", "must be at most 1000 characters")
        try:
            model = self.ctx.registry.get(request.version)
        except ModelNotFound:
            raise NotFound(f"model version {request.version[:80]!r} does not exist") from None
        return await asyncio.to_thread(
            self.ctx.publish_promotion,
            model.version,
            f"manual-{model.version}",
            model.lineage.pipeline,
            100,
            request.reason or "manual promotion",
        )

    async def RollbackModel(self, request, context):
        require(request, "name")
        check(len(request.reason) <= 1000, "reason", "must be at most 1000 characters")
        try:
            target = self.ctx.registry.rollback_target(request.name)
        except ModelNotFound as exc:
            raise NotFound(str(exc).strip("'\"")[:200]) from None
        return await asyncio.to_thread(
            self.ctx.publish_promotion,
            target.version,
            f"rollback-{target.version}",
            target.lineage.pipeline,
            100,
            f"rollback: {request.reason}" if request.reason else "rollback",
        )


def _kubernetes_executor() -> Any:
    from rlhf.executors.kubernetes import KubernetesExecutor

    return KubernetesExecutor()


def register(server, ctx: ServiceContext) -> TrainerService:
    servicer = TrainerService(ctx)
    server.add_servicer(
        trainer_pb2_grpc.add_TrainerServiceServicer_to_server, servicer, SERVICE_NAME
    )
    return servicer
