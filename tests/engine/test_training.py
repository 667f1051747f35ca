"""The training kit: one schedule for every trainer, config checks, metrics, runs."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
import types
from pathlib import Path

import pytest
import torch

from rlhf.engine.algorithms.dpo import DPOConfig
from rlhf.engine.algorithms.kl_control import KLControl, KLControlConfig
from rlhf.engine.algorithms.ppo import PPOConfig
from rlhf.engine.algorithms.rloo import RLOOConfig
from rlhf.engine.finetune import TrainLoopConfig, run_training_loop
from rlhf.engine.training import (
    MetricsLogger,
    TrainConfig,
    TrainingRun,
    lr_multiplier,
    micro_batches,
    optimizer_and_schedule,
)

# The four schedules the trainers wrote for themselves before the kit, verbatim: the
# kit's one function must give the same floats, or resumed and fresh runs would drift.


def rl_constant(s: int, w: int, _t: int) -> float:  # PPO, RLOO
    return min(1.0, (s + 1) / w) if w else 1.0


def dpo_linear(s: int, w: int, t: int) -> float:
    return min((s + 1) / max(1, w), max(0.0, (t - s) / max(1, t - w)))


def classifier_linear(s: int, w: int, t: int) -> float:  # w = max(1, int(t * ratio))
    if s < w:
        return (s + 1) / w
    return max(0.0, (t - s) / max(1, t - w))


def lm_cosine(s: int, w: int, t: int, floor: float = 0.1) -> float:
    if w and s < w:
        return (s + 1) / w
    progress = min(1.0, (s - w) / max(1, t - w))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


@pytest.mark.parametrize("total", [1, 7, 40])
@pytest.mark.parametrize("warmup", [0, 1, 5])
def test_one_schedule_reproduces_every_trainers_old_one(total, warmup):
    for step in range(total + 1):
        assert lr_multiplier(step, warmup, total, "constant") == rl_constant(step, warmup, total)
        assert lr_multiplier(step, warmup, total, "linear") == dpo_linear(step, warmup, total)
        assert lr_multiplier(step, warmup, total, "cosine", 0.1) == lm_cosine(step, warmup, total)
        if 1 <= warmup <= total:
            assert lr_multiplier(step, warmup, total, "linear") == classifier_linear(
                step, warmup, total
            )
    with pytest.raises(ValueError, match="decay"):
        lr_multiplier(0, 0, 1, "step")  # type: ignore[arg-type]


def test_optimizer_and_schedule_follow_the_config():
    model = torch.nn.Linear(2, 2)
    cfg = DPOConfig(learning_rate=1e-2, warmup_steps=2)
    optimizer, scheduler = optimizer_and_schedule(cfg, model.parameters(), total_steps=4)
    lrs = []
    for _ in range(4):
        lrs.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    assert lrs == pytest.approx([5e-3, 1e-2, 1e-2, 5e-3])  # DPO: warm-up, linear decay


@pytest.mark.parametrize(
    "make, field",
    [
        (lambda: TrainConfig(learning_rate=0.0), "learning_rate"),
        (lambda: TrainConfig(warmup_steps=-1), "warmup_steps"),
        (lambda: TrainConfig(lr_decay="step"), "lr_decay"),
        (lambda: TrainConfig(gradient_accumulation_steps=0), "gradient_accumulation_steps"),
        (lambda: PPOConfig(gradient_accumulation_steps=2), "gradient_accumulation_steps"),
        (lambda: TrainConfig(device="gpu0"), "device"),
        (lambda: TrainConfig(report_to=["wandb"]), "report_to"),
        (lambda: KLControlConfig(kl_budget_smoothing=0.0), "kl_budget_smoothing"),
        (lambda: PPOConfig(batch_size=8, mini_batch_size=3), "mini_batch_size"),
        (lambda: PPOConfig(kl_overshoot_factor=0.5), "kl_overshoot_factor"),
        (lambda: RLOOConfig(k=1), "k"),
        (lambda: DPOConfig(reference_pass="sometimes"), "reference_pass"),
        (lambda: TrainLoopConfig(warmup_ratio=1.5), "warmup_ratio"),
    ],
)
def test_configs_reject_bad_values_naming_the_field(make, field):
    with pytest.raises(ValueError, match=field):
        make()


def test_micro_batches_cover_the_batch_once():
    assert micro_batches(list(range(8)), 3) == [[0, 1, 2], [3, 4, 5], [6, 7]]
    assert micro_batches(list(range(4)), 1) == [[0, 1, 2, 3]]


def test_rl_configs_share_one_vocabulary():
    kl_fields = set(KLControlConfig.__dataclass_fields__)
    assert len(kl_fields) == 9
    for cls in (PPOConfig, RLOOConfig):
        assert kl_fields | set(TrainConfig.__dataclass_fields__) <= set(cls.__dataclass_fields__)
    assert PPOConfig(batch_size=8).mini_batch_size is None  # whole batch, as in RLOO


def test_kl_control_retries_then_stops():
    model = torch.nn.Linear(1, 1)
    kl = KLControl(KLControlConfig(init_kl_coef=0.1, kl_budget=1.0, kl_budget_retries=1))
    assert kl.within_budget(0.5, model)
    assert not kl.within_budget(2.0, model) and not kl.stopped  # retry with firmer beta
    assert kl.beta == pytest.approx(0.2) and kl.overshoots == 1
    assert not kl.within_budget(2.0, model) and kl.stopped


def test_metrics_logger_resumes_and_restarts(tmp_path):
    path = tmp_path / "metrics.jsonl"
    log = MetricsLogger(path)
    for step in (1, 2, 3):
        log.log(step, {"loss": torch.tensor(0.5), "bad": float("nan")})
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert rows[0] == {"step": 1, "loss": 0.5, "bad": "nan"}
    MetricsLogger(path, resume_step=2)  # a run resumed from step 2 drops step 3
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2]
    MetricsLogger(path)  # a fresh run starts a fresh file
    assert not path.exists()


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is not None, reason="installed")
def test_a_tracker_without_its_package_is_named():
    with pytest.raises(ValueError, match="tensorboard"):
        MetricsLogger(None, report_to=["tensorboard"])


def test_training_run_checkpoints_and_resumes(tmp_path):
    model = torch.nn.Linear(2, 1)
    cfg = TrainConfig(output_dir=str(tmp_path), checkpoint_every=2, progress=False)

    def start() -> TrainingRun:
        optimizer, scheduler = optimizer_and_schedule(cfg, model.parameters(), 5)
        return TrainingRun(cfg, "toy", 5, {"model": model}, optimizer, scheduler)

    run = start()
    while run.running() and run.step < 3:
        run.end_step({"loss": float(run.step)})
    resumed = start()  # the checkpoint of step 2; step 3 is gone from metrics.jsonl
    assert resumed.step == 2 and resumed.history == [{"loss": 0.0}, {"loss": 1.0}]
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2]


def test_a_zero_time_limit_stops_before_the_first_step():
    model = torch.nn.Linear(2, 1)
    cfg = TrainConfig(time_limit_s=0.0, progress=False)
    optimizer, scheduler = optimizer_and_schedule(cfg, model.parameters(), 5)
    assert not TrainingRun(cfg, "toy", 5, {"model": model}, optimizer, scheduler).running()


def test_mlflow_tracker_gets_every_row_and_its_run_ends(tmp_path, monkeypatch):
    """report_to=["mlflow"] through a stand-in for the package (not installed here)."""
    calls: list[tuple] = []
    fake = types.SimpleNamespace(
        active_run=lambda: None,
        start_run=lambda run_name: calls.append(("start", run_name)),
        log_metrics=lambda metrics, step: calls.append(("log", step, metrics)),
        end_run=lambda: calls.append(("end",)),
    )
    monkeypatch.setitem(sys.modules, "mlflow", fake)
    model = torch.nn.Linear(2, 1)
    cfg = TrainConfig(output_dir=str(tmp_path), report_to=["mlflow"], progress=False)
    optimizer, scheduler = optimizer_and_schedule(cfg, model.parameters(), 2)
    run = TrainingRun(cfg, "toy", 2, {"model": model}, optimizer, scheduler)
    while run.running():
        run.end_step({"loss": 1.0, "note": "text"})
    run.finish(model_with_save(model), model_with_save(model), evaluate=lambda: {"acc": 0.5})
    assert calls == [
        ("start", "toy"),
        ("log", 1, {"loss": 1.0}),
        ("log", 2, {"loss": 1.0}),
        ("log", 2, {"eval_acc": 0.5}),
        ("end",),
    ]
    assert (tmp_path / "metrics.jsonl").read_text().count("\n") == 3  # metrics.jsonl too


def model_with_save(module: torch.nn.Module) -> types.SimpleNamespace:
    """Something with save_pretrained, as a model and a tokenizer have."""
    return types.SimpleNamespace(save_pretrained=lambda path: Path(path).mkdir(exist_ok=True))


def test_the_classifier_loop_reports_to_trackers_too(tmp_path, monkeypatch):
    logged: list[int] = []
    fake = types.SimpleNamespace(
        active_run=lambda: None,
        start_run=lambda run_name: None,
        log_metrics=lambda metrics, step: logged.append(step),
        end_run=lambda: logged.append(-1),
    )
    monkeypatch.setitem(sys.modules, "mlflow", fake)
    model = torch.nn.Linear(2, 1)
    x = torch.randn(8, 2)
    cfg = TrainLoopConfig(
        learning_rate=1e-2,
        batch_size=4,
        epochs=1,
        log_every=1,
        report_to=["mlflow"],
        group_by_length=False,
    )
    metrics, _ = run_training_loop(cfg, model, [1] * 8, lambda idx: model(x[idx]).pow(2).mean())
    assert metrics["steps"] == 2 and logged == [1, 2, -1]


@pytest.mark.parametrize("native", [True, False])
def test_cpu_bf16_only_where_the_cpu_has_it(monkeypatch, native):
    """An AVX2-only CPU emulates bf16 (a MiniLM step 10-15x slower than float32): there a
    config's `autocast: true` runs in float32; a CPU with native bf16 gets autocast."""
    from rlhf.engine import training
    from rlhf.engine.classifier import TextClassifier

    monkeypatch.setattr(training, "cpu_has_native_bf16", lambda: native)
    assert training.cpu_bf16("cpu", True) is native
    assert training.cpu_bf16("cpu", False) is False
    assert training.cpu_bf16("cuda", True) is True  # off the CPU the request stands
    with training.autocast("cpu", True):
        product = torch.ones(4, 4) @ torch.ones(4, 4)
    assert product.dtype == (torch.bfloat16 if native else torch.float32)
    with training.autocast("cpu", False):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32

    classifier = TextClassifier.__new__(TextClassifier)  # only its precision
    classifier.device, classifier.autocast = torch.device("cpu"), True
    with classifier._autocast():
        product = torch.ones(4, 4) @ torch.ones(4, 4)
    assert product.dtype == (torch.bfloat16 if native else torch.float32)
