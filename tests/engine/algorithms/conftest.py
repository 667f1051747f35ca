"""Tiny models and toy rewards shared by the algorithm tests."""

from __future__ import annotations

import pytest
import torch

from rlhf.engine.models import tiny_causal_lm, tiny_char_tokenizer

ALPHABET = "abcdefgh "


@pytest.fixture(scope="session")
def tok():
    return tiny_char_tokenizer(ALPHABET)


@pytest.fixture()
def make_lm(tok):
    def make(seed: int = 0):
        return tiny_causal_lm(len(tok), hidden_size=32, num_layers=1, num_heads=2, seed=seed)

    return make


def fraction_of_a(texts: list[str]) -> torch.Tensor:
    """Toy reward: the share of 'a' characters in the continuation."""
    return torch.tensor([t.count("a") / max(1, len(t)) for t in texts])


PROMPTS = ["ab", "cd", "ef", "gh", "a b", "c d", "bead", "fed"]


def same_weights(a: torch.nn.Module, b: torch.nn.Module, atol: float = 0.0) -> bool:
    """Bit-identical weights, or within ``atol`` when batching may round differently."""
    sa, sb = a.state_dict(), b.state_dict()
    close = (
        (lambda x, y: torch.equal(x, y))
        if atol == 0
        else (lambda x, y: torch.allclose(x, y, rtol=0, atol=atol))
    )
    return sa.keys() == sb.keys() and all(close(sa[k], sb[k]) for k in sa)


class Interrupt(Exception):
    """Raised inside a run to simulate a kill after a given number of steps."""


def interrupting(reward, calls_before_kill: int):
    """Wrap a reward so that its (calls_before_kill + 1)-th call raises Interrupt."""
    count = {"n": 0}

    def wrapped(texts):
        count["n"] += 1
        if count["n"] > calls_before_kill:
            raise Interrupt
        return reward(texts)

    return wrapped
