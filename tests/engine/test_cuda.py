"""The engine on a CUDA device: every training entry point with ``device="cuda"``.

Issue 3 says "device and dtype are parameters (CPU bf16 autocast where it helps;
CUDA unchanged)". These tests run the same tiny-model recipes as the CPU tests
(pre-training, SFT, classifier, pointwise and pairwise reward models, PPO, RLOO,
GRPO, DPO, generation) on the GPU, with the same quality assertions, and check that
weights and outputs really live there, that bf16 models train, and that a killed run
resumes to the uninterrupted run's weights.

They are marked ``gpu`` and skipped where no CUDA device exists (CI). The device
comes from ``RLHF_TEST_DEVICE`` (default ``cuda``); ``RLHF_TEST_DEVICE=cpu`` runs the
same logic on the CPU, which is how the tests themselves are debugged without a GPU:

    RLHF_TEST_DEVICE=cpu python -m pytest tests/engine/test_cuda.py -m gpu -q

Resume checks run with ``torch.use_deterministic_algorithms(True, warn_only=True)``
and a fixed cuBLAS workspace, the documented way to make CUDA kernels repeat
bit for bit; they assert a max |difference| of at most ``RESUME_ATOL`` (0 on CPU)
and print the measured one, so the log says whether it was exact.
"""

from __future__ import annotations

import contextlib
import math
import os

import pytest
import torch

from rlhf.engine.algorithms.dpo import DPOConfig, train_dpo
from rlhf.engine.algorithms.ppo import PPOConfig, train_ppo
from rlhf.engine.algorithms.pretrain import PretrainConfig, pretrain
from rlhf.engine.algorithms.rloo import RLOOConfig, train_rloo
from rlhf.engine.algorithms.rollout import rollout_logprobs, sample
from rlhf.engine.algorithms.sft import SFTConfig, train_sft
from rlhf.engine.classifier import load_classifier, train_classifier
from rlhf.engine.evaluation import kl_from_logprobs
from rlhf.engine.models import (
    CausalLMWithValueHead,
    load_policy,
    tiny_causal_lm,
    tiny_char_tokenizer,
)
from rlhf.engine.reward_training import (
    RewardModelTrainConfig,
    evaluate_reward_model,
    train_reward_model,
)
from tests.engine.algorithms.conftest import (
    ALPHABET,
    PROMPTS,
    Interrupt,
    fraction_of_a,
    interrupting,
)
from tests.engine.algorithms.test_dpo import FAST as DPO_CPU_FAST
from tests.engine.algorithms.test_dpo import toy_pairs
from tests.engine.algorithms.test_ppo import FAST as PPO_CPU_FAST
from tests.engine.algorithms.test_rloo import FAST as RLOO_CPU_FAST
from tests.engine.algorithms.test_sft_pretrain import FAST as SFT_PRETRAIN_FAST
from tests.engine.test_classifier import EVAL as SENTIMENT_EVAL
from tests.engine.test_classifier import TRAIN as SENTIMENT_TRAIN
from tests.engine.test_classifier import fresh_model, small_config
from tests.engine.test_classifier_reward import EVAL as PAIRS_EVAL
from tests.engine.test_classifier_reward import TRAIN as PAIRS_TRAIN

# cuBLAS picks workspaces nondeterministically unless this is set before its first use
# (lazy: no CUDA work happens at import); it matters for the resume checks only.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

DEVICE = os.environ.get("RLHF_TEST_DEVICE", "cuda")
DEVICE_TYPE = torch.device(DEVICE).type
RESUME_ATOL = 0.0 if DEVICE_TYPE == "cpu" else 1e-5
"""Resumed vs uninterrupted weights: bit-exact on CPU (as the CPU tests assert). On
CUDA torch warns that memory-efficient attention's backward has no deterministic
kernel, so a float atomics reorder may leave a last-bit difference: allow 1e-5.
Measured on an H200 (torch 2.11, cu130): 0 for all six resume checks."""

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        DEVICE_TYPE == "cuda" and not torch.cuda.is_available(), reason="needs a CUDA device"
    ),
]

# The CPU tests' fast settings, on the chosen device.
LM_FAST = {**SFT_PRETRAIN_FAST, "device": DEVICE}
PPO_FAST = {**PPO_CPU_FAST, "device": DEVICE}
RLOO_FAST = {**RLOO_CPU_FAST, "device": DEVICE}
DPO_FAST = {**DPO_CPU_FAST, "device": DEVICE}


# --------------------------------------------------------------------------------------
# Helpers


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models: one CPU thread avoids contention (host side on GPU, all of it on CPU)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture()
def deterministic():
    """Deterministic CUDA kernels where torch has them (warns on the ones it lacks)."""
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    yield
    torch.use_deterministic_algorithms(before)


@pytest.fixture(scope="module")
def tok():
    return tiny_char_tokenizer(ALPHABET)


def make_lm(tok, seed: int = 0):
    return tiny_causal_lm(len(tok), hidden_size=32, num_layers=1, num_heads=2, seed=seed)


def assert_on_device(module: torch.nn.Module) -> None:
    devices = {p.device.type for p in module.parameters()} | {
        b.device.type for b in module.buffers()
    }
    assert devices == {DEVICE_TYPE}, devices


def assert_finite(history: list[dict[str, float]], *keys: str) -> None:
    for row in history:
        for key in keys:
            if key in row:
                assert math.isfinite(row[key]), (key, row)


def max_weight_diff(a: torch.nn.Module, b: torch.nn.Module) -> float:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    return max((sa[k].float() - sb[k].float()).abs().max().item() for k in sa)


def assert_resumed(name: str, full: torch.nn.Module, resumed: torch.nn.Module) -> None:
    diff = max_weight_diff(full, resumed)
    print(f"\n[{DEVICE}] {name}: resumed vs uninterrupted max |diff| = {diff:.3g}")
    assert diff <= RESUME_ATOL, f"{name}: resumed run differs by {diff}"


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


@contextlib.contextmanager
def bomb_optimizer_after(steps: int):
    """Raise Interrupt on the optimizer's (steps + 1)-th step: a kill mid-run."""
    calls = {"n": 0}
    original = torch.optim.AdamW.step

    def step(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > steps:
            raise Interrupt
        return original(self, *args, **kwargs)

    torch.optim.AdamW.step = step
    try:
        yield
    finally:
        torch.optim.AdamW.step = original


# --------------------------------------------------------------------------------------
# Pre-training and SFT


def test_device_is_real():
    if DEVICE_TYPE == "cuda":
        name = torch.cuda.get_device_name()
        print(f"\ncuda device: {name}, torch {torch.__version__}, cuda {torch.version.cuda}")
    x = torch.ones(4, device=DEVICE)
    assert x.device.type == DEVICE_TYPE and x.sum().item() == 4


def test_pretrain_lowers_perplexity_on_device(tok):
    texts = ["abcabcabc " * 8, "defdefdef " * 8, "ghghgh " * 10] * 4
    model = make_lm(tok)
    cfg = PretrainConfig(
        total_steps=40, learning_rate=1e-2, block_size=16, eval_fraction=0.1, **LM_FAST
    )
    result = pretrain(cfg, model, tok, texts)
    assert_on_device(model)
    assert_finite(result.history, "loss", "grad_norm", "eval_loss")
    assert result.history[0]["loss"] > 2.0
    assert result.history[-1]["eval_perplexity"] < 3.0


def test_sft_learns_the_response_mapping_on_device(tok):
    examples = [
        {"prompt": p, "response": p[::-1] * 2} for p in ["abc", "bcd", "cde", "def", "efg", "fgh"]
    ]
    model = make_lm(tok)
    result = train_sft(
        SFTConfig(total_steps=40, learning_rate=1e-2, **LM_FAST), model, tok, examples
    )
    assert_on_device(model)
    losses = [h["loss"] for h in result.history]
    assert all(math.isfinite(x) for x in losses)
    assert mean(losses[-5:]) < 0.5 * mean(losses[:5])


def test_pretrain_resume_reproduces_the_uninterrupted_run(tok, tmp_path, deterministic):
    texts = ["abcdefgh " * 20] * 3
    cfg = dict(
        total_steps=6,
        learning_rate=1e-2,
        block_size=16,
        eval_fraction=0.0,
        checkpoint_every=1,
        **LM_FAST,
    )
    full = make_lm(tok)
    pretrain(PretrainConfig(output_dir=str(tmp_path / "a"), **cfg), full, tok, texts)
    with bomb_optimizer_after(3), pytest.raises(Interrupt):
        pretrain(PretrainConfig(output_dir=str(tmp_path / "b"), **cfg), make_lm(tok), tok, texts)
    resumed = make_lm(tok, seed=1)  # a new process: other weights until the checkpoint loads
    result = pretrain(PretrainConfig(output_dir=str(tmp_path / "b"), **cfg), resumed, tok, texts)
    assert result.steps == 6
    assert_on_device(resumed)
    assert_resumed("pretrain", full, resumed)


# --------------------------------------------------------------------------------------
# Classifier and reward models


@pytest.fixture(scope="module")
def trained_classifier(one_thread, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("classifier")
    result = train_classifier(
        small_config(output_dir=str(run_dir), eval_every=16, device=DEVICE),
        SENTIMENT_TRAIN,
        SENTIMENT_EVAL,
        classifier=fresh_model(),
    )
    return result


def test_classifier_fine_tune_and_predict_on_device(trained_classifier, tmp_path):
    result = trained_classifier
    classifier = result.classifier
    assert classifier.device.type == DEVICE_TYPE
    assert_on_device(classifier.model)
    assert result.metrics["steps"] == 64
    assert result.metrics["accuracy"] >= 0.9 and result.metrics["macro_f1"] >= 0.9
    texts = ["the film was brilliant", "the plot was dreadful"]
    assert [p.label for p in classifier.predict(texts)] == ["positive", "negative"]
    logits = classifier.logits(texts)
    assert logits.device.type == DEVICE_TYPE and logits.shape == (2, 2)
    scores = classifier.positive_scores(texts)  # the pointwise reward: CPU tensor [N]
    assert scores.device.type == "cpu" and scores[0] > 0 > scores[1]

    classifier.save(tmp_path / "model")
    loaded = load_classifier(tmp_path / "model", device=DEVICE)
    assert_on_device(loaded.model)
    sample_texts = [r.text for r in SENTIMENT_EVAL[:16]]
    assert torch.allclose(
        loaded.positive_scores(sample_texts), classifier.positive_scores(sample_texts), atol=1e-5
    )


def test_classifier_bf16_autocast_on_device(tmp_path):
    """The engine's dtype option for classifiers: bf16 autocast in training and inference."""
    result = train_classifier(
        small_config(autocast=True, device=DEVICE), SENTIMENT_TRAIN, SENTIMENT_EVAL, fresh_model()
    )
    assert result.metrics["accuracy"] >= 0.9
    result.classifier.save(tmp_path / "bf16")
    loaded = load_classifier(tmp_path / "bf16", device=DEVICE, autocast=True)
    seen: list[torch.dtype] = []
    layer = loaded.model.classifier  # BertForSequenceClassification's output Linear
    handle = layer.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    predictions = loaded.predict(["the film was brilliant", "the plot was dreadful"])
    handle.remove()
    assert seen == [torch.bfloat16]  # the matmul really ran in bf16 on this device
    assert next(loaded.model.parameters()).dtype == torch.float32  # weights stay fp32
    assert [p.label for p in predictions] == ["positive", "negative"]


def test_classifier_resume_reproduces_the_uninterrupted_run(tmp_path, deterministic):
    reference = train_classifier(
        small_config(total_steps=10, epochs=1, device=DEVICE),
        SENTIMENT_TRAIN,
        classifier=fresh_model(),
    ).classifier

    def kill_at_5(step: int, _metrics: dict) -> None:
        if step == 5:
            raise Interrupt

    config = small_config(
        total_steps=10, epochs=1, output_dir=str(tmp_path), checkpoint_every=2, device=DEVICE
    )
    with pytest.raises(Interrupt):
        train_classifier(config, SENTIMENT_TRAIN, classifier=fresh_model(), on_step=kill_at_5)
    resumed = train_classifier(config, SENTIMENT_TRAIN, classifier=fresh_model())
    assert resumed.metrics["steps"] == 10
    assert_on_device(resumed.classifier.model)
    assert_resumed("classifier", reference.model, resumed.classifier.model)


def reward_config(**overrides) -> RewardModelTrainConfig:
    values = dict(
        backbone="tiny",
        learning_rate=3e-3,
        batch_size=16,
        max_length=24,
        epochs=3,
        warmup_ratio=0.1,
        seed=0,
        device=DEVICE,
    )
    values.update(overrides)
    return RewardModelTrainConfig(**values)


def test_pairwise_reward_model_learns_on_device(tmp_path):
    result = train_reward_model(reward_config(), PAIRS_TRAIN, PAIRS_EVAL)
    model = result.classifier
    assert model.num_labels == 1 and model.device.type == DEVICE_TYPE
    assert_on_device(model.model)
    assert result.metrics["pairwise_accuracy"] >= 0.9
    assert result.metrics["mean_reward_chosen"] > result.metrics["mean_reward_rejected"]
    model.save(tmp_path / "rm")
    reloaded = evaluate_reward_model(load_classifier(tmp_path / "rm", device=DEVICE), PAIRS_EVAL)
    assert reloaded["pairwise_accuracy"] == result.metrics["pairwise_accuracy"]


def test_pairwise_reward_model_resume_reproduces_the_uninterrupted_run(tmp_path, deterministic):
    reference = train_reward_model(reward_config(total_steps=6), PAIRS_TRAIN).classifier

    def kill(step, _metrics):
        if step == 4:
            raise Interrupt

    run = reward_config(total_steps=6, output_dir=str(tmp_path), checkpoint_every=3)
    with pytest.raises(Interrupt):
        train_reward_model(run, PAIRS_TRAIN, on_step=kill)
    resumed = train_reward_model(run, PAIRS_TRAIN).classifier
    assert_resumed("reward model", reference.model, resumed.model)


def test_pointwise_reward_model_on_device_drives_rloo(trained_classifier, tok):
    """A classifier on the device as the reward of a policy on the device."""
    classifier = trained_classifier.classifier
    calls: list[int] = []

    def reward(texts: list[str]) -> torch.Tensor:
        calls.append(len(texts))
        return classifier.positive_scores([f"the film was {t}" for t in texts])

    policy = make_lm(tok)
    cfg = RLOOConfig(total_steps=2, learning_rate=3e-3, **RLOO_FAST)
    result = train_rloo(cfg, policy, tok, reward, PROMPTS)
    assert result.steps == 2 and calls == [16, 16]
    assert_on_device(policy)
    assert_finite(result.history, "score", "loss", "kl_per_sequence")


# --------------------------------------------------------------------------------------
# Generation


def test_generation_with_kv_cache_on_device(tok):
    lm = make_lm(tok).to(DEVICE)
    ids = [tok("ab")["input_ids"], tok("abcd")["input_ids"]]
    torch.manual_seed(0)
    rollout = sample(lm, tok, ids, max_new_tokens=6, use_autocast=False)
    for t in (rollout.query, rollout.query_mask, rollout.response, rollout.response_mask):
        assert t.device.type == DEVICE_TYPE
    assert rollout.query[0, 0] == tok.pad_token_id  # left padded
    logp = rollout_logprobs(lm, rollout, use_autocast=False)
    assert logp.device.type == DEVICE_TYPE
    assert (logp <= 0).all() and logp[rollout.response_mask.bool()].lt(0).all()
    kl = kl_from_logprobs(logp, rollout_logprobs(lm, rollout, use_autocast=False))
    assert kl["kl_per_sequence"] == 0.0  # KL(policy || itself): sampling and scoring agree

    # Greedy decoding with the KV cache matches decoding that recomputes every prefix.
    query = rollout.query
    kwargs = dict(
        attention_mask=rollout.query_mask,
        max_new_tokens=12,
        do_sample=False,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
    )
    lm.eval()
    with torch.no_grad():
        cached = lm.generate(input_ids=query, use_cache=True, **kwargs)
        uncached = lm.generate(input_ids=query, use_cache=False, **kwargs)
    assert cached.device.type == DEVICE_TYPE
    assert torch.equal(cached, uncached)


# --------------------------------------------------------------------------------------
# PPO, RLOO, GRPO


def test_ppo_raises_a_toy_reward_on_device(tok):
    model = CausalLMWithValueHead(make_lm(tok))
    result = train_ppo(
        PPOConfig(
            total_steps=20, learning_rate=3e-3, init_kl_coef=0.01, kl_target=None, **PPO_FAST
        ),
        model,
        tok,
        fraction_of_a,
        PROMPTS,
    )
    assert_on_device(model)
    assert_finite(result.history, "score", "kl_per_sequence", "pg_loss", "vf_loss")
    scores = [h["score"] for h in result.history]
    assert mean(scores[-4:]) > mean(scores[:4]) + 0.2
    assert result.history[-1]["kl_per_sequence"] > 0


def test_ppo_minibatches_and_resume_on_device(tok, tmp_path, deterministic):
    """Two PPO epochs over mini-batches, killed after 2 steps and resumed."""
    cfg = dict(
        total_steps=4,
        learning_rate=3e-3,
        checkpoint_every=1,
        ppo_epochs=2,
        **{**PPO_FAST, "mini_batch_size": 8},
    )
    full = CausalLMWithValueHead(make_lm(tok))
    result = train_ppo(
        PPOConfig(output_dir=str(tmp_path / "a"), **cfg), full, tok, fraction_of_a, PROMPTS
    )
    assert_finite(result.history, "pg_loss", "vf_loss", "clipfrac", "approx_kl")
    with pytest.raises(Interrupt):
        train_ppo(
            PPOConfig(output_dir=str(tmp_path / "b"), **cfg),
            CausalLMWithValueHead(make_lm(tok)),
            tok,
            interrupting(fraction_of_a, 2),
            PROMPTS,
        )
    # Same initial weights: the reference model is a copy of the policy as passed in.
    resumed = CausalLMWithValueHead(make_lm(tok))
    result = train_ppo(
        PPOConfig(output_dir=str(tmp_path / "b"), **cfg), resumed, tok, fraction_of_a, PROMPTS
    )
    assert result.steps == 4 and len(result.history) == 4
    assert_on_device(resumed)
    assert_resumed("ppo", full, resumed)
    assert (tmp_path / "b" / "final" / "value_head.safetensors").is_file()


@pytest.mark.parametrize("estimator", ["rloo", "grpo"])
def test_rloo_and_grpo_raise_a_toy_reward_on_device(tok, estimator):
    policy = make_lm(tok)
    cfg = RLOOConfig(
        estimator=estimator,
        total_steps=25,
        learning_rate=3e-3,
        init_kl_coef=0.01,
        kl_target=None,
        **RLOO_FAST,
    )
    result = train_rloo(cfg, policy, tok, fraction_of_a, PROMPTS)
    assert_on_device(policy)
    assert_finite(result.history, "score", "loss", "kl_per_sequence")
    scores = [h["score"] for h in result.history]
    assert mean(scores[-5:]) > mean(scores[:5]) + 0.2


def test_grpo_resume_with_two_epochs_on_device(tok, tmp_path, deterministic):
    cfg = dict(
        estimator="grpo",
        total_steps=4,
        epochs=2,
        mini_batch_size=8,
        learning_rate=3e-3,
        checkpoint_every=1,
        **RLOO_FAST,
    )
    full = make_lm(tok)
    train_rloo(RLOOConfig(output_dir=str(tmp_path / "a"), **cfg), full, tok, fraction_of_a, PROMPTS)
    with pytest.raises(Interrupt):
        train_rloo(
            RLOOConfig(output_dir=str(tmp_path / "b"), **cfg),
            make_lm(tok),
            tok,
            interrupting(fraction_of_a, 3),
            PROMPTS,
        )
    resumed = make_lm(tok)  # the reference is a copy of the policy as passed in
    train_rloo(
        RLOOConfig(output_dir=str(tmp_path / "b"), **cfg), resumed, tok, fraction_of_a, PROMPTS
    )
    assert_resumed("grpo", full, resumed)


# --------------------------------------------------------------------------------------
# DPO


def test_dpo_raises_heldout_pairwise_accuracy_on_device(tok):
    pairs = toy_pairs(96)
    policy = make_lm(tok)
    result = train_dpo(DPOConfig(epochs=2, **DPO_FAST), policy, tok, pairs[:64], pairs[64:])
    assert_on_device(policy)
    assert_finite(result.history, "loss", "reward_margin")
    assert result.eval_before["pairwise_accuracy"] == 0.5  # policy == reference: all ties
    assert result.eval_after["pairwise_accuracy"] >= 0.9
    assert result.eval_after["loss"] < result.eval_before["loss"]


def test_dpo_resume_reproduces_the_uninterrupted_run(tok, tmp_path, deterministic):
    pairs = toy_pairs(32)
    full = make_lm(tok)
    train_dpo(DPOConfig(epochs=1, output_dir=str(tmp_path / "a"), **DPO_FAST), full, tok, pairs)
    cfg = DPOConfig(epochs=1, output_dir=str(tmp_path / "c"), checkpoint_every=2, **DPO_FAST)
    with bomb_optimizer_after(2), pytest.raises(Interrupt):
        train_dpo(cfg, make_lm(tok), tok, pairs)
    resumed = make_lm(tok)
    result = train_dpo(cfg, resumed, tok, pairs)
    assert result.steps == 4
    assert_resumed("dpo", full, resumed)


# --------------------------------------------------------------------------------------
# bf16 policies (the dtype parameter of load_policy / from_pretrained)


@pytest.fixture()
def saved_lm(tok, tmp_path):
    directory = tmp_path / "tiny-lm"
    make_lm(tok).save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory


def test_bf16_policy_trains_with_rloo_and_ppo_on_device(tok, saved_lm):
    policy = load_policy(saved_lm, device=DEVICE, dtype=torch.bfloat16)
    assert_on_device(policy)
    assert {p.dtype for p in policy.parameters()} == {torch.bfloat16}
    before = {k: v.clone() for k, v in policy.state_dict().items()}
    result = train_rloo(
        RLOOConfig(total_steps=3, learning_rate=1e-2, **RLOO_FAST),
        policy,
        tok,
        fraction_of_a,
        PROMPTS,
    )
    assert_finite(result.history, "score", "loss", "kl_per_sequence")
    assert {p.dtype for p in policy.parameters()} == {torch.bfloat16}
    assert any(not torch.equal(before[k], v) for k, v in policy.state_dict().items())

    model = CausalLMWithValueHead.from_pretrained(saved_lm, device=DEVICE, dtype=torch.bfloat16)
    assert_on_device(model)
    result = train_ppo(
        PPOConfig(total_steps=3, learning_rate=1e-2, **PPO_FAST), model, tok, fraction_of_a, PROMPTS
    )
    assert_finite(result.history, "score", "pg_loss", "vf_loss", "kl_per_sequence")
    assert next(model.lm.parameters()).dtype == torch.bfloat16
