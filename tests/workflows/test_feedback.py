import threading

from rlhf.pipelines import RetrainTrigger
from rlhf.v1 import events_pb2
from rlhf.workflows.feedback import FeedbackStore, feedback_dataset


def _event(i: int, kind=events_pb2.FEEDBACK_KIND_LABEL, confidence=0.9):
    return events_pb2.FeedbackRecorded(
        feedback_id=f"fb-{i}",
        pipeline="classify",
        model_version="clf-v1",
        kind=kind,
        prompt=f"text {i}",
        response="positive",
        label="negative" if i % 2 else "positive",
        thumbs_up=bool(i % 2),
        confidence=confidence,
    )


def test_duplicates_stored_once_and_exactly_one_request_per_window(state_db):
    store = FeedbackStore(state_db())
    trigger = RetrainTrigger(count=50, window_s=3600)
    fired = []
    for i in range(60):
        store.add(_event(i))
        if i % 3 == 0:
            assert not store.add(_event(i))  # redelivered duplicate
        decision = store.evaluate("classify", trigger, now=1000.0)
        if decision:
            fired.append(decision)
    assert store.count("classify") == 60
    assert len(fired) == 1 and fired[0].reason == "count"
    assert len(fired[0].feedback_ids) == 50
    # Same window: more feedback does not fire again; the next window does.
    for i in range(60, 120):
        store.add(_event(i))
    assert store.evaluate("classify", trigger, now=2000.0) is None
    later = store.evaluate("classify", trigger, now=1000.0 + 3600)
    assert later is not None and later.window_id != fired[0].window_id
    assert store.requests("classify") == [fired[0].window_id, later.window_id]


def test_concurrent_evaluations_fire_once(state_db):
    """Four stores, each its own connection (as four replicas), evaluate at once."""
    stores = [FeedbackStore(state_db()) for _ in range(4)]
    for i in range(50):
        stores[i % 4].add(_event(i))
    trigger = RetrainTrigger(count=50, window_s=60)
    results = []
    barrier = threading.Barrier(8)

    def evaluate(store):
        barrier.wait()
        results.append(store.evaluate("classify", trigger, 5.0))

    threads = [threading.Thread(target=evaluate, args=(stores[i % 4],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 8  # none raised
    assert sum(r is not None for r in results) == 1
    assert stores[1].requests("classify") == ["classify-w0"]
    assert len(stores[2].claimed("classify-w0")) == 50


_REPLICA = """
import json, sys, time
from rlhf.pipelines import RetrainTrigger
from rlhf.v1 import events_pb2
from rlhf.workflows.feedback import FeedbackStore

target, start_at = sys.argv[1], float(sys.argv[2])
store = FeedbackStore(target)
trigger = RetrainTrigger(count=50, window_s=3600)
time.sleep(max(0.0, start_at - time.time()))
added, fired = 0, []
for i in range(80):
    event = events_pb2.FeedbackRecorded(
        feedback_id=f"fb-{i}", pipeline="classify", model_version="clf-v1",
        kind=events_pb2.FEEDBACK_KIND_LABEL, prompt=f"text {i}", label="positive",
    )
    added += store.add(event)
    decision = store.evaluate("classify", trigger, now=1000.0)
    if decision is not None:
        fired.append([decision.window_id, len(decision.feedback_ids)])
print(json.dumps({"added": added, "fired": fired}))
"""


def test_two_processes_record_the_same_events_and_one_window_fires(state_target):
    """Two processes (two replicas of data prep) receive the same 80 feedback events
    (a redelivery after a rebalance) and evaluate the trigger after each: every event is
    stored by exactly one of them, and the window fires once, with 50 records."""
    import json
    import subprocess
    import sys
    import time

    start_at = time.time() + 3.0  # both import and connect first, then race
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _REPLICA, state_target, str(start_at)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        outputs.append(json.loads(out.strip().splitlines()[-1]))
    assert sum(o["added"] for o in outputs) == 80
    fired = [f for o in outputs for f in o["fired"]]
    assert fired == [["classify-w0", 50]]
    store = FeedbackStore(state_target)
    assert store.requests("classify") == ["classify-w0"]
    assert len(store.claimed("classify-w0")) == 50
    assert len(store.pending("classify")) == 30
    store.close()


def test_drift_in_confidence_triggers(state_db):
    store = FeedbackStore(state_db())
    trigger = RetrainTrigger(count=20, window_s=10, drift=0.2)
    for i in range(20):
        store.add(_event(i, confidence=0.95))
    assert store.evaluate("classify", trigger, now=0.0).reason == "count"
    for i in range(20, 30):
        store.add(_event(i, confidence=0.5))
    decision = store.evaluate("classify", trigger, now=15.0)
    assert decision is not None and decision.reason == "drift"


def test_feedback_becomes_versioned_dataset(tmp_path):
    events = [_event(i) for i in range(4)] + [
        _event(10, kind=events_pb2.FEEDBACK_KIND_THUMBS),
        events_pb2.FeedbackRecorded(
            feedback_id="p",
            kind=events_pb2.FEEDBACK_KIND_PREFERENCE,
            prompt="q",
            chosen="good",
            rejected="bad",
        ),
    ]
    summary = feedback_dataset(events, tmp_path, "round-1")
    labels = summary["splits"]["labels"]
    assert labels["splits"]["train"]["count"] == 5
    assert labels["version"].startswith("sha256:")
    assert summary["splits"]["preferences"]["splits"]["train"]["count"] == 1
    assert feedback_dataset([], tmp_path, "empty")["splits"] == {}


def _feedback(i: int, kind, **fields):
    return events_pb2.FeedbackRecorded(
        feedback_id=f"k-{i}", pipeline="chat", model_version="p-v1", kind=kind, **fields
    )


def test_every_kind_of_feedback_becomes_training_data(tmp_path):
    from rlhf.engine.data import LabeledText, PreferencePair
    from rlhf.workflows.feedback import load_window

    K = events_pb2
    events = [
        _feedback(0, K.FEEDBACK_KIND_THUMBS, prompt="The film", response="The film was great",
                  thumbs_up=True),
        _feedback(1, K.FEEDBACK_KIND_RATING, prompt="The plot", response="The plot dragged",
                  rating=1),
        _feedback(2, K.FEEDBACK_KIND_RATING, prompt="The plot", response="The plot was ok",
                  rating=3),  # neutral: no label, but the prompt still counts
        _feedback(3, K.FEEDBACK_KIND_PREFERENCE, prompt="Hi", chosen="Hello!", rejected="go"),
        _feedback(4, K.FEEDBACK_KIND_PREFERENCE, prompt="Hi", chosen="same", rejected="same"),
        _feedback(5, K.FEEDBACK_KIND_LABEL, prompt="a dull movie", label="negative"),
    ]  # fmt: skip
    summary = feedback_dataset(events, tmp_path, "w1")
    assert summary["counts"] == {
        "thumbs": 1, "rating": 1, "preference": 1, "label": 1, "prompt": 3
    }  # fmt: skip
    assert set(summary["splits"]) == {"labels", "preferences", "prompts"}
    data = load_window(tmp_path / "w1")
    assert data.labels == [
        LabeledText("The film was great", "positive"),
        LabeledText("The plot dragged", "negative"),
        LabeledText("a dull movie", "negative"),
    ]
    assert data.preferences == [PreferencePair("Hi", "Hello!", "go")]
    assert data.prompts == ["The film", "The plot", "Hi"]


def test_a_window_with_nothing_usable_says_why(tmp_path):
    events = [
        _feedback(0, events_pb2.FEEDBACK_KIND_RATING, response="meh", rating=3),
        _feedback(1, events_pb2.FEEDBACK_KIND_THUMBS, response="", thumbs_up=True),
    ]
    summary = feedback_dataset(events, tmp_path, "w2")
    assert summary["splits"] == {}
    assert "none of the window's 2 feedback records is usable" in summary["reason"]
    assert "1 thumbs without a response" in summary["reason"]


def test_mix_gives_feedback_its_share():
    from rlhf.workflows.feedback import mix

    base, feedback = list(range(90)), ["f1", "f2"]
    mixed = mix(base, feedback, 0.25)
    assert mixed[:90] == base and len(mixed) == 120  # 30 of 120 = 0.25
    assert sorted(set(mixed[90:])) == ["f1", "f2"]
    assert mix(base, feedback, 0.0) == base
    assert mix([], feedback, 0.5) == feedback
    assert sorted(mix(base, feedback, 0.001)[90:]) == feedback  # every record at least once


def test_a_window_larger_than_sqlites_variable_limit_is_claimed(state_db):
    db = state_db()
    store = FeedbackStore(db)
    rows = [(f"big-{i}", "classify", "clf-v1", 4, "{}", 0.0, float(i)) for i in range(40_000)]
    with db.transaction() as tx:  # one transaction: 40,000 separate commits take minutes
        for start in range(0, len(rows), 400):
            chunk = rows[start : start + 400]
            values = ", ".join(["(?, ?, ?, ?, ?, ?, ?, NULL)"] * len(chunk))
            tx.execute(f"INSERT INTO feedback VALUES {values}", [v for row in chunk for v in row])
    decision = store.evaluate("classify", RetrainTrigger(count=50, window_s=3600), now=10.0)
    assert decision is not None and len(decision.feedback_ids) == 40_000
    assert len(store.claimed(decision.window_id)) == 40_000
    assert store.pending("classify") == []
