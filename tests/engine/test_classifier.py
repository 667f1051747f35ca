"""Tiny-BERT classifiers built from a config: training, exact resume, save/load, errors."""

from __future__ import annotations

import json
import random

import pytest
import torch

from rlhf.engine.classifier import (
    ClassifierLoadError,
    ClassifierTrainConfig,
    TextClassifier,
    load_classifier,
    tiny_classifier,
    train_classifier,
)
from rlhf.engine.data import DataError, LabeledText

GOOD = ["great", "wonderful", "superb", "lovely", "brilliant", "delightful"]
BAD = ["awful", "terrible", "boring", "dreadful", "horrible", "tedious"]
NOUNS = ["movie", "film", "plot", "cast", "story", "ending", "script", "show"]


def synthetic_sentiment(n: int, seed: int) -> list[LabeledText]:
    """'the <noun> was <adj>' with a good or bad adjective: learnable in a few steps."""
    rng = random.Random(seed)
    records = []
    for _ in range(n):
        positive = rng.random() < 0.5
        adjective = rng.choice(GOOD if positive else BAD)
        text = f"the {rng.choice(NOUNS)} was {adjective}"
        records.append(LabeledText(text, "positive" if positive else "negative"))
    return records


TRAIN = synthetic_sentiment(256, seed=0)
EVAL = synthetic_sentiment(64, seed=1)


def fresh_model() -> TextClassifier:
    return tiny_classifier(texts=[r.text for r in TRAIN], max_length=16, seed=0)


def small_config(**overrides) -> ClassifierTrainConfig:
    values = dict(
        learning_rate=3e-3,
        batch_size=16,
        max_length=16,
        epochs=4,
        warmup_ratio=0.1,
        seed=0,
        log_every=1,
    )
    values.update(overrides)
    return ClassifierTrainConfig(**values)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models on a busy shared CPU: one thread is ~100x faster than two contending."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained(one_thread, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    result = train_classifier(
        small_config(output_dir=str(run_dir), eval_every=16),
        TRAIN,
        EVAL,
        classifier=fresh_model(),
    )
    return result, run_dir


def test_tiny_classifier_learns_the_task(trained):
    result, run_dir = trained
    assert result.metrics["steps"] == 64
    assert result.metrics["accuracy"] >= 0.9 and result.metrics["macro_f1"] >= 0.9
    assert [h["step"] for h in result.history] == [16, 32, 48, 64]
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert sum("loss" in json.loads(line) for line in lines) == 64  # one line per step


def test_predict_and_positive_scores_agree(trained):
    classifier = trained[0].classifier
    texts = ["the film was brilliant", "the plot was dreadful"]
    predictions = classifier.predict(texts)
    assert [p.label for p in predictions] == ["positive", "negative"]
    for p in predictions:
        assert p.score == pytest.approx(max(p.probabilities.values()))
        assert sum(p.probabilities.values()) == pytest.approx(1.0)
    scores = classifier.positive_scores(texts)
    assert scores.shape == (2,) and scores[0] > 0 > scores[1]
    # log-odds of "positive": sigmoid(score) is p(positive).
    p_pos = predictions[0].probabilities["positive"]
    assert torch.sigmoid(scores[0]).item() == pytest.approx(p_pos, abs=1e-5)


def test_save_load_round_trip(trained, tmp_path):
    classifier = trained[0].classifier
    classifier.save(tmp_path / "model")
    assert (tmp_path / "model" / "model.safetensors").is_file()
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["id2label"] == {"0": "negative", "1": "positive"}
    assert config["label2id"] == {"negative": 0, "positive": 1}
    loaded = load_classifier(tmp_path / "model")
    texts = [r.text for r in EVAL[:8]]
    assert torch.allclose(
        loaded.positive_scores(texts), classifier.positive_scores(texts), atol=1e-5
    )
    assert loaded.max_length == 16


def test_killed_run_resumes_to_the_same_weights(tmp_path):
    """Kill after step 5 (last checkpoint: step 4), resume: bit-identical to no kill."""
    reference = train_classifier(
        small_config(total_steps=10, epochs=1), TRAIN, classifier=fresh_model()
    ).classifier

    class Killed(Exception):
        pass

    def kill_at_5(step: int, _metrics: dict) -> None:
        if step == 5:
            raise Killed

    config = small_config(total_steps=10, epochs=1, output_dir=str(tmp_path), checkpoint_every=2)
    with pytest.raises(Killed):
        train_classifier(config, TRAIN, classifier=fresh_model(), on_step=kill_at_5)
    # A new process would rebuild the model from scratch: do the same, with other weights.
    other = tiny_classifier(texts=[r.text for r in TRAIN], max_length=16, seed=123)
    resumed = train_classifier(config, TRAIN, classifier=other)
    assert resumed.metrics["steps"] == 10
    for (name, a), (_, b) in zip(
        reference.model.state_dict().items(),
        resumed.classifier.model.state_dict().items(),
        strict=True,
    ):
        assert torch.equal(a, b), name


def test_time_budget_stops_with_a_checkpoint(tmp_path):
    result = train_classifier(
        small_config(time_limit_s=0.0, output_dir=str(tmp_path)), TRAIN, classifier=fresh_model()
    )
    assert result.metrics["stopped_by_time"] and result.metrics["steps"] == 0
    assert (tmp_path / "checkpoints" / "latest").is_file()


def test_bad_training_data_fails_before_training():
    with pytest.raises(DataError, match=r"train, key '\[1\]': label 'meh' is outside"):
        train_classifier(
            small_config(), [TRAIN[0], LabeledText("x", "meh")], classifier=fresh_model()
        )
    with pytest.raises(DataError, match="eval: empty split"):
        train_classifier(small_config(), TRAIN, [], classifier=fresh_model())


def test_load_rejects_what_is_not_a_classifier(tmp_path):
    with pytest.raises(ClassifierLoadError, match="model directory not found"):
        load_classifier(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ClassifierLoadError, match=r"empty: not a model directory \(no config"):
        load_classifier(tmp_path / "empty")
    # A base encoder (no classification head) is refused, not silently given a random head.
    base = tmp_path / "base"
    fresh_model().save(base)
    config = json.loads((base / "config.json").read_text())
    config["architectures"] = ["BertModel"]
    (base / "config.json").write_text(json.dumps(config))
    with pytest.raises(ClassifierLoadError, match="is not a sequence classifier"):
        load_classifier(base)


def test_frozen_embeddings_stay_fixed():
    model = fresh_model()
    before = model.model.get_input_embeddings().weight.detach().clone()
    train_classifier(small_config(total_steps=3, freeze_embeddings=True), TRAIN, classifier=model)
    assert torch.equal(model.model.get_input_embeddings().weight, before)


def test_tiny_classifier_label_count():
    assert tiny_classifier(2).labels == ["negative", "positive"]
    assert tiny_classifier(1).num_labels == 1
    assert tiny_classifier(3).labels == ["label_0", "label_1", "label_2"]
