"""Adversarial generator service.

RPCs: Attack (async), RedTeam (async), GetRun, GetReport. Consumes
`reward.model.ready`: a freshly trained classifier of a pipeline with an adversarial
stage is attacked; the successful, label-preserving perturbations (with their TRUE
labels) become a versioned dataset published as `adversarial.batch.ready`, and a
`robustness.report` (stage "before") goes out. When the hardened model arrives it is
attacked afresh and the "after" report goes out: the trainer's robustness gate
compares the two.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from google.protobuf import json_format

from rlhf.engine.data import save_dataset
from rlhf.pipelines import PipelineSpec, Stage, load_named_pipeline
from rlhf.registry import ModelNotFound
from rlhf.runtime.confine import confined_path
from rlhf.runtime.grpc.errors import NotFound, check, check_in, check_range, require
from rlhf.runtime.runs import RunContext
from rlhf.runtime.service import (
    TOPIC_ADVERSARIAL_BATCH_READY,
    TOPIC_REWARD_MODEL_READY,
    TOPIC_ROBUSTNESS_REPORT,
    ServiceContext,
    uri_path,
)
from rlhf.v1 import adversary_pb2, adversary_pb2_grpc, events_pb2
from rlhf.workflows import stages

log = logging.getLogger(__name__)

SERVICE_NAME = "rlhf.v1.AdversaryService"
METHODS = ("word", "char", "blackbox")


class AdversaryService(adversary_pb2_grpc.AdversaryServiceServicer):
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self.reports_dir = ctx.artifact_dir / "reports" / "adversary"
        ctx.subscribe(TOPIC_REWARD_MODEL_READY, self.on_reward_model_ready)
        ctx.runs.resume_incomplete(lambda record: self._work[record.params["kind"]])

    @property
    def _work(self):
        return {
            "pipeline": self._pipeline_attack_work,
            "attack": self._attack_work,
            "redteam": self._redteam_work,
        }

    # -- events ---------------------------------------------------------------------------
    def on_reward_model_ready(self, event) -> None:
        payload: events_pb2.RewardModelReady = event.payload
        if payload.stage not in ("reward", "hardened") or not payload.pipeline:
            return
        spec = load_named_pipeline(payload.pipeline, quick=payload.profile == "quick")
        if not any(s.kind == "adversarial" for s in spec.stages):
            return
        self.ctx.runs.submit(
            "attack",
            self._pipeline_attack_work,
            params={
                "kind": "pipeline",
                "pipeline_run": payload.run_id,
                "profile": payload.profile,
                "target_version": payload.model.version,
                "phase": "before" if payload.stage == "reward" else "after",
                "datasets": [ref.uri for ref in payload.model.lineage.datasets],
            },
            request_id=f"{event.source}/{event.id}",
            pipeline=payload.pipeline,
        )

    # -- work -----------------------------------------------------------------------------
    def _pipeline_attack_work(self, ctx: RunContext) -> dict:
        params = ctx.params
        spec = load_named_pipeline(ctx.record.pipeline, quick=params.get("profile") == "quick")
        stage = next(s for s in spec.stages if s.kind == "adversarial")
        datasets = self._datasets_by_key(spec, params["datasets"])
        target = self.ctx.registry.get(params["target_version"])
        report, results, examples = stages.attack_stage(
            spec,
            stage,
            datasets,
            classifier_dir=uri_path(target.artifact.uri),
            device=self.ctx.settings.device,
            report=ctx.report,
        )
        self._save_report(ctx, target.version, report, results)
        event = events_pb2.RobustnessReport(
            run_id=params["pipeline_run"],
            stage=params["phase"],
            target_version=target.version,
            clean_accuracy=report.clean_accuracy,
            robust_accuracy=report.robust_accuracy,
            attack_success_rate=report.attack_success_rate,
            mean_edits=report.mean_edits,
            min_similarity=report.min_similarity,
            mean_similarity=report.mean_similarity,
            pipeline=spec.name,
            examples=report.examples,
        )
        event.report.uri = f"file://{self.reports_dir / ctx.run_id / 'report.json'}"
        event.report.kind = "report"
        self.ctx.publish(TOPIC_ROBUSTNESS_REPORT, event, key=spec.name)
        if params["phase"] == "before":
            batch = events_pb2.AdversarialBatchReady(
                run_id=params["pipeline_run"],
                stage=stage.name,
                pipeline=spec.name,
                target_version=target.version,
                examples=len(examples),
                attack_success_rate=report.attack_success_rate,
                profile=params.get("profile", ""),
            )
            if examples:  # none found: the batch is empty and hardening has nothing to add
                out = self.ctx.artifact_dir / "datasets" / "adversarial" / ctx.run_id
                manifest = save_dataset(
                    out,
                    {"train": examples},
                    name=f"{spec.name}-adversarial",
                    metadata={"target_version": target.version},
                )
                batch.dataset.uri, batch.dataset.kind = f"file://{out}", "dataset"
                batch.dataset.digest = manifest["version"]
            self.ctx.publish(TOPIC_ADVERSARIAL_BATCH_READY, batch, key=spec.name)
        return report.to_dict()

    @staticmethod
    def _datasets_by_key(spec: PipelineSpec, uris: list[str]) -> dict[str, Path]:
        """Dataset directories are <datasets>/<key>/<version>: map them back to keys."""
        found = {}
        for uri in uris:
            path = uri_path(uri)
            if path.parent.name in spec.datasets:
                found[path.parent.name] = path
        return found

    def _attack_work(self, ctx: RunContext) -> dict:
        params = ctx.params
        target = self.ctx.registry.get(params["target_version"])
        dataset = Path(params["dataset"])
        config = {
            k: params[k]
            for k in ("method", "max_edits", "min_similarity", "query_budget")
            if params.get(k)
        }
        config["max_examples"] = params.get("max_examples") or 10**9
        language = (
            "zh" if params.get("method") == "char" and params.get("language") == "zh" else "en"
        )
        spec = PipelineSpec(
            name="adhoc",
            task="classify",
            language=language,
            datasets={"data": {"format": "jsonl", "path": str(dataset)}},
            stages=[Stage(name="attack", kind="adversarial", data="data", config=config)],
        )
        report, results, examples = stages.attack_stage(
            spec,
            spec.stages[0],
            {"data": dataset},
            classifier_dir=uri_path(target.artifact.uri),
            device=self.ctx.settings.device,
            report=ctx.report,
            split=params.get("split", "validation"),
        )
        self._save_report(ctx, target.version, report, results)
        return report.to_dict()

    def _redteam_work(self, ctx: RunContext) -> dict:
        from rlhf.engine.adversarial import RedTeamConfig, red_team
        from rlhf.engine.classifier import load_classifier
        from rlhf.engine.data import load_dataset
        from rlhf.engine.models import load_policy, load_tokenizer

        params = ctx.params
        policy_dir = uri_path(self.ctx.registry.get(params["policy_version"]).artifact.uri)
        reward = load_classifier(
            uri_path(self.ctx.registry.get(params["reward_version"]).artifact.uri)
        )
        judge = load_classifier(
            uri_path(self.ctx.registry.get(params["judge_version"]).artifact.uri)
        )
        policy, tokenizer = load_policy(policy_dir), load_tokenizer(policy_dir)
        records = load_dataset(params["prompts"])["train"]
        prompts = stages.prompts_from(records, 6, "en")[:32]

        def generate(batch: list[str], n: int) -> list[list[str]]:
            import torch

            encoded = tokenizer(batch, return_tensors="pt", padding=True)
            with torch.no_grad():
                out = policy.generate(
                    **encoded,
                    do_sample=True,
                    max_new_tokens=24,
                    num_return_sequences=n,
                    pad_token_id=tokenizer.pad_token_id,
                )
            texts = tokenizer.batch_decode(
                out[:, encoded["input_ids"].shape[1] :], skip_special_tokens=True
            )
            return [texts[i * n : (i + 1) * n] for i in range(len(batch))]

        result = red_team(
            prompts,
            generate,
            lambda t: reward.positive_scores(t).numpy(),
            lambda t: [p.probabilities.get("positive", 0.0) for p in judge.predict(t)],
            RedTeamConfig(samples_per_prompt=params.get("samples_per_prompt") or 4),
        )
        out = self.reports_dir / ctx.run_id
        out.mkdir(parents=True, exist_ok=True)
        (out / "redteam.json").write_text(
            json.dumps(result.to_dict(), default=str, ensure_ascii=False)
        )
        return {k: v for k, v in result.to_dict().items() if isinstance(v, int | float)}

    def _save_report(self, ctx: RunContext, target_version: str, report, results) -> None:
        from rlhf.engine.adversarial import report_to_proto

        proto = report_to_proto(
            report,
            results,
            run_id=ctx.run_id,
            target_version=target_version,
            label_names=["negative", "positive"],
        )
        out = self.reports_dir / ctx.run_id
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.json").write_text(json_format.MessageToJson(proto, ensure_ascii=False))
        ctx.add_artifact(f"file://{out / 'report.json'}", "report")

    # -- RPCs -----------------------------------------------------------------------------
    def _model(self, version: str, field: str):
        try:
            return self.ctx.registry.get(version)
        except ModelNotFound:
            raise NotFound(f"{field}: model version {version!r} does not exist") from None

    async def Attack(self, request, context):
        require(request, "target_version", "dataset.uri")
        check_in(request.method or "word", "method", METHODS)
        if request.max_edits:
            check_range(request.max_edits, "max_edits", ge=1, le=10)
        if request.min_similarity:
            check_range(request.min_similarity, "min_similarity", gt=0, le=1)
        check(request.max_examples >= 0, "max_examples", "must be >= 0")
        check(request.query_budget >= 0, "query_budget", "must be >= 0")
        self._model(request.target_version, "target_version")
        dataset = confined_path(
            request.dataset.uri, [self.ctx.datasets_root], "dataset.uri", kind="dataset"
        )
        record = self.ctx.submit_request(
            "attack",
            self._attack_work,
            request,
            {
                "kind": "attack",
                "target_version": request.target_version,
                "dataset": str(dataset),
                "method": request.method or "word",
                "max_edits": request.max_edits,
                "min_similarity": request.min_similarity,
                "max_examples": request.max_examples,
                "query_budget": request.query_budget,
            },
        )
        return adversary_pb2.AttackResponse(run_id=record.run_id)

    async def RedTeam(self, request, context):
        require(request, "policy_version", "reward_model_version", "judge_version", "prompts.uri")
        for field in ("policy_version", "reward_model_version", "judge_version"):
            self._model(getattr(request, field), field)
        prompts = confined_path(
            request.prompts.uri, [self.ctx.datasets_root], "prompts.uri", kind="dataset"
        )
        record = self.ctx.submit_request(
            "redteam",
            self._redteam_work,
            request,
            {
                "kind": "redteam",
                "policy_version": request.policy_version,
                "reward_version": request.reward_model_version,
                "judge_version": request.judge_version,
                "prompts": str(prompts),
                "samples_per_prompt": request.samples_per_prompt,
            },
        )
        return adversary_pb2.AttackResponse(run_id=record.run_id)

    async def GetRun(self, request, context):
        require(request, "run_id")
        return self.ctx.run_status(request.run_id)

    async def GetReport(self, request, context):
        require(request, "run_id")
        path = self.reports_dir / request.run_id / "report.json"
        # Run ids are short names; anything else (a 5,000-character id, a NUL) would
        # make the stat below fail with an OSError rather than find nothing.
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}", request.run_id) or not (
            path.exists()
        ):
            raise NotFound(f"no report for run {request.run_id[:80]!r} (unknown, or not finished)")
        return json_format.Parse(path.read_text(), adversary_pb2.AttackReport())


def register(server, ctx: ServiceContext) -> AdversaryService:
    servicer = AdversaryService(ctx)
    server.add_servicer(
        adversary_pb2_grpc.add_AdversaryServiceServicer_to_server, servicer, SERVICE_NAME
    )
    return servicer
