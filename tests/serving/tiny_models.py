"""Tiny HF model directories built from a config in seconds (random weights).

A word-level tokenizer over a fixed vocabulary keeps them self-contained: no hub, no
training. Good enough to exercise batching, padding, streaming and version routing.
"""

from __future__ import annotations

from pathlib import Path

WORDS = [
    "the",
    "a",
    "movie",
    "film",
    "was",
    "is",
    "great",
    "good",
    "bad",
    "awful",
    "boring",
    "fun",
    "loved",
    "hated",
    "plot",
    "actors",
    "story",
    "ending",
    "i",
    "you",
    "it",
    "this",
    "that",
    "and",
    "but",
    "not",
    "very",
    "really",
    "so",
    "too",
    "hello",
    "how",
    "are",
    "what",
    "user",
    "assistant",
    "system",
    ":",
    "?",
    "!",
    ".",
    ",",
]


CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} {% endfor %}assistant :"
)


def tiny_tokenizer(model_max_length: int = 128):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[EOS]"]
    vocab = {token: i for i, token in enumerate(specials + WORDS)}
    core = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        eos_token="[EOS]",
        model_max_length=model_max_length,
    )
    # In-vocabulary words only, so the chat layout tokenizes without [UNK].
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_tiny_policy(directory: Path, seed: int = 0, n_positions: int = 64) -> Path:
    """A 2-layer GPT-2 (about 0.1M parameters) with the word-level tokenizer."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    tokenizer = tiny_tokenizer(n_positions)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=n_positions,
        n_embd=32,
        n_layer=2,
        n_head=2,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    GPT2LMHeadModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def build_tiny_classifier(directory: Path, seed: int = 0, labels=("negative", "positive")) -> Path:
    """A 2-layer BERT sequence classifier with the word-level tokenizer."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    tokenizer = tiny_tokenizer()
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
        pad_token_id=tokenizer.pad_token_id,
    )
    BertForSequenceClassification(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
