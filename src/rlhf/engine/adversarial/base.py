"""What every attack shares: the model protocol, input checks and the per-example result.

Attacks only need a `Classifier`: a callable that maps a batch of texts to an array of
class probabilities, shape (n, n_classes). A Hugging Face sequence classifier, a gRPC
`Classify` stub or a reward model's `Score` (through `classifier_from_scores`) all fit,
so the attack code never depends on how the model is served.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

#: Batch of texts -> class probabilities, shape (len(texts), n_classes).
Classifier = Callable[[list[str]], np.ndarray]
#: Batch of texts -> one scalar score per text (a pointwise reward model).
ScoreFn = Callable[[list[str]], np.ndarray]


class AdversarialInputError(ValueError):
    """Bad input to an attack (empty text, too long, unknown model, bad config field)."""


class SimilarityModel(Protocol):
    """Semantic similarity in [-1, 1] between aligned pairs of texts."""

    def __call__(self, originals: list[str], perturbed: list[str]) -> np.ndarray: ...


@dataclass
class AttackResult:
    """The outcome of attacking one labelled example.

    `success` is True only when the model was right on the original, the perturbed text
    passed every label-preservation constraint, and the model's prediction on the
    perturbed text (re-checked after the search) differs from the true label.
    """

    original: str
    perturbed: str
    label: int  # the TRUE label; an attack never changes it
    predicted_before: int
    predicted_after: int
    success: bool
    status: str  # "success" | "failed" | "skipped" (model already wrong) | "budget"
    edits: int = 0
    similarity: float = 1.0
    queries: int = 0
    changes: list[tuple[str, str]] = field(default_factory=list)  # (old, new) per edit

    @property
    def originally_correct(self) -> bool:
        return self.predicted_before == self.label

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_texts(
    texts: Sequence[str],
    *,
    tokenizer: Any | None = None,
    max_length: int | None = None,
    field_name: str = "texts",
) -> list[str]:
    """Reject empty texts and texts the model would have to truncate (names the index)."""
    if isinstance(texts, str):
        raise AdversarialInputError(f"{field_name} must be a list of strings, not one string")
    texts = list(texts)
    if not texts:
        raise AdversarialInputError(f"{field_name} is empty: nothing to attack")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise AdversarialInputError(f"{field_name}[{i}] is {type(text).__name__}, not str")
        if not text.strip():
            raise AdversarialInputError(f"{field_name}[{i}] is empty")
    if tokenizer is not None and max_length is not None:
        lengths = [len(ids) for ids in tokenizer(texts, truncation=False)["input_ids"]]
        for i, n in enumerate(lengths):
            if n > max_length:
                raise AdversarialInputError(
                    f"{field_name}[{i}] has {n} tokens, over the model's max length "
                    f"{max_length}; shorten or split it"
                )
    return texts


def check_labels(labels: Sequence[int], n: int, n_classes: int | None = None) -> list[int]:
    labels = [int(y) for y in labels]
    if len(labels) != n:
        raise AdversarialInputError(f"labels has {len(labels)} entries for {n} texts")
    if n_classes is not None:
        for i, y in enumerate(labels):
            if not 0 <= y < n_classes:
                raise AdversarialInputError(f"labels[{i}] = {y} is outside 0..{n_classes - 1}")
    return labels


def classifier_from_scores(score_fn: ScoreFn, threshold: float = 0.0) -> Classifier:
    """Turn a pointwise reward model into a 2-class classifier (1 = score above threshold).

    p(positive) = sigmoid(score - threshold), so an attack on it looks for label-preserving
    edits that push the reward across the threshold.
    """

    def classify(texts: list[str]) -> np.ndarray:
        scores = np.asarray(score_fn(list(texts)), dtype=np.float64).reshape(-1)
        p = 1.0 / (1.0 + np.exp(-(scores - threshold)))
        return np.stack([1.0 - p, p], axis=1)

    return classify


class CountingClassifier:
    """Wraps a Classifier, counting texts sent to it (one text = one query)."""

    def __init__(self, classifier: Classifier) -> None:
        self.classifier = classifier
        self.queries = 0

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.queries += len(texts)
        return np.asarray(self.classifier(list(texts)))


class HFClassifier:
    """A Hugging Face sequence classifier as a `Classifier` (probabilities), batched.

    Also exposes what the white-box candidate source needs: the tokenizer and the input
    embedding matrix of the attacked model.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        max_length: int = 128,
        batch_size: int = 64,
        device: str = "cpu",
        autocast: bool = False,
    ) -> None:
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.batch_size = batch_size
        self.device = device
        self.autocast = autocast  # bf16 autocast

    @classmethod
    def from_pretrained(cls, directory: str | Path, **kwargs: Any) -> HFClassifier:
        """Load a saved classifier; an unknown directory is a clear error, not a hub lookup."""
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        path = Path(directory)
        if not (path / "config.json").is_file():
            raise AdversarialInputError(
                f"model reference {str(directory)!r} is not a saved model directory "
                "(no config.json)"
            )
        model = AutoModelForSequenceClassification.from_pretrained(path)
        tokenizer = AutoTokenizer.from_pretrained(path)
        return cls(model, tokenizer, **kwargs)

    @classmethod
    def from_text_classifier(cls, classifier: Any, **kwargs: Any) -> HFClassifier:
        """Wrap an rlhf.engine.classifier.TextClassifier (shares its model, not a copy)."""
        kwargs.setdefault("max_length", classifier.max_length)
        kwargs.setdefault("autocast", classifier.autocast)
        kwargs.setdefault("device", str(classifier.device))
        return cls(classifier.model, classifier.tokenizer, **kwargs)

    @property
    def n_classes(self) -> int:
        return int(self.model.config.num_labels)

    def input_embeddings(self) -> np.ndarray:
        return self.model.get_input_embeddings().weight.detach().float().cpu().numpy()

    def check(self, texts: Sequence[str]) -> list[str]:
        return check_texts(texts, tokenizer=self.tokenizer, max_length=self.max_length)

    def __call__(self, texts: list[str]) -> np.ndarray:
        import torch

        from rlhf.engine.training import cpu_bf16

        self.model.eval()  # the model may be shared with a trainer that left it in train mode
        out = []
        with torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                batch = list(texts[start : start + self.batch_size])
                enc = self.tokenizer(
                    batch,
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                ).to(self.device)
                bf16 = cpu_bf16(self.device, self.autocast)
                with torch.autocast(self.device.split(":")[0], torch.bfloat16, enabled=bf16):
                    logits = self.model(**enc).logits
                out.append(torch.softmax(logits.float(), dim=-1).cpu().numpy())
        return np.concatenate(out, axis=0) if out else np.zeros((0, self.n_classes))
