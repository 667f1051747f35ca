"""`rlhf.serving.backend.sample_tokens`: the one sampler of the static and continuous paths."""

from __future__ import annotations

import torch

from rlhf.serving.backend import Sampling, sample_tokens


def test_greedy_rows_take_the_argmax_and_draw_no_random_number():
    logits = torch.randn(5, 50)
    torch.manual_seed(0)
    expected_next = torch.rand(1)
    torch.manual_seed(0)
    tokens = sample_tokens(logits, [Sampling(4, 0.0)] * 5, [None] * 5)
    assert tokens.tolist() == logits.argmax(-1).tolist()
    assert torch.rand(1).item() == expected_next.item()  # the global stream was not used


def test_a_seeded_row_draws_the_same_token_whatever_else_is_in_the_batch():
    logits = torch.randn(3, 40)
    rows = [Sampling(4, 1.0, seed=7), Sampling(4, 0.0), Sampling(4, 0.8, top_k=5)]
    alone = sample_tokens(logits[:1], rows[:1], [torch.Generator().manual_seed(7)])
    together = sample_tokens(
        logits, rows, [torch.Generator().manual_seed(7), None, torch.Generator().manual_seed(3)]
    )
    assert together[0] == alone[0]
    assert together[1] == logits[1].argmax()


def test_top_k_and_top_p_never_draw_a_filtered_token():
    logits = torch.randn(1, 30)
    top3 = set(logits[0].topk(3).indices.tolist())
    generator = torch.Generator().manual_seed(1)
    for _ in range(200):
        token = sample_tokens(logits, [Sampling(4, 1.0, top_k=3)], [generator])
        assert int(token) in top3
    peaked = torch.full((1, 30), -10.0)
    peaked[0, 4], peaked[0, 9] = 5.0, 4.0  # 0.73 / 0.27 of the mass between them
    for _ in range(200):
        assert int(sample_tokens(peaked, [Sampling(4, 1.0, top_p=0.5)], [generator])) == 4


def test_sampled_frequencies_follow_the_softmax():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    generator = torch.Generator().manual_seed(2)
    draws = torch.stack(
        [sample_tokens(logits, [Sampling(4, 1.0)], [generator]) for _ in range(4000)]
    ).flatten()
    frequencies = torch.bincount(draws, minlength=4).float() / len(draws)
    assert torch.allclose(frequencies, torch.tensor([0.5, 0.3, 0.15, 0.05]), atol=0.03)
    # temperature 0.5 sharpens: p ∝ p0^2 -> 0.68, 0.25, 0.06, 0.01
    sharp = torch.stack(
        [sample_tokens(logits, [Sampling(4, 0.5)], [generator]) for _ in range(4000)]
    ).flatten()
    assert torch.bincount(sharp, minlength=4)[0] / len(sharp) > 0.63
