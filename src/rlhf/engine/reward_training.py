"""Pairwise (Bradley-Terry) reward models on preference pairs.

The reward model is a sequence classifier with a single logit r(prompt + response).
Bradley-Terry says P(chosen preferred over rejected) = sigmoid(r_chosen - r_rejected),
so training minimises  -log sigmoid(r_chosen - r_rejected)  over the pairs. Evaluation
is pairwise accuracy: how often r_chosen > r_rejected on held-out pairs.

The model is saved exactly like a classifier (`TextClassifier.save`, one label
"reward"), so `load_classifier(dir).positive_scores(texts)` returns rewards.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from rlhf.engine.classifier import (
    TextClassifier,
    TrainResult,
    classifier_from_backbone,
    pad_batch,
    tiny_classifier,
)
from rlhf.engine.data.records import DataError, PreferencePair
from rlhf.engine.finetune import TrainLoopConfig, run_training_loop

REWARD_LABELS = ("reward",)


@dataclass
class RewardModelTrainConfig(TrainLoopConfig):
    """Bradley-Terry reward model training (defaults: MiniLM on chat preferences)."""

    learning_rate: float = 3e-5
    batch_size: int = 8  # pairs per step (each step scores 2 x batch_size texts)
    max_length: int = 256  # tokens of prompt + response; the prompt is cut from the left
    epochs: float = 2.0
    margin_l2: float = 0.0  # optional penalty on r^2 to keep rewards centred (0 = off)


def pair_texts(pair: PreferencePair) -> tuple[str, str]:
    """The two texts the reward model scores: prompt + chosen, prompt + rejected."""
    return pair.prompt + pair.chosen, pair.prompt + pair.rejected


def check_pairs(pairs: Sequence[PreferencePair], name: str) -> None:
    """DataError before training for an empty split or a malformed pair."""
    if not pairs:
        raise DataError(name, "empty split: no preference pairs")
    for i, pair in enumerate(pairs):
        if not isinstance(pair, PreferencePair):
            raise DataError(
                name, f"expected PreferencePair, got {type(pair).__name__}", key=f"[{i}]"
            )
        if not pair.chosen.strip() or not pair.rejected.strip():
            raise DataError(name, "empty chosen or rejected response", key=f"[{i}]")


def _encode_left_truncated(
    tokenizer: Any, texts: Sequence[str], max_length: int
) -> list[list[int]]:
    """Token ids cut from the left: the response at the end must survive truncation."""
    side = tokenizer.truncation_side
    tokenizer.truncation_side = "left"
    try:
        return tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
    finally:
        tokenizer.truncation_side = side


def score_pairs(
    model: TextClassifier, pairs: Sequence[PreferencePair], batch_size: int = 32
) -> tuple[torch.Tensor, torch.Tensor]:
    """(r_chosen, r_rejected) for each pair, scored with left truncation."""
    chosen, rejected = zip(*(pair_texts(p) for p in pairs), strict=True)
    side = model.tokenizer.truncation_side
    model.tokenizer.truncation_side = "left"
    try:
        return (
            model.positive_scores(list(chosen), batch_size),
            model.positive_scores(list(rejected), batch_size),
        )
    finally:
        model.tokenizer.truncation_side = side


def evaluate_reward_model(
    model: TextClassifier, pairs: Sequence[PreferencePair], batch_size: int = 32
) -> dict[str, float]:
    """Pairwise accuracy, mean margin, and mean rewards of chosen / rejected."""
    from rlhf.engine.evaluation import pairwise_accuracy

    r_chosen, r_rejected = score_pairs(model, pairs, batch_size)
    return {
        "pairwise_accuracy": pairwise_accuracy(r_chosen.tolist(), r_rejected.tolist()),
        "mean_margin": float((r_chosen - r_rejected).mean()),
        "mean_reward_chosen": float(r_chosen.mean()),
        "mean_reward_rejected": float(r_rejected.mean()),
        "eval_pairs": len(pairs),
    }


def reward_model_from_backbone(
    backbone: str, max_length: int, seed: int, texts: Sequence[str] = ()
) -> TextClassifier:
    """A single-logit model on "minilm", "tiny" (tokenizer trained on `texts`) or a dir."""
    if backbone == "tiny":
        return tiny_classifier(
            REWARD_LABELS, list(texts)[:2000] or None, max_length=max_length, seed=seed
        )
    return classifier_from_backbone(backbone, REWARD_LABELS, max_length, seed=seed)


def reward_from_logits(logits: torch.Tensor, positive_index: int) -> torch.Tensor:
    """r(text): the single logit of a reward model, or a classifier's log-odds of its
    positive class (as `TextClassifier.positive_scores`), so preference pairs can also
    tune a sentiment classifier that serves as a policy's reward."""
    if logits.shape[1] == 1:
        return logits[:, 0]
    others = torch.cat([logits[:, :positive_index], logits[:, positive_index + 1 :]], dim=1)
    return logits[:, positive_index] - torch.logsumexp(others, dim=1)


def train_reward_model(
    config: RewardModelTrainConfig,
    train: Sequence[PreferencePair],
    eval: Sequence[PreferencePair] | None = None,
    model: TextClassifier | None = None,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> TrainResult:
    """Train a Bradley-Terry reward model; metrics include pairwise_accuracy on `eval`.

    `model` may be a single-logit reward model or a classifier (its positive log-odds
    are the reward): fine-tuning a sentiment reward classifier on preference pairs.

    Checkpoint/resume, time budget and bf16 autocast work as in `train_classifier`.
    """
    from rlhf.engine.checkpoint import seed_everything

    check_pairs(train, "train")
    if eval is not None:
        check_pairs(eval, "eval")
    seed_everything(config.seed)
    if model is None:
        texts = [t for p in train[:1000] for t in pair_texts(p)]
        model = reward_model_from_backbone(config.backbone, config.max_length, config.seed, texts)
    model.to(config.device)
    model.max_length = config.max_length
    net, device = model.model, model.device
    pad_id = model.tokenizer.pad_token_id

    chosen = _encode_left_truncated(
        model.tokenizer, [pair_texts(p)[0] for p in train], config.max_length
    )
    rejected = _encode_left_truncated(
        model.tokenizer, [pair_texts(p)[1] for p in train], config.max_length
    )
    lengths = [max(len(c), len(r)) for c, r in zip(chosen, rejected, strict=True)]

    def batch_loss(indices: list[int]) -> torch.Tensor:
        # One forward over [chosen; rejected] so both halves see the same dropout regime.
        sequences = [chosen[i] for i in indices] + [rejected[i] for i in indices]
        batch = {k: v.to(device) for k, v in pad_batch(sequences, pad_id).items()}
        rewards = reward_from_logits(net(**batch).logits.float(), model.positive_index)
        r_chosen, r_rejected = rewards[: len(indices)], rewards[len(indices) :]
        loss = -nn.functional.logsigmoid(r_chosen - r_rejected).mean()
        if config.margin_l2:
            loss = loss + config.margin_l2 * (rewards**2).mean()
        return loss

    def evaluate() -> dict[str, float]:
        return evaluate_reward_model(model, eval, config.eval_batch_size)

    metrics, history = run_training_loop(
        config,
        net,
        lengths,
        batch_loss,
        evaluate if eval is not None else None,
        on_step,
        name="reward_model",
    )
    return TrainResult(model, metrics, history)
