"""Compression on tiny models: each method's output loads (through the project's loader,
plain transformers where it can, and the Triton backend's engine) with the right shapes."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from rlhf.engine.classifier import (
    ClassifierTrainConfig,
    TextClassifier,
    evaluate_classifier,
    tiny_classifier,
    train_classifier,
)
from rlhf.engine.classifier import load_classifier as plain_load_classifier
from rlhf.engine.compression import MARKER_KEY, Int8WeightOnlyLinear, read_marker
from rlhf.engine.compression import classifiers as K
from rlhf.engine.compression import measure as M
from rlhf.engine.compression import policy as P
from rlhf.engine.data import LabeledText
from rlhf.engine.models import tiny_causal_lm, tiny_char_tokenizer
from rlhf.serving.backend import ClassifierEngine, PolicyEngine

TEXTS = [
    "a great movie , i loved it",
    "a terrible film , i hated it",
    "wonderful acting",
    "boring and dull",
    "the best film of the year",
    "the worst film of the year",
] * 3
LABELS = ["positive", "negative"] * 9


@pytest.fixture(scope="module")
def teacher():
    """A tiny BERT trained to separate the two labels (a random one says ~0.5 always)."""
    model = tiny_classifier(texts=TEXTS, hidden_size=32, num_layers=4, num_heads=4, seed=1)
    config = ClassifierTrainConfig(
        backbone="tiny", total_steps=40, learning_rate=2e-3, batch_size=6
    )
    records = [LabeledText(t, label) for t, label in zip(TEXTS, LABELS, strict=True)]
    trained = train_classifier(config, records, classifier=model).classifier
    assert evaluate_classifier(trained, records)["accuracy"] == 1.0
    return trained


def test_int8_classifier_is_quantised_on_load_and_close_to_the_source(teacher, tmp_path):
    out = K.int8_classifier(teacher, tmp_path / "int8", {"source": "v1"})
    assert read_marker(out) == {"method": "int8", "storage": "float32", "source": "v1"}
    loaded = K.load_classifier(out)
    query = loaded.model.bert.encoder.layer[0].attention.self.query
    assert "quantized" in type(query).__module__
    before, after = teacher.logits(TEXTS), loaded.logits(TEXTS)
    assert after.shape == before.shape and torch.allclose(before, after, atol=0.05)
    # Any transformers loader still reads it (unquantised)...
    plain = AutoModelForSequenceClassification.from_pretrained(str(out)).eval()
    assert torch.allclose(TextClassifier(plain, teacher.tokenizer).logits(TEXTS), before, atol=1e-5)
    # ...and the engine's loader (reward service, bench) re-applies the quantisation.
    engine = plain_load_classifier(out)
    assert "quantized" in type(engine.model.bert.encoder.layer[0].attention.self.query).__module__
    # The Triton backend's engine re-applies the quantisation.
    labels, probs, rewards = ClassifierEngine(str(out)).score(TEXTS[:4])
    assert len(labels) == 4 and probs.shape == (4,) and rewards.shape == (4,)


def test_student_keeps_evenly_spaced_layers():
    assert K.student_layers(6, 2) == [2, 5]
    assert K.student_layers(6, 3) == [1, 3, 5]
    assert K.student_layers(4, 4) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="student layers must be in 1..6"):
        K.student_layers(6, 7)


def test_distilled_student_is_a_plain_smaller_model_that_learns_the_teacher(teacher, tmp_path):
    config = K.DistillConfig(
        total_steps=30, batch_size=6, learning_rate=1e-3, freeze_embeddings=False
    )
    unlabelled = [None] * len(TEXTS)
    out, metrics = K.distill_classifier(
        teacher, tmp_path / "student", config, TEXTS * 2, LABELS + unlabelled, layers=1
    )
    assert metrics["steps"] == 30
    assert read_marker(out) is None  # nothing to re-apply: a plain HF directory
    student = AutoModelForSequenceClassification.from_pretrained(str(out))
    assert student.config.num_hidden_layers == 1
    assert sum(p.numel() for p in student.parameters()) < sum(
        p.numel() for p in teacher.model.parameters()
    )
    loaded = plain_load_classifier(out)
    agree = (loaded.logits(TEXTS).argmax(-1) == teacher.logits(TEXTS).argmax(-1)).float().mean()
    assert agree == 1.0


def test_pruned_model_has_fewer_heads_and_channels_and_loads_with_its_marker(teacher, tmp_path):
    config = K.PruneConfig(head_fraction=0.5, ffn_fraction=0.75, batch_size=6)
    recovery = K.DistillConfig(total_steps=3, batch_size=6)
    out, metrics = K.prune_classifier(
        teacher, tmp_path / "pruned", config, recovery, TEXTS, LABELS, lineage={"source": "v1"}
    )
    marker = read_marker(out)
    assert marker["heads"] == [2, 2, 2, 2] and marker["intermediate"] == [32] * 4
    assert metrics["heads_kept"] == 8 and metrics["steps"] == 3
    loaded = K.load_classifier(out)
    layer = loaded.model.bert.encoder.layer[0]
    assert layer.attention.self.query.out_features == 16
    assert layer.intermediate.dense.out_features == 32
    assert loaded.logits(TEXTS).shape == (len(TEXTS), 2)
    labels, _, _ = ClassifierEngine(str(out)).score(TEXTS[:3])
    assert len(labels) == 3
    assert plain_load_classifier(out).logits(TEXTS).shape == (len(TEXTS), 2)  # engine loader


def test_pruning_without_recovery_keeps_the_most_important_heads(teacher, tmp_path):
    """Removing nothing changes nothing; the pruned forward matches its own reload."""
    none = K.PruneConfig(head_fraction=0.0, ffn_fraction=0.0, batch_size=6)
    out, _ = K.prune_classifier(teacher, tmp_path / "same", none, None, TEXTS, LABELS)
    assert torch.allclose(K.load_classifier(out).logits(TEXTS), teacher.logits(TEXTS), atol=1e-5)
    half = K.PruneConfig(head_fraction=0.5, ffn_fraction=0.5, batch_size=6)
    heads, channels = K.importance(teacher, TEXTS, LABELS, half)
    assert [h.shape[0] for h in heads] == [4] * 4 and channels[0].shape == (128,)
    assert all(bool((h >= 0).all()) for h in heads)


def test_pruning_rejects_a_model_that_is_not_a_bert_encoder(tmp_path):
    tok = tiny_char_tokenizer()
    lm = tiny_causal_lm(len(tok), hidden_size=32, num_layers=1, num_heads=2)
    with pytest.raises(ValueError, match="BERT-style encoders"):
        K.encoder_layers(lm)


@pytest.mark.parametrize("method", ["weight_int8", "int8"])
def test_quantised_policy_loads_and_keeps_its_perplexity(method, tmp_path):
    tok = tiny_char_tokenizer()
    lm = tiny_causal_lm(
        len(tok),
        hidden_size=64,
        num_layers=2,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    out = P.save_compressed_policy(lm, tok, tmp_path / method, method)
    config = json.loads((out / "config.json").read_text())
    assert config[MARKER_KEY]["method"] == method
    loaded = P.load_policy(out)
    if method == "weight_int8":
        assert isinstance(loaded.model.layers[0].mlp.up_proj, Int8WeightOnlyLinear)
        assert loaded.model.layers[0].mlp.up_proj.weight_int8.dtype == torch.int8
    before, after = P.perplexity(lm, tok, TEXTS), P.perplexity(loaded, tok, TEXTS)
    assert abs(after / before - 1) < 0.03
    engine = PolicyEngine(str(out))
    from rlhf.serving.backend import Sampling

    texts = engine.generate(["a b", "c"], [Sampling(max_new_tokens=4, temperature=0)] * 2)
    assert len(texts) == 2


def test_weight_only_linear_matches_the_float_layer():
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 48)
    quantised = Int8WeightOnlyLinear(linear)
    x = torch.randn(3, 5, 64)
    with torch.no_grad():
        expected = linear(x)
        for dtype, tol in ((torch.float32, 0.02), (torch.bfloat16, 0.1)):
            got = quantised(x.to(dtype)).float()
            assert got.shape == expected.shape
            assert (got - expected).abs().max() < tol


def test_compare_speed_and_peak_memory_report_every_model(teacher, tmp_path):
    out = K.int8_classifier(teacher, tmp_path / "int8")
    int8 = K.load_classifier(out)
    speed = M.compare_speed(
        {"before": teacher.logits, "after": int8.logits}, TEXTS, batch_size=4, rounds=2
    )
    assert set(speed) == {"before", "after"}
    for row in speed.values():
        assert row["throughput"] > 0 and row["latency_p50_ms"] > 0
    with pytest.raises(ValueError, match="needs texts"):
        M.compare_speed({"x": teacher.logits}, [])
    assert M.peak_rss_mb("classifier", out, TEXTS[:2]) > 50
