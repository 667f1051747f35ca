"""Bradley-Terry reward models on preference pairs, with a tiny BERT backbone."""

from __future__ import annotations

import random

import pytest
import torch

from rlhf.engine.classifier import load_classifier
from rlhf.engine.data import DataError, PreferencePair
from rlhf.engine.reward_training import (
    RewardModelTrainConfig,
    evaluate_reward_model,
    score_pairs,
    train_reward_model,
)

GOOD = ["helpful", "clear", "kind", "correct", "polite"]
BAD = ["rude", "wrong", "useless", "harmful", "vague"]
TOPICS = ["pens", "cats", "taxes", "rain", "maps", "tea"]


def synthetic_pairs(n: int, seed: int) -> list[PreferencePair]:
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        prompt = f"\n\nHuman: tell me about {rng.choice(TOPICS)}\n\nAssistant:"
        pairs.append(
            PreferencePair(prompt, f" a {rng.choice(GOOD)} answer", f" a {rng.choice(BAD)} answer")
        )
    return pairs


TRAIN = synthetic_pairs(160, seed=0)
EVAL = synthetic_pairs(48, seed=1)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def config(**overrides) -> RewardModelTrainConfig:
    values = dict(
        backbone="tiny",
        learning_rate=3e-3,
        batch_size=16,
        max_length=24,
        epochs=3,
        warmup_ratio=0.1,
        seed=0,
    )
    values.update(overrides)
    return RewardModelTrainConfig(**values)


@pytest.fixture(scope="module")
def trained(one_thread):
    return train_reward_model(config(), TRAIN, EVAL)


def test_reward_model_learns_preferences(trained):
    metrics = trained.metrics
    assert trained.classifier.num_labels == 1
    assert metrics["pairwise_accuracy"] >= 0.9
    assert metrics["mean_reward_chosen"] > metrics["mean_reward_rejected"]


def test_loss_is_bradley_terry(trained):
    """-log sigmoid(r_c - r_r) recomputed from the model's own rewards."""
    model = trained.classifier
    r_c, r_r = score_pairs(model, EVAL[:8])
    expected = -torch.nn.functional.logsigmoid(r_c - r_r).mean()
    # The same quantity through log-probabilities of the Bradley-Terry preference model.
    p_chosen = torch.sigmoid(r_c - r_r)
    assert expected.item() == pytest.approx(-torch.log(p_chosen).mean().item(), rel=1e-5)
    assert expected.item() < 0.5  # trained: chosen clearly preferred


def test_saved_like_a_classifier(trained, tmp_path):
    trained.classifier.save(tmp_path / "rm")
    loaded = load_classifier(tmp_path / "rm")
    before = evaluate_reward_model(trained.classifier, EVAL)
    after = evaluate_reward_model(loaded, EVAL)
    assert after["pairwise_accuracy"] == before["pairwise_accuracy"]
    assert after["mean_margin"] == pytest.approx(before["mean_margin"], abs=1e-5)


def test_long_prompts_are_cut_from_the_left(trained):
    """The response sits at the end: truncation must drop prompt tokens, not it."""
    model = trained.classifier
    long_prompt = "\n\nHuman: " + "tell me more " * 40 + "\n\nAssistant:"
    pair = PreferencePair(long_prompt, " a helpful answer", " a rude answer")
    r_c, r_r = score_pairs(model, [pair])
    assert r_c.item() > r_r.item()


def test_resume_reproduces_uninterrupted_run(tmp_path):
    reference = train_reward_model(config(total_steps=6), TRAIN).classifier

    class Killed(Exception):
        pass

    def kill(step, _metrics):
        if step == 4:
            raise Killed

    run = config(total_steps=6, output_dir=str(tmp_path), checkpoint_every=3)
    with pytest.raises(Killed):
        train_reward_model(run, TRAIN, on_step=kill)
    resumed = train_reward_model(run, TRAIN).classifier
    for a, b in zip(reference.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_bad_pairs_fail_before_training():
    with pytest.raises(DataError, match="train: empty split"):
        train_reward_model(config(), [])
    with pytest.raises(DataError, match=r"eval, key '\[0\]': empty chosen or rejected"):
        train_reward_model(config(), TRAIN, [PreferencePair("q", " ", " no")])
