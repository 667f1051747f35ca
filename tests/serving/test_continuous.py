"""Continuous batching (`rlhf.serving.continuous`) on a tiny GPT-2, without Triton.

The scheduler is stepped by hand where a test is about who joins or leaves when, so
what is checked is the step log, never timing.
"""

from __future__ import annotations

import pytest

from rlhf.serving.backend import PolicyEngine, Sampling
from rlhf.serving.continuous import GenerationCancelled, GenerationTimeout

PROMPTS = ["hello how are", "the movie was very good and the plot", "i", "what is this"]


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> PolicyEngine:
    from tests.serving.tiny_models import build_tiny_policy

    return PolicyEngine(str(build_tiny_policy(tmp_path_factory.mktemp("policy") / "p", seed=1)))


def solo(engine: PolicyEngine, prompt: str, sampling: Sampling) -> str:
    """Today's static path for one request alone."""
    return engine.generate([prompt], [sampling])[0]


def submit(batcher, engine: PolicyEngine, prompt: str, sampling: Sampling, **kwargs):  # noqa: ANN001, ANN201
    ids, sampling = engine.encode(prompt, sampling)
    return batcher.submit(ids, sampling, **kwargs)


def drain(batcher) -> None:  # noqa: ANN001
    while batcher.step():
        pass


def test_requests_join_the_running_batch_and_match_their_solo_greedy_output(engine):
    greedy = [Sampling(12, 0.0), Sampling(8, 0.0), Sampling(10, 0.0), Sampling(6, 0.0)]
    batcher = engine.batcher(max_batch=8)
    first = submit(batcher, engine, PROMPTS[0], greedy[0])
    batcher.step()
    batcher.step()
    assert batcher.running == 1
    second = submit(batcher, engine, PROMPTS[1], greedy[1])
    batcher.step()
    late = [submit(batcher, engine, p, s) for p, s in zip(PROMPTS[2:], greedy[2:], strict=True)]
    drain(batcher)

    generations = [first, second, *late]
    assert batcher.joined_running == 3  # every later request joined while `first` decoded
    joined_at = {rid: r.index for r in batcher.steps for rid in r.joined}
    assert joined_at == {1: 0, 2: 2, 3: 3, 4: 3}
    step3 = batcher.steps[3]
    assert step3.decoded[:1] == [first.request_id] and set(step3.decoded) >= {3, 4}
    expected = [solo(engine, p, s) for p, s in zip(PROMPTS, greedy, strict=True)]
    assert [engine.decode(g.result()) for g in generations] == expected


def test_finished_rows_leave_at_once(engine):
    batcher = engine.batcher()
    short = submit(batcher, engine, PROMPTS[0], Sampling(2, 0.0))
    long = submit(batcher, engine, PROMPTS[1], Sampling(9, 0.0))
    batcher.step()  # prefill (token 1) + one decode step (token 2): `short` is done
    assert short.done and len(short.result()) <= 2
    assert short.request_id in batcher.steps[0].retired
    assert batcher.running == 1
    batcher.step()
    assert batcher.steps[1].decoded == [long.request_id]
    drain(batcher)
    assert engine.decode(long.result()) == solo(engine, PROMPTS[1], Sampling(9, 0.0))


def test_seeds_give_the_static_paths_text_alone_and_in_a_batch(engine):
    seeded = [
        Sampling(10, 1.0, 0.9, 0, 7),
        Sampling(8, 0.8, 1.0, 5, 3),
        Sampling(9, 1.2, 1, 0, 11),
        Sampling(7, 1.0, 0.95, 20, 5),
    ]
    expected = [solo(engine, p, s) for p, s in zip(PROMPTS, seeded, strict=True)]

    batcher = engine.batcher()
    alone = submit(batcher, engine, PROMPTS[0], seeded[0])
    drain(batcher)
    assert engine.decode(alone.result()) == expected[0]

    together = [submit(batcher, engine, p, s) for p, s in zip(PROMPTS, seeded, strict=True)]
    batcher.step()
    joined = submit(batcher, engine, PROMPTS[0], seeded[0])  # joins mid-run
    drain(batcher)
    assert [engine.decode(g.result()) for g in together] == expected
    assert engine.decode(joined.result()) == expected[0]
    other_seed = Sampling(10, 1.0, 0.9, 0, 8)
    outputs = {solo(engine, PROMPTS[0], other_seed), expected[0]}
    assert len(outputs) == 2, "another seed gives another text (else the test proves nothing)"


def test_streaming_yields_tokens_in_order_on_the_background_thread(engine):
    batcher = engine.batcher().start()
    try:
        seen: list[list[int]] = []
        streamed = submit(
            batcher, engine, PROMPTS[1], Sampling(10, 0.0), on_tokens=lambda t: seen.append(list(t))
        )
        other = submit(batcher, engine, PROMPTS[0], Sampling(12, 0.0))
        tokens = list(streamed.stream(timeout=30))
        assert tokens == streamed.result(timeout=30)
        assert len(seen) >= 2 and all(
            a == b[: len(a)] for a, b in zip(seen, seen[1:], strict=False)
        )
        assert engine.decode(tokens) == solo(engine, PROMPTS[1], Sampling(10, 0.0))
        assert engine.decode(other.result(timeout=30)) == solo(
            engine, PROMPTS[0], Sampling(12, 0.0)
        )
    finally:
        batcher.stop()


def test_cancelling_or_timing_out_one_request_leaves_the_others_alone(engine):
    greedy = Sampling(12, 0.0)
    batcher = engine.batcher()
    keep = [submit(batcher, engine, p, greedy) for p in PROMPTS[:2]]
    doomed = submit(batcher, engine, PROMPTS[2], greedy)
    late = submit(batcher, engine, PROMPTS[3], greedy, timeout_s=0.0)  # deadline already past
    batcher.step()
    doomed.cancel()
    batcher.step()
    assert doomed.done and late.done
    with pytest.raises(GenerationCancelled):
        doomed.result()
    with pytest.raises(GenerationTimeout):
        late.result()
    assert doomed.request_id not in batcher.steps[1].decoded
    drain(batcher)
    assert [engine.decode(g.result()) for g in keep] == [
        solo(engine, p, greedy) for p in PROMPTS[:2]
    ]

    failing = submit(batcher, engine, PROMPTS[0], greedy, on_tokens=lambda t: 1 / 0)
    unanswerable = submit(batcher, engine, PROMPTS[2], greedy, on_done=lambda g: 1 / 0)
    fine = submit(batcher, engine, PROMPTS[1], greedy)
    drain(batcher)
    with pytest.raises(ZeroDivisionError):
        failing.result()  # a callback that raises (a client gone) ends its own row only
    assert unanswerable.done  # a final reply that fails is logged; the loop goes on
    assert engine.decode(fine.result()) == solo(engine, PROMPTS[1], greedy)


def test_bad_input_is_refused_with_a_clear_error(engine):
    batcher = engine.batcher()
    with pytest.raises(ValueError, match="prompt_ids is empty"):
        batcher.submit([], Sampling(4, 0.0))
    with pytest.raises(ValueError, match=r"max_new_tokens must be in 0\.\.1024 \(got 5000\)"):
        batcher.submit([5, 6], Sampling(5000, 0.0))
    assert batcher.waiting == 0 and not batcher.step()
