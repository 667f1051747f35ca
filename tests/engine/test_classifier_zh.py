"""The Chinese classifier recipe: word-level BPE over CJK, head+tail truncation, save/load.

A synthetic review set whose verdict comes only at the end of a long review: a model
that reads just the head of each review cannot beat chance, the recipe's head+tail
truncation must, and the saved directory must load (and classify from the shell) with
the same truncation.
"""

from __future__ import annotations

import json
import random
from dataclasses import replace

import pytest
import torch
import typer
from typer.testing import CliRunner

from rlhf.cli import classify
from rlhf.engine.classifier import (
    ChineseClassifierRecipe,
    evaluate_classifier,
    head_tail,
    load_classifier,
    train_classifier,
)
from rlhf.engine.data import LabeledText
from rlhf.engine.tokenization import train_tokenizer

GOOD = ["非常满意", "很喜欢", "值得推荐", "服务很好"]
BAD = ["非常失望", "太差了", "不推荐", "服务很差"]
FILLER = ["酒店在市中心", "房间比较大", "早餐有面包和粥", "前台在一楼", "附近有超市", "电梯有两部"]
# Small enough for a test: the recipe's choices (tokenizer, truncation, learning rate) at toy size.
RECIPE = replace(
    ChineseClassifierRecipe(),
    vocab_size=600,
    min_frequency=2,
    hidden_size=32,
    num_layers=1,
    num_heads=2,
    max_length=20,
    tail_length=6,
    learning_rate=3e-3,
    epochs=6,
    batch_size=16,
)


def reviews(n: int, seed: int) -> list[LabeledText]:
    """Neutral filler (longer than the head the model reads), then the verdict."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        positive = rng.random() < 0.5
        filler = "，".join(rng.choice(FILLER) for _ in range(16))
        verdict = rng.choice(GOOD if positive else BAD)
        out.append(LabeledText(f"{filler}。{verdict}！", "positive" if positive else "negative"))
    return out


TRAIN = reviews(320, seed=0)
DEV = reviews(80, seed=1)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def train(recipe: ChineseClassifierRecipe):
    classifier = recipe.classifier([r.text for r in TRAIN], seed=0)
    config = recipe.train_config(warmup_ratio=0.1)
    return train_classifier(config, TRAIN, DEV, classifier=classifier)


@pytest.fixture(scope="module")
def trained():
    return train(RECIPE)


def test_head_tail_keeps_both_ends():
    assert head_tail(list(range(10)), 6, 2) == [0, 1, 2, 3, 8, 9]
    assert head_tail([1, 2, 3], 6, 2) == [1, 2, 3]
    assert head_tail(list(range(10)), 4, 9) == [0, 7, 8, 9]  # the head keeps <s>


def test_bpe_merges_span_cjk_only_when_asked():
    texts = [r.text for r in TRAIN]
    merged = train_tokenizer(texts, vocab_size=600, split_cjk=False)
    per_char = train_tokenizer(texts, vocab_size=600, split_cjk=True)
    text = "房间比较大，非常满意"
    assert len(merged(text)["input_ids"]) < len(per_char(text)["input_ids"]) - 4
    for tokenizer in (merged, per_char):  # lossless either way
        assert tokenizer.decode(tokenizer(text)["input_ids"], skip_special_tokens=True) == text


def test_reviews_are_longer_than_the_head():
    classifier = RECIPE.classifier([r.text for r in TRAIN])
    lengths = [len(ids) for ids in classifier.tokenizer([r.text for r in DEV])["input_ids"]]
    assert min(lengths) > RECIPE.max_length  # the verdict is past the head: truncation matters
    assert all(len(ids) == RECIPE.max_length for ids in classifier.token_ids([DEV[0].text]))


def test_recipe_reads_the_tail(trained):
    assert trained.metrics["accuracy"] >= 0.95, trained.metrics
    head_only = train(replace(RECIPE, tail_length=0))
    assert head_only.metrics["accuracy"] <= 0.75, head_only.metrics  # verdict never seen


def test_saved_model_loads_with_its_truncation(trained, tmp_path):
    directory = trained.classifier.save(tmp_path / "zh")
    loaded = load_classifier(directory)
    assert (loaded.max_length, loaded.tail_length) == (RECIPE.max_length, RECIPE.tail_length)
    assert evaluate_classifier(loaded, DEV)["accuracy"] == trained.metrics["accuracy"]
    texts = [r.text for r in DEV[:8]]
    assert torch.allclose(loaded.logits(texts), trained.classifier.logits(texts), atol=1e-5)

    file = tmp_path / "in.txt"
    file.write_text("\n".join(texts) + "\n", encoding="utf-8")
    app = typer.Typer()
    app.command()(classify.app)
    result = CliRunner().invoke(app, ["--model", str(directory), "--file", str(file)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [row["label"] for row in rows] == [p.label for p in loaded.predict(texts)]
